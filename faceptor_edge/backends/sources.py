"""What a source string names: the one place that reads a name, a folder or a suffix to decide
which loader of `faceptor_edge.backends.SOURCE_KINDS` takes it."""

from __future__ import annotations

from pathlib import Path

from faceptor_edge.backends.formats import FORMATS, format_for_path, is_artifact_path
from faceptor_edge.errors import UserError

NAMED_SOURCES = ("demo", "specialists")  # sources that are names, not paths
CHECKPOINT_SUFFIXES = (".pth", ".pth.tar", ".safetensors")
STUDENT_CARD = "student.json"
BUNDLE_MANIFEST = "bundle.json"  # a bundle folder's manifest (`backends.bundle`)
TEACHER_KINDS = ("demo", "specialists", "checkpoint")  # the source kinds that are teachers


def source_kind(source: str | Path) -> str:
    """What `source` is: `demo`, `specialists`, `checkpoint`, `student`, `bundle`, or an artifact format name."""
    text = str(source)
    if text in NAMED_SOURCES:
        return text
    path = Path(text)
    if (path / STUDENT_CARD).is_file():
        return "student"
    if (path / BUNDLE_MANIFEST).is_file():
        return "bundle"
    if is_artifact_path(path):
        return format_for_path(path).name
    if path.is_file() and path.name.endswith(CHECKPOINT_SUFFIXES):
        return "checkpoint"
    raise UserError(
        f"{source}: not a Faceptor checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}), student folder ({STUDENT_CARD}), "
        f"bundle ({BUNDLE_MANIFEST}), "
        f"artifact ({', '.join(f.suffix for f in FORMATS.values())}), 'release', 'demo' or 'specialists'"
    )
