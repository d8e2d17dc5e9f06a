"""A bundle: detector, student, input recipe and labels of one target in one folder, checked at load.

`faceptor-edge export --target T --bundle` writes `<target>-<precision>.bundle/`:

    bundle.json                 the manifest (`MANIFEST`): format, target, precision, each
                                file's bytes and sha256, the detector's input side and
                                thresholds, the student's input recipe, heads and labels,
                                and the parity checks run at export
    detector-<precision>.<ext>  RetinaFace-MobileNet0.25 (`targets.detector`)
    student-<precision>.<ext>   the student artifact (`targets.export`)

`load_bundle` refuses a bundle whose files are missing, changed (size or hash), or whose
recipe, heads, labels or detector side disagree with the manifest or with the artifacts' own
metadata; the student artifact is then checked as any artifact is (`backends.models`). The
`Backend` it returns carries the bundle's detector, so `FacePredictor` and `predict --model
X.bundle` find faces with it. With the OpenVINO runtime nothing on this path imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faceptor_edge.backends.artifact import ArtifactError
from faceptor_edge.backends.base import Backend
from faceptor_edge.backends.formats import FORMATS, artifact_size
from faceptor_edge.backends.models import load_artifact
from faceptor_edge.backends.sources import BUNDLE_MANIFEST as MANIFEST
from faceptor_edge.detection.decoding import NMS_THRESHOLD, SCORE_THRESHOLD
from faceptor_edge.files import file_sha256, read_json
from faceptor_edge.tasks import TASKS_BY_NAME

BUNDLE_FORMAT = "faceptor-edge-bundle/1"
SUFFIX = ".bundle"


def bundle_files(directory: Path) -> list[Path]:
    """Every file under `directory` except the manifest, sorted (an .mlpackage's files too)."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def file_records(directory: Path) -> dict[str, dict[str, Any]]:
    """Relative path -> {"bytes", "sha256"} of `bundle_files(directory)`."""
    return {p.relative_to(directory).as_posix(): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in bundle_files(directory)}  # fmt: skip


def task_labels(names: list[str]) -> dict[str, list[str]]:
    """Head name -> its output labels (class, attribute or expression names; empty for the others)."""
    return {name: list(TASKS_BY_NAME[name].labels) for name in names}


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the bundle at `path`, its files checked against their recorded hashes."""
    manifest = read_json(path / MANIFEST, f"bundle manifest '{path / MANIFEST}'")
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArtifactError(f"{path}: {MANIFEST} is not a {BUNDLE_FORMAT} manifest (format {got!r})")
    try:
        target, files = manifest["target"], manifest["files"]
        detector, student = manifest["detector"], manifest["student"]
        names = [detector["file"], student["file"], detector["side"], student["recipe"], student["tasks"]]
    except (KeyError, TypeError) as error:
        raise ArtifactError(f"{path}: {MANIFEST} lacks {error}") from error
    if target not in FORMATS or not isinstance(files, dict) or not all(isinstance(n, str) for n in names[:2]):
        raise ArtifactError(f"{path}: {MANIFEST} has an unknown target {target!r} or malformed file entries")
    found = file_records(path)
    for name, record in files.items():
        if name not in found:
            raise ArtifactError(f"{path}: {name} is missing from the bundle")
        if found[name] != record:
            raise ArtifactError(f"{path}: {name} differs from the manifest (bytes or sha256): changed or corrupt")
    extra = sorted(set(found) - set(files))
    if extra:
        raise ArtifactError(f"{path}: files not in the manifest: {', '.join(extra)}")
    for name in names[:2]:  # the artifacts loaded are among the files checked (an .mlpackage: its files)
        if not any(listed == name or listed.startswith(f"{name}/") for listed in files):
            raise ArtifactError(f"{path}: {MANIFEST} names {name!r}, which is not among its checked files")
    return manifest


def load_bundle(source: str, *, threads: int | None = None, **_: Any) -> Backend:
    """A bundle's student as a `Backend` whose `detector` is the bundle's detector.

    Raises:
        ArtifactError: A file is missing or changed, or the manifest disagrees with the artifacts.
    """
    from faceptor_edge.detection.artifact import load_detector

    path = Path(source)
    manifest = read_manifest(path)
    student, detector_entry = manifest["student"], manifest["detector"]
    backend = load_artifact(str(path / student["file"]), threads=threads)
    if backend.recipe.to_json() != student["recipe"]:
        raise ArtifactError(f"{path}: the student's input recipe {backend.recipe.to_json()} differs from the "
                            f"manifest's {student['recipe']}")  # fmt: skip
    names = [task.name for task in backend.tasks]
    if names != student["tasks"] or task_labels(names) != manifest.get("labels"):
        raise ArtifactError(f"{path}: the student's heads or labels differ from the manifest's (heads {names})")
    backend.name, backend.kind = f"bundle {path.name}", "bundle"
    backend.facts = {**backend.facts, "size_bytes": sum(r["bytes"] for r in manifest["files"].values()),
                     "detector_size_bytes": artifact_size(path / detector_entry["file"])}  # fmt: skip
    if not backend.runnable:
        return backend
    detector = load_detector(path / detector_entry["file"], threads=threads,
                             score_threshold=detector_entry.get("score_threshold", SCORE_THRESHOLD),
                             nms_threshold=detector_entry.get("nms_threshold", NMS_THRESHOLD))  # fmt: skip
    if detector.side != detector_entry["side"]:
        raise ArtifactError(f"{path}: the detector's input side {detector.side} differs from the manifest's "
                            f"{detector_entry['side']}")  # fmt: skip
    backend.detector = detector
    return backend
