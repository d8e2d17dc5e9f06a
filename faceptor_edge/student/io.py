"""A trained student on disk: `model.safetensors` + `student.json` (architecture and provenance)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from faceptor_edge import __version__
from faceptor_edge.errors import UserError
from faceptor_edge.files import file_sha256
from faceptor_edge.recipe import Framing, InputRecipe
from faceptor_edge.student.inputs import STUDENT_SCALE, student_recipe
from faceptor_edge.student.model import FaceptorStudent, build_student, student_sizes
from faceptor_edge.tasks import TASKS_BY_NAME

WEIGHTS = "model.safetensors"
CARD = "student.json"


def save_student(
    directory: str | Path,
    student: FaceptorStudent,
    provenance: dict[str, Any],
    *,
    framing: Framing = "given",
    crop_scale: float = STUDENT_SCALE,
) -> Path:
    """Write weights and card into `directory`, atomically (assembled aside, then renamed).

    The card carries the input recipe (`student_recipe(student.config, framing, crop_scale)`):
    `framing` says how the faces it was distilled on were found, `crop_scale` its frame;
    `encoder` names the encoder and how it started (`"init"`: "imagenet" or "random").
    """
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(tmp / WEIGHTS))
    card = {
        "format": "faceptor-edge-student/1",
        "package_version": __version__,
        "size": student.config.size,
        "encoder": {"name": student.config.encoder, "init": student.encoder_init},
        "tasks": list(student.task_names),
        "input": {
            **student_recipe(student.config, framing, crop_scale).to_json(),
            "color": "RGB",
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
        card = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path}: corrupt student card, not UTF-8 JSON ({error})") from error
    if not isinstance(card, dict):
        raise UserError(f"{path}: corrupt student card: a JSON {type(card).__name__}, not an object")
    if card.get("format") != "faceptor-edge-student/1":
        raise UserError(f"{path}: unknown student format {card.get('format')!r}")
    problems = []
    if card.get("size") not in student_sizes:
        problems.append(f"'size' {card.get('size')!r} is not one of {', '.join(student_sizes)}")
    tasks = card.get("tasks")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(name, str) for name in tasks):
        problems.append("'tasks' is not a non-empty list of head names")
    digest = card.get("weights_sha256")
    if not isinstance(digest, str) or len(digest) != 64:
        problems.append("'weights_sha256' is not a sha256 hex digest")
    if not isinstance(card.get("encoder", {}), dict):
        problems.append("'encoder' is not an object")
    if problems:
        raise UserError(f"{path}: corrupt student card: {'; '.join(problems)}")
    return card


def card_recipe(card: dict[str, Any], where: str | Path) -> InputRecipe:
    """The input recipe a student card carries."""
    return InputRecipe.from_json(card.get("input"), f"{where}/{CARD}")


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
    # No ImageNet weights: the saved ones replace them.
    student = build_student(card["size"], tuple(TASKS_BY_NAME[name] for name in card["tasks"]), pretrained=False)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise UserError(f"{weights}: not a readable safetensors file ({error})") from error
    try:
        student.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise UserError(f"{weights}: does not fit a {card['size']} student ({error})") from error
    recipe = card_recipe(card, directory)
    if recipe.size != student.config.input_size:
        raise UserError(f"{directory}/{CARD}: input size {recipe.size} is not the {card['size']} student's "
                        f"{student.config.input_size}")  # fmt: skip
    student.encoder_init = card.get("encoder", {}).get("init", "random")
    return student.eval(), card


def init_from_student(student: FaceptorStudent, directory: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Start `student` from a trained student's weights (`distill/run.py --init`): every tensor
    whose name and shape match is copied; the rest (heads the trained one lacks) keep their
    initialisation, and `encoder_init` becomes the trained one's.

    Returns:
        The trained student's card, and the names of the tensors left as they were.

    Raises:
        UserError: The trained student is of another size.
    """
    trained, card = load_student(directory)
    if card["size"] != student.config.size:
        raise UserError(f"{directory}: a {card['size']} student cannot start a {student.config.size} one "
                        f"(--student {card['size']})")  # fmt: skip
    own = student.state_dict()
    copied = {key: value for key, value in trained.state_dict().items() if key in own and own[key].shape == value.shape}
    student.load_state_dict(copied, strict=False)
    student.encoder_init = trained.encoder_init
    return card, sorted(key for key in own if key not in copied)
