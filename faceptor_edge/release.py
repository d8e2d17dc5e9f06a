"""The release student: a student distilled here, shipped inside the package as float16 weights.

`release` names it wherever a model is taken: `predict` and `compare` (their default),
`--model release`, `evaluate release`, `export --student release`, `parity --student release`,
and `distill/run.py --init release` (a user's own distillation starts from its weights). It
is an ordinary student folder (`model.safetensors` + `student.json`, `faceptor_edge.student.io`)
in `faceptor_edge/release_student/`; `ship_release` writes it from a run's student, with
every float tensor halved to float16 (loading casts them back to the float32 model). How it
was made and what it scores: docs/model-card.md.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from faceptor_edge.errors import UserError
from faceptor_edge.files import file_sha256, read_json

RELEASE = "release"
RELEASE_DIR = Path(__file__).resolve().parent / "release_student"
RELEASE_ARTIFACTS = Path("runs") / RELEASE / "artifacts"  # `export --student release` writes here, not in the package


def release_missing(where: Path | None = None) -> str:
    """Why the release student cannot be loaded from this install ("" when it can)."""
    where = RELEASE_DIR if where is None else where
    if (where / "student.json").is_file() and (where / "model.safetensors").is_file():
        return ""
    return (f"this install carries no release student (nothing in {where}); distil one with "
            "`python distill/run.py` and pass its student folder instead")  # fmt: skip


def is_release(source: str | os.PathLike[str]) -> bool:
    """Whether `source` names the release student (the name, or its folder)."""
    text = os.fspath(source)
    return text == RELEASE or Path(text).resolve() == RELEASE_DIR


def resolve_model(source: str | os.PathLike[str]) -> str:
    """`source` as a loadable path or name: the release student's folder for `release`.

    Raises:
        UserError: `release` where this install carries no release student.
    """
    if os.fspath(source) != RELEASE:
        return os.fspath(source)
    reason = release_missing()
    if reason:
        raise UserError(f"release: {reason}")  # --model, --student or --init
    return str(RELEASE_DIR)


def release_summary() -> str:
    """One line on the release student for the terminal: what it is and where its card is."""
    card = read_json(RELEASE_DIR / "student.json", f"the release student's card ({RELEASE_DIR / 'student.json'})")
    if not isinstance(card, dict):
        raise UserError(f"{RELEASE_DIR / 'student.json'}: not a student card")
    made = card.get("release", {})
    return (f"the release student shipped with faceptor-edge ({card.get('size', '?')}, teacher "
            f"{card.get('teacher', {}).get('teacher', '?')}; {made.get('summary', 'see docs/model-card.md')})")  # fmt: skip


def ship_release(student_dir: str | Path, summary: str, dest: Path = RELEASE_DIR) -> Path:
    """Write a run's student as the release student: float16 weights, its card with the new
    weights' sha256 and a `release` record (where it came from, `summary`), atomically.

    Args:
        student_dir: A trained student folder (`runs/<run>/student`).
        summary: One line on how it was made, shown when it is used by default.
        dest: Where to write it (default: the package's release folder).
    """
    import torch
    from safetensors.torch import save_file

    from faceptor_edge.student.io import CARD, WEIGHTS, load_student

    student, card = load_student(student_dir)
    state = {key: (value.half() if value.is_floating_point() else value).contiguous()
             for key, value in student.state_dict().items()}  # fmt: skip
    if not all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point()):
        raise UserError(f"{student_dir}: a weight overflows float16")
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / WEIGHTS))
    record: dict[str, Any] = {"from": Path(student_dir).as_posix(), "from_weights_sha256": card["weights_sha256"],
                              "weights": "float16", "summary": summary}  # fmt: skip
    card = {**card, "weights_sha256": file_sha256(tmp / WEIGHTS), "release": record}
    (tmp / CARD).write_text(json.dumps(card, indent=2))
    old = dest.with_name(f".{dest.name}.old")  # the shipped student moves aside: never a missing or mixed folder
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
