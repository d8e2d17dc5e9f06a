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
from faceptor_edge.backends.bundle import BUNDLE_FORMAT, MANIFEST, SUFFIX, file_records, read_manifest, task_labels
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
    detector_from: Path | None = None,
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
        detector_from: A bundle whose detector (same file name and side) is copied instead
            of exported again, with its parity record.

    Returns:
        The manifest written.
    """
    if out.suffix != SUFFIX:
        raise UserError(f"{out}: a bundle folder must end in {SUFFIX}")
    fmt = format_for_path(artifact)
    detector_file = f"{DETECTOR_NAME}-{detector_precision}{fmt.suffix}"
    with staging_dir(out) as tmp:
        built = tmp / out.name
        built.mkdir()
        reused = _same_detector(detector_from, detector_file, side)
        if reused is not None:  # the very detector another bundle exported and checked
            _copy(_artifact_files(detector_from / detector_file), built)
            parity = reused
        else:
            parity = _export_detector(fmt, detector_precision, built / detector_file, side, log)
        _copy(_artifact_files(artifact), built)
        manifest = _manifest(artifact, fmt.name, precision, detector_file, side, parity, student_check)
        manifest["detector"]["precision"] = detector_precision
        manifest["files"] = file_records(built)
        atomic_write_json(built / MANIFEST, manifest)
        commit(built, out)
    return manifest


def _export_detector(fmt: Any, precision: Precision, path: Path, side: int, log: Callable[[str], None]
                     ) -> dict[str, Any]:  # fmt: skip
    """Export the detector to `path` and compare it with PyTorch on the real photos: the parity record."""
    log(f"exporting the RetinaFace detector to {fmt.name} {precision} ({side}×{side} input) …")
    export_detector(fmt.name, precision, path, side=side)
    if not fmt.runs_on(sys.platform):
        return {"skipped": f"{fmt.name} detectors run only on {', '.join(fmt.platforms)}"}
    photos = detector_photos()
    parity = {**detector_parity(load_detector(path), photos).to_json(), "photos": [photo.name for photo in photos]}
    log(f"detector parity with PyTorch on {len(photos)} real photos: {parity}")
    return parity


def _same_detector(bundle: Path | None, detector_file: str, side: int) -> dict[str, Any] | None:
    """The detector parity record of `bundle` when it holds `detector_file` at `side`, else None."""
    if bundle is None or not (bundle / detector_file).exists():
        return None
    detector = read_manifest(bundle)["detector"]
    return detector["parity"] if (detector["file"], detector["side"]) == (detector_file, side) else None


def _copy(sources: list[Path], folder: Path) -> None:
    """Copy files and package folders (.mlpackage) into `folder`."""
    for source in sources:
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        copy(source, folder / source.name)


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


def bundle_export_row(row: dict[str, Any], *, side: int = DETECTOR_SIDE, log: Callable[[str], None] = print) -> Path:
    """`export --bundle`: bundle the artifact of one export-table row, beside it; the row gains
    `bundle` (its path) and `bundle_detector_parity`.

    Raises:
        UserError: The artifact failed its parity check (a failed artifact is not bundled).
    """
    if row["status"] == "failed":
        raise UserError(f"{row['path']} failed its parity check ({row['reason']}); not bundled")
    artifact = Path(row["path"])
    out = bundle_path(artifact, row["target"], row["precision"])
    check = {key: row.get(key) for key in ("status", "reason", "faces", "images")}
    manifest = write_bundle(artifact, out, precision=row["precision"], student_check=check, side=side, log=log)
    size = sum(record["bytes"] for record in manifest["files"].values())
    log(f"{out}  {size / 1e6:.2f} MB  bundle: detector {manifest['detector']['file']}, student {artifact.name}")
    row["bundle"], row["bundle_detector_parity"] = str(out), manifest["detector"]["parity"]
    return out


def ensure_bundles(artifacts: dict[tuple[str, str], Path | str], log: Callable[[str], None] = print
                   ) -> dict[tuple[str, str], Path | str]:  # fmt: skip
    """Each runnable artifact's current bundle beside it (`bundle_path`), written where missing
    or made from other artifact bytes; (target, precision) -> its path, or why there is none."""
    from faceptor_edge.files import file_sha256, read_json

    bundles: dict[tuple[str, str], Path | str] = {}
    made: dict[str, Path] = {}  # target -> a bundle whose detector the next one copies
    for (target, precision), artifact in artifacts.items():
        if isinstance(artifact, str) or not FORMATS[target].runs_on(sys.platform):
            bundles[target, precision] = artifact if isinstance(artifact, str) else f"{target} does not run here"
            continue
        out = bundle_path(artifact, target, precision)
        try:
            manifest = read_json(out / MANIFEST, "bundle manifest")
            current = manifest["files"][artifact.name]["sha256"] == file_sha256(artifact)  # type: ignore[index]
        except (UserError, KeyError, TypeError):
            current = False
        if not current:
            log(f"bundling {artifact.name} with a {target} detector into {out.name} …")
            write_bundle(artifact, out, precision=precision, detector_from=made.get(target),
                         log=lambda message: log(f"  {message}"))  # fmt: skip
        bundles[target, precision] = made[target] = out
    return bundles
