"""One loader for every kind of model this package makes or reads (as Ultralytics' `AutoBackend`).

`load_backend(source)` returns a `Backend`: the model's name, heads, input recipe, and a
`run(inputs) -> raw outputs` call in the shared SPEC §4 layout, so `predict`, `compare`,
`evaluate`, `bench`, `parity`, export's checks and `distill/run.py` all run the very same
thing. `SOURCE_KINDS` is the one registry from source kind to loader; `source_kind`
(`backends.sources`) is the one place that reads a source string or suffix to decide what it is,
and `TEACHER_KINDS` the kinds that are teachers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from faceptor_edge.backends.base import Backend
from faceptor_edge.backends.bundle import load_bundle
from faceptor_edge.backends.formats import FORMATS
from faceptor_edge.backends.models import load_artifact, load_student_backend
from faceptor_edge.backends.sources import TEACHER_KINDS, source_kind
from faceptor_edge.backends.teachers import (
    TeacherInfo,
    describe_teacher,
    load_checkpoint,
    load_demo,
    load_specialists,
    resolve_teacher,
)
from faceptor_edge.errors import UserError
from faceptor_edge.release import is_release, resolve_model

__all__ = [
    "SOURCE_KINDS",
    "TEACHER_KINDS",
    "Backend",
    "TeacherInfo",
    "describe_teacher",
    "load_backend",
    "resolve_teacher",
    "source_kind",
]

# Source kind -> loader(source, **options) -> Backend. Options: threads, dense_size, parsing_size.
SOURCE_KINDS: dict[str, Callable[..., Backend]] = {
    "demo": load_demo,
    "specialists": load_specialists,
    "checkpoint": load_checkpoint,
    "student": load_student_backend,
    "bundle": load_bundle,
    **{name: load_artifact for name in FORMATS},
}


def load_backend(
    source: str | Path, *, threads: int | None = None, dense_size: int = 512, parsing_size: int | None = None
) -> Backend:
    """Load any model this package makes or reads.

    Args:
        source: `release` (the student shipped with the package), `specialists` (the real
            offline face models distillation can learn from),
            `demo` (stand-in Faceptor weights), a Faceptor checkpoint, a student folder, an
            artifact (`.pte`, `.xml`, `.mlpackage`) or a bundle (detector and student, `.bundle`).
        threads: CPU threads of artifact runtimes (default: theirs).
        dense_size: The Faceptor teacher's dense-group input side.
        parsing_size: Side of the teacher's parsing logits (default: its input side).
    """
    if threads is not None and threads < 1:
        raise UserError(f"threads must be at least 1, got {threads}")
    path = resolve_model(source)
    backend = SOURCE_KINDS[source_kind(path)](str(path), threads=threads, dense_size=dense_size,
                                              parsing_size=parsing_size)  # fmt: skip
    if is_release(source):
        backend.name = "release (the student shipped with faceptor-edge)"  # not its folder inside site-packages
    return backend
