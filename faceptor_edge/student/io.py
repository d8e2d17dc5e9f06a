"""A trained student on disk: `model.safetensors` + `student.json` (architecture and provenance)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from faceptor_edge import __version__
from faceptor_edge.errors import UserError
from faceptor_edge.files import file_sha256
from faceptor_edge.preprocess import CLIP_MEAN, CLIP_STD
from faceptor_edge.student.model import FaceptorStudent, build_student
from faceptor_edge.tasks import TASKS_BY_NAME

WEIGHTS = "model.safetensors"
CARD = "student.json"


def save_student(directory: str | Path, student: FaceptorStudent, provenance: dict[str, Any]) -> Path:
    """Write weights and card into `directory`, atomically (assembled aside, then renamed)."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(tmp / WEIGHTS))
    card = {
        "format": "faceptor-edge-student/1",
        "package_version": __version__,
        "size": student.config.size,
        "tasks": list(student.task_names),
        "input": {
            "size": student.config.input_size,
            "color": "RGB",
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
            "layout": "NCHW float32",
        },
        "weights_sha256": file_sha256(tmp / WEIGHTS),
        **provenance,
    }
    (tmp / CARD).write_text(json.dumps(card, indent=2))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    return directory


def read_card(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / CARD
    if not path.is_file():
        raise UserError(f"{directory}: not a student directory (no {CARD}); train one with `python distill/run.py`")
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: corrupt student card ({error})") from error
    if card.get("format") != "faceptor-edge-student/1":
        raise UserError(f"{path}: unknown student format {card.get('format')!r}")
    return card


def load_student(directory: str | Path) -> tuple[FaceptorStudent, dict[str, Any]]:
    """Rebuild the student from its card and load its weights strictly, in eval mode."""
    directory = Path(directory)
    card = read_card(directory)
    unknown = [name for name in card["tasks"] if name not in TASKS_BY_NAME]
    if unknown:
        raise UserError(f"{directory}: unknown task heads {unknown}")
    weights = directory / WEIGHTS
    if not weights.is_file() or file_sha256(weights) != card["weights_sha256"]:
        raise UserError(f"{weights}: missing or does not match the card's checksum")
    student = build_student(card["size"], tuple(TASKS_BY_NAME[name] for name in card["tasks"]))
    try:
        student.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as error:
        raise UserError(f"{weights}: does not fit a {card['size']} student ({error})") from error
    return student.eval(), card
