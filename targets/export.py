"""`faceptor-edge export`: a trained student → one artifact, checked in its runtime right away."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faceptor_edge.errors import UserError
from faceptor_edge.preprocess import CLIP_MEAN, CLIP_STD
from faceptor_edge.student.inputs import normalise
from faceptor_edge.student.io import load_student
from faceptor_edge.student.model import FaceptorStudent
from faceptor_edge.targets import get_target
from faceptor_edge.targets.base import ExportWrapper, Precision
from faceptor_edge.targets.verify import CALIBRATION_SEED, detected_framing, face_crops, teacher_raw

VALIDATION_SEED = 30_000


class ExportError(UserError):
    """The model cannot be exported to a target (an op it lacks, an uncapturable graph)."""


VALIDATION_COUNT = 32

CROP_RECIPE = (
    "dense face crop: the square face box (x1, y1, x2, y2) scaled by 0.8 about its centre and warped "
    "bilinearly to 256x256 with a black border (Faceptor align_test_transform); a pre-cropped face "
    "image is resized whole"
)


def artifact_card(student: FaceptorStudent, card: dict[str, Any]) -> dict[str, Any]:
    """What an artifact must say about itself: heads, preprocessing, provenance."""
    size = student.config.input_size
    return {
        "heads": [
            {
                "name": t.name,
                "type": t.task_type,
                "kind": t.kind,
                "labels": list(t.labels),
                "output_layout": _layout(t.task_type),
            }
            for t in student.config.tasks
        ],
        "preprocessing": {
            "size": size,
            "color_order": "RGB",
            "layout": "NCHW float32",
            "scale": "1/255",
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
            "crop": CROP_RECIPE,
        },
        "student_identity": {"size": card["size"], "weights_sha256": card["weights_sha256"]},
        "teacher": card.get("teacher", {}),
        "teacher_notice": card.get("teacher_notice", ""),
    }


def _layout(task_type: str) -> str:
    return {
        "recognition": "B×512 embedding (L2-normalise to compare)",
        "age": "B×101 logits (sigmoid, L1-normalise, expected bin = years)",
        "attributes": "B×40 logits (sigmoid > 0.5)",
        "expression": "B×7 logits, AffectNet order",
        "parsing": "B×64×64×C logits over the crop, channels last",
        "landmarks": "B×N×2 (x, y) normalised to [0, 1] over the crop",
    }[task_type]


def export_student(
    student_dir: str | Path,
    target_name: str,
    precision: Precision,
    out: str | Path,
    *,
    calibration_images: str = "synthetic",
    calibration_count: int = 64,
    max_drop: float | None = None,
    teacher: str = "demo",
    log=print,
) -> Path:
    """Export a trained student; int8 calibrates on face crops from `calibration_images`.

    With `max_drop` (OpenVINO int8 only), NNCF's accuracy control keeps the drop of the
    teacher-fidelity score (`metrics.fidelity_score`) on held-out faces within it.
    """
    student, card = load_student(student_dir)
    wrapper = ExportWrapper(student)
    calibration = None
    if precision == "int8":
        log(f"calibration: {calibration_count} face crops from {calibration_images}")
        crops = face_crops(calibration_images, calibration_count, CALIBRATION_SEED, detected=detected_framing(card))
        calibration = normalise(crops)
    log(f"exporting {card['size']} student ({len(student.task_names)} heads) to {target_name} {precision} …")
    options = _int8_options(target_name) if precision == "int8" else {}
    if max_drop is not None:
        if (target_name, precision) != ("openvino", "int8"):
            raise UserError(
                "--max-drop (accuracy-controlled quantization) applies to --target openvino --precision int8"
            )
        options["accuracy_control"] = _accuracy_control(student, card, teacher, max_drop, log)
    target = get_target(target_name, **options)
    return export_wrapper(target, wrapper, Path(out), artifact_card(student, card), precision, calibration)


def export_wrapper(target, wrapper: ExportWrapper, out: Path, metadata: dict[str, Any], precision: Precision,
                   calibration) -> Path:  # fmt: skip
    """`target.export`, with toolkit failures (an op a backend lacks, a graph torch.export
    cannot capture) turned into one clear error; the atomic writer leaves nothing behind."""
    try:
        return target.export(wrapper, wrapper.example_input(1), out, metadata, precision=precision,
                             calibration=calibration)  # fmt: skip
    except UserError:
        raise
    except Exception as error:
        summary = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise ExportError(
            f"exporting to {target.name} {precision} failed, nothing was written: {type(error).__name__}: {summary}"
        ) from error


def _accuracy_control(student: FaceptorStudent, card: dict[str, Any], teacher: str, max_drop: float, log):
    from faceptor_edge.targets.openvino import AccuracyControl

    log(f"accuracy control: teacher ({teacher}) outputs on {VALIDATION_COUNT} held-out faces …")
    crops = face_crops("synthetic", VALIDATION_COUNT, VALIDATION_SEED)
    reference = teacher_raw(teacher, card, "synthetic", VALIDATION_COUNT, VALIDATION_SEED)
    return AccuracyControl(normalise(crops), reference, student.config.tasks, max_drop)


def _int8_options(target_name: str) -> dict[str, Any]:
    """Layers kept in float for int8: the embedding head, whose 512-d output feeds cosines."""
    if target_name in ("executorch", "openvino"):
        return {"keep_float": ("student.embedding_head",)}
    return {}
