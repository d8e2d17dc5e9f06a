"""The Faceptor teacher: a faithful re-implementation that loads the official checkpoints."""

from faceptor_edge.teacher.checkpoint import CheckpointError, load_teacher, official_layout
from faceptor_edge.teacher.demo import DEMO_NOTICE, build_demo_teacher
from faceptor_edge.teacher.model import FaceptorTeacher, TeacherConfig, teacher_builders

__all__ = [
    "DEMO_NOTICE",
    "CheckpointError",
    "FaceptorTeacher",
    "TeacherConfig",
    "build_demo_teacher",
    "load_teacher",
    "official_layout",
    "teacher_builders",
]
