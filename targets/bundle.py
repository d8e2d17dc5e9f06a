"""Write a bundle (`backends.bundle`): one folder per target holding the detector, the student
artifact, the input recipe, the labels and a manifest with hashes.

The student artifact is the one `export` has just written and checked; the detector is
exported next to it (`targets.detector`) and compared with the PyTorch detector on the real
photos available offline. The folder is built aside and moved into place in one step.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faceptor_edge
from faceptor_edge.backends.bundle import BUNDLE_FORMAT, MANIFEST, SUFFIX, file_records, task_labels
from faceptor_edge.backends.formats import FORMATS, format_for_path
from faceptor_edge.detection.artifact import DETECTOR_MODEL, load_detector
from faceptor_edge.detection.decoding import NMS_THRESHOLD, SCORE_THRESHOLD
from faceptor_edge.errors import UserError
from faceptor_edge.files import atomic_write_json
from faceptor_edge.targets.base import Precision, commit, staging_dir
from faceptor_edge.targets.detector import (
    DETECTOR_NAME,
    DETECTOR_SIDE,
    detector_parity,
    detector_photos,
    export_detector,
)


def bundle_path(artifact: Path, target: str, precision: str) -> Path:
    """Where the bundle of an artifact goes: `<target>-<precision>.bundle` beside it."""
    return artifact.parent / f"{target}-{precision}{SUFFIX}"


def write_bundle(
    artifact: Path,
    out: Path,
    *,
    precision: Precision,
    detector_precision: Precision = "fp32",
    student_check: dict[str, Any] | None = None,
    side: int = DETECTOR_SIDE,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Bundle a student artifact with a detector of the same target and precision.

    Args:
        artifact: The student artifact (`.xml` with its `.bin`, `.pte` or `.mlpackage`).
        out: The bundle folder (ends in `.bundle`); replaced if it exists.
        precision: The artifact's precision (names the bundle).
        detector_precision: The detector's. fp32 by default: the int8 detectors move boxes
            and points by several pixels on real photos (docs/export.md), so their crops differ.
        student_check: The artifact's export check (status, faces), recorded in the manifest.
        side: The detector's square input side.

    Returns:
        The manifest written.
    """
    if out.suffix != SUFFIX:
        raise UserError(f"{out}: a bundle folder must end in {SUFFIX}")
    fmt = format_for_path(artifact)
    log(f"exporting the RetinaFace detector to {fmt.name} {detector_precision} ({side}×{side} input) …")
    with staging_dir(out) as tmp:
        built = tmp / out.name
        built.mkdir()
        detector_file = f"{DETECTOR_NAME}-{detector_precision}{fmt.suffix}"
        export_detector(fmt.name, detector_precision, built / detector_file, side=side)
        parity: dict[str, Any] = {"skipped": f"{fmt.name} detectors run only on {', '.join(fmt.platforms)}"}
        if fmt.runs_on(sys.platform):
            photos = detector_photos()
            parity = detector_parity(load_detector(built / detector_file), photos).to_json()
            parity["photos"] = [photo.name for photo in photos]
        log(f"detector parity with PyTorch on real photos: {parity}")
        for source in _artifact_files(artifact):
            copy = shutil.copytree if source.is_dir() else shutil.copy2
            copy(source, built / source.name)
        manifest = _manifest(artifact, fmt.name, precision, detector_file, side, parity, student_check)
        manifest["detector"]["precision"] = detector_precision
        manifest["files"] = file_records(built)
        atomic_write_json(built / MANIFEST, manifest)
        commit(built, out)
    return manifest


def _artifact_files(artifact: Path) -> list[Path]:
    """The artifact's own files: an OpenVINO IR is its `.xml` and `.bin`."""
    return [artifact, artifact.with_suffix(".bin")] if artifact.suffix == FORMATS["openvino"].suffix else [artifact]


def _manifest(artifact: Path, target: str, precision: str, detector_file: str, side: int, parity: dict[str, Any],
              student_check: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    from faceptor_edge.backends.models import artifact_recipe

    metadata = FORMATS[target].load_runtime().read_metadata(artifact)
    tasks = [out["name"] for out in metadata["outputs"]]
    return {
        "format": BUNDLE_FORMAT,
        "faceptor_edge_version": faceptor_edge.__version__,
        "target": target,
        "precision": precision,
        "detector": {"file": detector_file, "model": DETECTOR_MODEL, "side": side,
                     "score_threshold": SCORE_THRESHOLD, "nms_threshold": NMS_THRESHOLD, "parity": parity},
        "student": {"file": artifact.name, "recipe": artifact_recipe(metadata, artifact).to_json(), "tasks": tasks,
                    "identity": metadata.get("student_identity", {}), "teacher": metadata.get("teacher", {}),
                    "check": student_check or {}},
        "labels": task_labels(tasks),
    }  # fmt: skip
