"""faceptor-edge: Faceptor's face-perception heads in one small model for phones and edge devices.

The teacher names below are imported on first use, so `import faceptor_edge` (and with it
`faceptor-edge --version`) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faceptor_edge.teacher import CheckpointError, FaceptorTeacher, build_demo_teacher, load_teacher

__version__ = "0.1.0"

__all__ = ["CheckpointError", "FaceptorTeacher", "__version__", "build_demo_teacher", "load_teacher"]

_TEACHER_NAMES = ("CheckpointError", "FaceptorTeacher", "build_demo_teacher", "load_teacher")


def __getattr__(name: str) -> Any:
    """`faceptor_edge.load_teacher` and the other teacher names, from `faceptor_edge.teacher` (PEP 562)."""
    if name in _TEACHER_NAMES:
        from faceptor_edge import teacher

        return getattr(teacher, name)
    raise AttributeError(f"module 'faceptor_edge' has no attribute {name!r}")
