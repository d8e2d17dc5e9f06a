"""Export targets: one module per format behind the `targets.base.Target` interface.

`get_target(name)` builds one by name (importing its toolkit only then);
`target_for_path(path)` picks the target of an existing artifact from its suffix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from faceptor_edge.targets.base import ArtifactError, Target

TARGET_NAMES = ("executorch", "coreml", "openvino")
SUFFIXES = {".pte": "executorch", ".mlpackage": "coreml", ".xml": "openvino"}
TOOLKITS = {"executorch": "executorch", "coreml": "coremltools", "openvino": "openvino"}


def get_target(name: str, **options: Any) -> Target:
    """The export target called `name`, with target-specific options."""
    if name == "executorch":
        from faceptor_edge.targets.executorch import ExecuTorchTarget

        return ExecuTorchTarget(**options)
    if name == "openvino":
        from faceptor_edge.targets.openvino import OpenVINOTarget

        return OpenVINOTarget(**options)
    if name == "coreml":
        from faceptor_edge.targets.coreml import CoreMLTarget

        return CoreMLTarget(**options)
    raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGET_NAMES)}")


def target_for_path(path: str | Path) -> Target:
    """The target that reads an artifact, judged by its suffix (.pte, .mlpackage, .xml)."""
    suffix = Path(path).suffix
    if suffix not in SUFFIXES:
        raise ArtifactError(f"{path}: not an artifact of ours (expected {', '.join(SUFFIXES)})")
    if not Path(path).exists():
        raise ArtifactError(f"{path}: no such artifact")
    return get_target(SUFFIXES[suffix])


def artifact_size(path: str | Path) -> int:
    """Bytes on disk: the file, an OpenVINO .xml with its .bin, or a whole .mlpackage."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    weights = path.with_suffix(".bin") if path.suffix == ".xml" else None
    return path.stat().st_size + (weights.stat().st_size if weights and weights.exists() else 0)
