"""`faceptor-edge export`: a trained student → one artifact, checked in its runtime right away."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faceptor_edge.data import CALIBRATION_SEED, VALIDATION_SEED
from faceptor_edge.errors import UserError
from faceptor_edge.files import atomic_write_json
from faceptor_edge.recipe import InputRecipe
from faceptor_edge.student.inputs import normalise, student_crops
from faceptor_edge.student.io import card_recipe, load_student
from faceptor_edge.student.model import FaceptorStudent
from faceptor_edge.targets import get_target
from faceptor_edge.targets.base import ExportWrapper, Precision
from faceptor_edge.targets.verify import ParityInputs, check_faces, face_crops, run_parity, teacher_raw, verdict


class ExportError(UserError):
    """The model cannot be exported to a target (an op it lacks, an uncapturable graph)."""


VALIDATION_COUNT = 32


def artifact_card(student: FaceptorStudent, card: dict[str, Any]) -> dict[str, Any]:
    """What an artifact must say about itself: heads, preprocessing (the student's input
    recipe, which `backends` reads back), provenance."""
    recipe = card_recipe(card, card["size"])
    return {
        "heads": [
            {
                "name": t.name,
                "type": t.task_type,
                "kind": t.kind,
                "labels": list(t.labels),
                "output_layout": t.head.layout(student.config.map_size),
            }
            for t in student.config.tasks
        ],
        "preprocessing": {
            "recipe": recipe.to_json(),
            "size": recipe.size,
            "color_order": "RGB",
            "layout": "NCHW float32",
            "scale": "1/255",
            "mean": list(recipe.mean),
            "std": list(recipe.std),
            "crop": _crop_text(recipe),
        },
        "student_identity": {"size": card["size"], "weights_sha256": card["weights_sha256"]},
        "teacher": card.get("teacher", {}),
        "teacher_notice": card.get("teacher_notice", ""),
    }


def _crop_text(recipe: InputRecipe) -> str:
    framing = "RetinaFace's 5 points" if recipe.framing == "detected" else "each face's given box or 5 points"
    return (
        f"dense face crop: the square face box (x1, y1, x2, y2; from {framing}, on a photo the box fitted to the "
        f"5 points) scaled by {recipe.crop_scale:g} about its centre and warped bilinearly to "
        f"{recipe.size}x{recipe.size} with a black border (Faceptor align_test_transform); a pre-cropped face "
        "image is resized whole"
    )


def export_student(
    student_dir: str | Path,
    target_name: str,
    precision: Precision,
    out: str | Path,
    *,
    calibration_images: str = "synthetic",
    calibration_count: int = 64,
    max_drop: float | None = None,
    teacher: str = "student",
    log=print,
) -> Path:
    """Export a trained student; int8 calibrates on face crops from `calibration_images`.

    With `max_drop` (OpenVINO int8 only), NNCF's accuracy control keeps the drop of the
    fidelity score (`metrics.fidelity_score`) on held-out faces within it, fidelity to `teacher`:
    "student" (the float student itself), a Faceptor checkpoint or "demo".
    """
    student, card = load_student(student_dir)
    wrapper = ExportWrapper(student)
    calibration = None
    if precision == "int8":
        recipe = card_recipe(card, student_dir)
        log(f"calibration: {calibration_count} face crops from {calibration_images} ({recipe.framing} framing)")
        calibration = normalise(face_crops(calibration_images, calibration_count, CALIBRATION_SEED, recipe), recipe)
    log(f"exporting {card['size']} student ({len(student.task_names)} heads) to {target_name} {precision} …")
    options = _int8_options(target_name, student) if precision == "int8" else {}
    if max_drop is not None:
        if (target_name, precision) != ("openvino", "int8"):
            raise UserError(
                "--max-drop (accuracy-controlled quantization) applies to --target openvino --precision int8"
            )
        reference = str(student_dir) if teacher == "student" else teacher
        options["accuracy_control"] = _accuracy_control(student, card, reference, max_drop, log)
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

    log(f"accuracy control: reference outputs ({teacher}) on {VALIDATION_COUNT} held-out faces …")
    recipe = card_recipe(card, card["size"])
    faces = check_faces("synthetic", VALIDATION_COUNT, VALIDATION_SEED, recipe)
    reference = teacher_raw(teacher, card, faces, parsing_size=student.config.map_size)
    tasks = tuple(task for task in student.config.tasks if task.name in reference)
    return AccuracyControl(normalise(student_crops(faces, recipe), recipe), reference, tasks, max_drop)


# Measured on the lite0 student (demo teacher, ExecuTorch int8, embedding cosine to the float
# student over 24 faces; threshold 0.98): all int8 0.943; stage 3 float 0.942; stem float
# 0.949; stage 0 float 0.974; stem and stage 0 float 0.9996 (about 3.5 % of the multiply-adds).
# Its full-resolution stem and first depthwise block carry the error; the later stages do not.
INT8_FLOAT_LAYERS = {"efficientnet-lite0": ("student.encoder.stem", "student.encoder.stages.0")}
# Measured on the README main command's student (OpenVINO int8, parity with the float student on
# 112 detected real faces; expression threshold 0.98 of decisive decisions): the query decoder
# int8 0.963, float 0.9815 (+0.33 MB as float16); the value readouts alone float 0.963. The
# embedding head int8 keeps its cosine at 0.9999 there, so it no longer stays float (-0.52 MB).
OPENVINO_FLOAT_LAYERS = ("student.decoder",)
# The same student in ExecuTorch int8 (112 detected real faces): age MAE to the float student
# 1.004 years with the value readouts int8 (threshold 1), 0.43 with them float (+0.09 MB).
EXECUTORCH_FLOAT_LAYERS = ("student.value_heads",)


def _int8_options(target_name: str, student: FaceptorStudent) -> dict[str, Any]:
    """What int8 leaves out of static int8, each measured (`INT8_FLOAT_LAYERS`, `OPENVINO_FLOAT_LAYERS`,
    `EXECUTORCH_FLOAT_LAYERS`): the encoder layers that break the embedding, in both; in ExecuTorch
    the value readouts stay float and the embedding head runs dynamic int8 (int8 weights, inputs
    quantized per call); in OpenVINO the query decoder stays float (stored as float16)."""
    encoder = INT8_FLOAT_LAYERS.get(student.config.encoder, ())
    if target_name == "executorch":
        return {"keep_float": (*encoder, *EXECUTORCH_FLOAT_LAYERS), "dynamic": ("student.embedding_head",)}
    if target_name == "openvino":
        return {"keep_float": (*encoder, *OPENVINO_FLOAT_LAYERS)}
    return {}


def check_export(path: Path, student_dir: str | Path, inputs: ParityInputs, export_seconds: float
                 ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """An exported artifact's parity check against the float student on `inputs`.

    Returns:
        The export table's row (target, precision, path, size, status, reason, load and export
        seconds) and the full `run_parity` report.
    """
    report = run_parity(path, student_dir, inputs=inputs).report
    status, reason = verdict(report)
    row = {"target": report["target"], "precision": report["precision"], "path": str(path),
           "size_bytes": report["size_bytes"], "status": status, "reason": reason,
           "quantization": report["quantization"], "faces": report["faces"], "images": report["images"],
           "load_seconds": report.get("load_seconds"), "export_seconds": export_seconds}  # fmt: skip
    return row, report


def export_table(rows: list[dict[str, Any]]) -> str:
    """The export's status table, one line per artifact (as Ultralytics' export summary)."""
    lines = [f"{'target':11s} {'precision':9s} {'size MB':>8s} {'parity':8s} {'load s':>7s} {'export s':>8s}  path"]
    for row in rows:
        load = "-" if row["load_seconds"] is None else f"{row['load_seconds']:.2f}"
        lines.append(f"{row['target']:11s} {row['precision']:9s} {row['size_bytes'] / 1e6:8.2f} {row['status']:8s} "
                     f"{load:>7s} {row['export_seconds']:8.1f}  {row['path']}")  # fmt: skip
        if row["reason"]:
            lines.append(f"{'':11s} {row['status']}: {row['reason']}")
    return "\n".join(lines)


def write_export_json(path: Path, card: dict[str, Any], student_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write the table as JSON, keeping the rows of other artifacts of the same student already there."""
    kept = []
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous.get("student_sha256") == card["weights_sha256"]:
            done = {(row["target"], row["precision"]) for row in rows}
            kept = [row for row in previous["artifacts"] if (row["target"], row["precision"]) not in done]
    atomic_write_json(path, {"student": str(student_dir), "student_sha256": card["weights_sha256"],
                             "artifacts": kept + rows})  # fmt: skip
