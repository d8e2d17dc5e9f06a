"""`faceptor-edge export`: a trained student → one artifact, checked in its runtime right away."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from faceptor_edge.backends.formats import FORMATS
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
    if precision not in FORMATS[target_name].precisions:
        raise UserError(f"{target_name} exports {', '.join(FORMATS[target_name].precisions)}, not {precision}")
    student, card = load_student(student_dir)
    wrapper = ExportWrapper(student)
    metadata = artifact_card(student, card)
    calibration = None
    if precision == "int8":
        recipe = card_recipe(card, student_dir)
        log(f"calibration: {calibration_count} face crops from {calibration_images} ({recipe.framing} framing)")
        calibration = normalise(face_crops(calibration_images, calibration_count, CALIBRATION_SEED, recipe), recipe)
        metadata["calibration"] = {"images": calibration_images, "count": calibration_count, "seed": CALIBRATION_SEED}
    log(f"exporting {card['size']} student ({len(student.task_names)} heads) to {target_name} {precision} …")
    options = int8_options(target_name, student.config.encoder) if precision == "int8" else {}
    metadata["export_settings"] = export_settings(target_name, precision, student.config.encoder, calibration_count)
    if max_drop is not None:
        if (target_name, precision) != ("openvino", "int8"):
            raise UserError(
                "--max-drop (accuracy-controlled quantization) applies to --target openvino --precision int8"
            )
        reference = str(student_dir) if teacher == "student" else teacher
        options["accuracy_control"] = _accuracy_control(student, card, reference, max_drop, log)
    target = get_target(target_name, **options)
    return export_wrapper(target, wrapper, Path(out), metadata, precision, calibration)


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


# int8 rule: the layers whose error no later layer can undo stay float, each chosen by measuring
# the artifact's parity with its float student (docs/export.md, "What stays float in int8").
# EfficientNet-Lite0's full-resolution stem and first depthwise block carry most of the error.
INT8_FLOAT_LAYERS = {"efficientnet-lite0": ("student.encoder.stem", "student.encoder.stages.0")}
# OpenVINO: the query decoder, whose attention feeds every classifier head; and, so that the IR
# agrees with its float student on x86 CPUs without VNNI too (whose int8 kernels saturate 16-bit
# sums), the second encoder stage and the small readouts (value heads, token and mask projections).
OPENVINO_FLOAT_LAYERS = ("student.decoder", "student.encoder.stages.1", "student.value_heads", "student.token_proj",
                         "student.mask_embed")  # fmt: skip
# ExecuTorch: the value readouts (34k parameters), which move age by a year in int8.
EXECUTORCH_FLOAT_LAYERS = ("student.value_heads",)
COREML_FLOAT_LAYERS = EXECUTORCH_FLOAT_LAYERS  # the same PT2E program, converted


def int8_options(target_name: str, encoder_name: str) -> dict[str, Any]:
    """What int8 leaves out of static int8 (`INT8_FLOAT_LAYERS` and each target's own): in
    ExecuTorch the embedding head also runs dynamic int8 (int8 weights, inputs quantized per
    call), which Core ML has no op for."""
    encoder = INT8_FLOAT_LAYERS.get(encoder_name, ())
    if target_name == "executorch":
        return {"keep_float": (*encoder, *EXECUTORCH_FLOAT_LAYERS), "dynamic": ("student.embedding_head",)}
    if target_name == "openvino":
        return {"keep_float": (*encoder, *OPENVINO_FLOAT_LAYERS)}
    return {"keep_float": (*encoder, *COREML_FLOAT_LAYERS)}


def export_settings(target_name: str, precision: Precision, encoder_name: str, calibration_count: int
                    ) -> dict[str, Any]:  # fmt: skip
    """The export choices an artifact records (`export_settings` in its metadata) beside the
    student's weights: an artifact made under other choices (another float-layer policy, another
    calibration count) is stale even when the weights are the same (`artifacts.stale_reason`)."""
    if precision != "int8":
        return {"precision": precision}
    options = int8_options(target_name, encoder_name)
    settings = {"precision": precision, "calibration_count": calibration_count,
                **{key: list(value) for key, value in options.items()}}  # fmt: skip
    if target_name == "openvino":  # IRs from before the attention products stayed float are stale
        settings["float_ops"] = "layers and attention products"
    return settings


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
           "load_seconds": report.get("load_seconds"), "export_seconds": export_seconds,
           "ms_per_face": report.get("ms_per_face"), "cpu": report.get("cpu"),
           "note": _fallback_note(report)}  # fmt: skip
    return row, report


def _fallback_note(report: dict[str, Any]) -> str:
    """What an int8 export did instead of weights and activations (Core ML's weights-only fallback)."""
    return f"not W8A8: {report['quantization']}" if "weights only" in (report["quantization"] or "") else ""


def export_table(rows: list[dict[str, Any]]) -> str:
    """The export's status table, one line per artifact (as Ultralytics' export summary), with
    each artifact's parity reason and notes (`verify.int8_notes`) under it."""
    header = f"{'target':11s} {'precision':9s} {'size MB':>8s} {'parity':8s} {'load s':>7s} {'ms/face':>7s} "
    lines = [header + f"{'export s':>8s}  path"]
    for row in rows:
        load = "-" if row["load_seconds"] is None else f"{row['load_seconds']:.2f}"
        speed = "-" if row.get("ms_per_face") is None else f"{row['ms_per_face']:.1f}"
        lines.append(f"{row['target']:11s} {row['precision']:9s} {row['size_bytes'] / 1e6:8.2f} {row['status']:8s} "
                     f"{load:>7s} {speed:>7s} {row['export_seconds']:8.1f}  {row['path']}")  # fmt: skip
        lines += [f"{'':11s} {label}: {row[key]}" for key, label in (("reason", row["status"]), ("note", "note"))
                  if row.get(key)]  # fmt: skip
    cpus = sorted({row["cpu"] for row in rows if row.get("cpu")})
    if cpus:
        lines.append(f"ms/face: median of 5 runs of 8 faces here ({'; '.join(cpus)}), not a benchmark")
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
