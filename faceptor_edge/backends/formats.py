"""The one table of artifact formats: what the CLI offers, how an artifact is recognised,
which runtime runs it and which exporter writes it (as Ultralytics' `export_formats()`).

`targets.get_target` builds the exporter of a format, the backend registry runs the
runtime, and `bench` lists and times both from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceptor_edge.backends.artifact import ArtifactError


@dataclass(frozen=True)
class Format:
    """One artifact format.

    Attributes:
        name: The `--target` name.
        suffix: The artifact's file (or package) suffix.
        toolkit: The Python package its export and runtime need (`pip install faceptor-edge[name]`).
        runtime: Module with `load(path, **options) -> Runner` and `read_metadata(path)`.
        exporter: `module:Class` of its `targets.base.Target`.
        platforms: `sys.platform` values its runtime predicts on (empty: any).
        precisions: What it exports: fp32, int8 and (Core ML, for the Neural Engine) fp16.
    """

    name: str
    suffix: str
    toolkit: str
    runtime: str
    exporter: str
    platforms: tuple[str, ...] = ()
    precisions: tuple[str, ...] = ("fp32", "int8")

    def runs_on(self, platform: str) -> bool:
        """Whether artifacts of this format predict on `platform` (a `sys.platform` value)."""
        return not self.platforms or platform in self.platforms

    def load_runtime(self) -> Any:
        """The runtime module (imports the toolkit only now)."""
        return importlib.import_module(self.runtime)


FORMATS: dict[str, Format] = {
    "executorch": Format("executorch", ".pte", "executorch", "faceptor_edge.backends.executorch",
                         "faceptor_edge.targets.executorch:ExecuTorchTarget"),
    "coreml": Format("coreml", ".mlpackage", "coremltools", "faceptor_edge.backends.coreml",
                     "faceptor_edge.targets.coreml:CoreMLTarget", platforms=("darwin",),
                     precisions=("fp32", "fp16", "int8")),
    "openvino": Format("openvino", ".xml", "openvino", "faceptor_edge.backends.openvino",
                       "faceptor_edge.targets.openvino:OpenVINOTarget"),
}  # fmt: skip
FORMAT_NAMES = tuple(FORMATS)
SUFFIXES = {fmt.suffix: fmt for fmt in FORMATS.values()}


def is_artifact_path(path: str | Path) -> bool:
    """Whether `path` names an artifact by its suffix (it need not exist)."""
    return Path(path).suffix in SUFFIXES


def format_for_path(path: str | Path) -> Format:
    """The format of an existing artifact, judged by its suffix (.pte, .mlpackage, .xml)."""
    suffix = Path(path).suffix
    if suffix not in SUFFIXES:
        raise ArtifactError(f"{path}: not an artifact of ours (expected {', '.join(SUFFIXES)})")
    if not Path(path).exists():
        raise ArtifactError(f"{path}: no such artifact")
    return SUFFIXES[suffix]


def artifact_path(directory: str | Path, target: str, precision: str) -> Path:
    """Where an artifact of a student goes in its artifact folder: `<directory>/student-<precision><suffix>`."""
    return Path(directory) / f"student-{precision}{FORMATS[target].suffix}"


def artifact_size(path: str | Path) -> int:
    """Bytes on disk: the file, an OpenVINO .xml with its .bin, or a whole .mlpackage."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    weights = path.with_suffix(".bin") if path.suffix == FORMATS["openvino"].suffix else None
    return path.stat().st_size + (weights.stat().st_size if weights and weights.exists() else 0)
