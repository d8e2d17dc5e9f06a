"""Run an exported artifact beside the float student (and optionally the teacher) on real
face crops, and collect everything a parity report shows."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.data import open_source
from faceptor_edge.distill.labels import CropRecipe, teacher_outputs
from faceptor_edge.distill.trainer import parsing_channels_last
from faceptor_edge.errors import UserError
from faceptor_edge.student.inputs import normalise, student_crops
from faceptor_edge.student.io import load_student
from faceptor_edge.targets import artifact_size, target_for_path
from faceptor_edge.targets.base import ExportWrapper
from faceptor_edge.targets.parity import against_student, against_teacher
from faceptor_edge.teacher import build_demo_teacher, load_teacher

# Held-out synthetic faces for checks: a seed far from the distillation (0, 1) and calibration seeds.
CHECK_SEED = 20_000
CALIBRATION_SEED = 10_000


def detected_framing(card: dict[str, Any]) -> bool:
    """Whether the student was distilled on RetinaFace-framed crops (the specialists frame
    every face on its detected 5 points); its calibration and checks then use them too."""
    return str(card.get("teacher", {}).get("teacher", "")).startswith("specialists")


def face_crops(images: str, count: int, seed: int, *, detected: bool = False) -> np.ndarray:
    """B×256×256×3 uint8 student crops from a folder or synthetic faces; with `detected`,
    framed on each face's RetinaFace 5 points, as in specialist distillation."""
    source = open_source(images, count=count, seed=seed)
    if detected:
        from faceptor_edge.detection import DetectedSource

        source = DetectedSource(source)
    samples = source.batch(list(range(min(count, len(source)))))
    return student_crops(samples)


def check_student_matches(metadata: dict[str, Any], card: dict[str, Any], path: Path) -> None:
    """Refuse to compare an artifact with a student it was not exported from."""
    exported = metadata.get("student_identity", {}).get("weights_sha256")
    if exported != card["weights_sha256"]:
        raise UserError(
            f"{path} was exported from another student (weights {str(exported)[:12]}…, "
            f"this student {card['weights_sha256'][:12]}…); pass the matching --student"
        )


@dataclass
class ParityRun:
    """Raw outputs of every model on the same crops, and the checks built from them."""

    report: dict[str, Any]
    crops: np.ndarray
    student: dict[str, np.ndarray]
    artifact: dict[str, np.ndarray] | None
    teacher: dict[str, np.ndarray] | None


def run_parity(
    artifact: str | Path, student_dir: str | Path, *, images: str = "synthetic", count: int = 32,
    teacher: str | None = None, seed: int = CHECK_SEED,
) -> ParityRun:  # fmt: skip
    """Compare an artifact with its float student (and the teacher, if given) on `count` faces."""
    path = Path(artifact)
    target = target_for_path(path)
    metadata = target.read_metadata(path)
    student, card = load_student(student_dir)
    check_student_matches(metadata, card, path)
    tasks = student.config.tasks
    crops = face_crops(images, count, seed, detected=detected_framing(card))
    x = normalise(crops)
    student_raw = ExportWrapper(student).reference(x)
    report: dict[str, Any] = {
        "artifact": str(path), "target": target.name, "precision": metadata["precision"],
        "quantization": metadata.get("quantization"), "size_bytes": artifact_size(path),
        "faces": len(crops), "images": images, "student": card["weights_sha256"],
    }  # fmt: skip
    try:
        artifact_raw = target.load(path).run(x.numpy())
    except UserError as error:
        if target.name != "coreml" or sys.platform == "darwin":
            raise
        report.update(heads={}, skipped=f"{error}", passed=None)
        return ParityRun(report, crops, student_raw, None, None)
    checks = against_student(tasks, artifact_raw, student_raw, metadata["precision"])
    report["heads"] = {name: check.to_json() for name, check in checks.items()}
    teacher_out = None
    if teacher is not None:
        teacher_out = teacher_raw(teacher, card, images, count, seed)
        report["teacher"] = against_teacher(tasks, artifact_raw, student_raw, teacher_out)
    report["passed"] = all(c.passed for c in checks.values()) and all(
        row["passed"] for row in report.get("teacher", {}).values()
    )
    return ParityRun(report, crops, student_raw, artifact_raw, teacher_out)


def teacher_raw(spec: str, card: dict[str, Any], images: str, count: int, seed: int) -> dict[str, np.ndarray]:
    """Teacher outputs on the same faces, on the student's grids (parsing channels last)."""
    dense = card.get("teacher", {}).get("dense_size", 512)
    model = build_demo_teacher(dense_size=dense) if spec == "demo" else load_teacher(spec, dense_size=dense)
    recipe = CropRecipe(teacher_dense_size=dense)
    source = open_source(images, count=count, seed=seed)
    outputs = teacher_outputs(model, source.batch(list(range(min(count, len(source))))), recipe)
    return parsing_channels_last(outputs, model.config.tasks)
