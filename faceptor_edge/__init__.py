"""faceptor-edge: Faceptor's face-perception heads in one small model for phones and edge devices."""

from faceptor_edge.teacher import CheckpointError, FaceptorTeacher, build_demo_teacher, load_teacher

__version__ = "0.1.0"

__all__ = ["CheckpointError", "FaceptorTeacher", "__version__", "build_demo_teacher", "load_teacher"]
