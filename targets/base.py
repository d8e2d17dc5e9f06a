"""What every export target shares: the export wrapper, the artifact metadata record,
atomic writes, batched running, and the `Target` / `Runner` protocols.

Every target exports the same `ExportWrapper` (a tuple of raw outputs in task order,
static shapes), writes one artifact atomically, and loads it back into a `Runner` whose
`run` returns the student's raw-output dictionary (without landmark heatmaps), so one
`faceptor_edge.decode` serves PyTorch and every backend.

Batch sizes: an artifact has the static batch size of the example it was exported with
(`metadata["batch_size"]`); `Runner.run` takes any N and runs it in chunks of that size,
padding the last chunk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

import faceptor_edge
from faceptor_edge.backends.artifact import INPUT_NAME, OutputSpec, Runner
from faceptor_edge.errors import UserError
from faceptor_edge.student.model import FaceptorStudent

Precision = Literal["fp32", "fp16", "int8"]
# Keys every target writes; caller metadata may not reuse them.
RESERVED_KEYS = (
    "faceptor_edge_version", "format", "precision", "quantization", "batch_size", "input", "outputs", "student",
)  # fmt: skip


def export_outputs(student: FaceptorStudent) -> list[str]:
    """Exported output names: the student's tasks in config order, landmark points only.

    Landmark heatmaps (`"<task>/heatmap"`) are training targets, not exported.
    """
    return [task.name for task in student.config.tasks]


class ExportWrapper(nn.Module):
    """The student as an export graph: one B×3×S×S image in, a tuple of raw outputs out.

    The tuple follows `output_names` (`export_outputs(student)`); heatmaps are dropped.
    The wrapper exists only for export, so it puts the student in eval mode.
    """

    def __init__(self, student: FaceptorStudent) -> None:
        super().__init__()
        self.student = student
        self.output_names = export_outputs(student)
        self.eval()

    @property
    def input_size(self) -> int:
        return self.student.config.input_size

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """image: B×3×S×S CLIP-normalised crops -> raw outputs in `output_names` order."""
        outputs = self.student(image)
        return tuple(outputs[name] for name in self.output_names)

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        """A random example of the exported input shape (only shapes matter to export)."""
        return torch.randn(batch_size, 3, self.input_size, self.input_size)

    @torch.no_grad()
    def output_specs(self, example: torch.Tensor) -> list[OutputSpec]:
        """Static output shapes for an example batch."""
        self.check_example(example)
        outputs = self(example)
        return [OutputSpec(name, tuple(out.shape)) for name, out in zip(self.output_names, outputs)]

    @torch.no_grad()
    def reference(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        """PyTorch raw outputs keyed like `Runner.run`, for parity checks."""
        outputs = self.student(images)
        return {name: outputs[name].numpy() for name in self.output_names}

    def check_example(self, example: torch.Tensor, what: str = "export example") -> None:
        """Raise UserError unless `example` is a non-empty B×3×S×S float32 tensor."""
        size = self.input_size
        if (
            not isinstance(example, torch.Tensor)
            or example.dtype != torch.float32
            or example.ndim != 4
            or tuple(example.shape[1:]) != (3, size, size)
            or len(example) == 0
        ):
            is_tensor = isinstance(example, torch.Tensor)
            got = f"{tuple(example.shape)} {example.dtype}" if is_tensor else type(example).__name__
            raise UserError(f"{what} must be a B×3×{size}×{size} float32 tensor, got {got}")


class Target(Protocol):
    """One export format (see `targets.executorch`, `targets.openvino`, `targets.coreml`)."""

    name: str
    suffix: str

    def export(
        self,
        wrapper: ExportWrapper,
        example: torch.Tensor,
        path: Path,
        metadata: dict[str, Any],
        *,
        precision: Precision,
        calibration: torch.Tensor | None,
    ) -> Path:
        """Write the artifact for `wrapper` at static shape `example.shape` to `path`, atomically."""
        ...

    def load(self, path: Path) -> Runner:
        """Load an artifact for running; raises ArtifactError if it is unreadable."""
        ...

    def read_metadata(self, path: Path) -> dict[str, Any]:
        """The metadata record stored with an artifact; raises ArtifactError if unreadable."""
        ...


def check_export_args(
    wrapper: ExportWrapper,
    example: torch.Tensor,
    path: Path,
    suffix: str,
    metadata: dict[str, Any],
    precision: str,
    calibration: torch.Tensor | None,
    *,
    precisions: tuple[str, ...] = ("fp32", "int8"),
) -> Path:
    """Validate the common `Target.export` arguments before any slow work; returns `path` as a Path."""
    path = Path(path)
    _check_caller_metadata(metadata)
    if path.suffix != suffix:
        raise UserError(f"{path}: artifact path must end in {suffix}")
    if precision not in precisions:
        raise UserError(f"precision must be one of {', '.join(precisions)} for {suffix} artifacts, got {precision!r}")
    wrapper.check_example(example)
    if precision == "int8":
        if calibration is None:
            raise UserError("int8 export needs calibration crops (an N×3×S×S tensor)")
        wrapper.check_example(calibration, "calibration")
    return path


def artifact_metadata(
    wrapper: ExportWrapper,
    example: torch.Tensor,
    metadata: dict[str, Any],
    *,
    target: str,
    precision: Precision,
    quantization: str,
    **extra: Any,
) -> dict[str, Any]:
    """The record stored with every artifact: caller metadata plus what the runtime needs."""
    _check_caller_metadata(metadata)
    return {
        **metadata,
        "faceptor_edge_version": faceptor_edge.__version__,
        "format": target,
        "precision": precision,
        "quantization": quantization,
        "batch_size": int(example.shape[0]),
        "student": wrapper.student.config.size,
        "input": {"name": INPUT_NAME, "shape": list(example.shape), "dtype": "float32"},
        "outputs": [{"name": spec.name, "shape": list(spec.shape)} for spec in wrapper.output_specs(example)],
        **extra,
    }


def _check_caller_metadata(metadata: dict[str, Any]) -> None:
    """Raise UserError when caller metadata uses a reserved key or is not JSON-serialisable."""
    if not isinstance(metadata, dict):
        raise UserError(f"metadata must be a dict, got {type(metadata).__name__}")
    clash = sorted(set(metadata) & set(RESERVED_KEYS))
    if clash:
        raise UserError(f"metadata keys {clash} are reserved; they are written by the exporter")
    try:
        json.dumps(metadata)
    except (TypeError, ValueError) as err:
        raise UserError(f"metadata must be JSON-serialisable: {err}") from err


@contextmanager
def staging_dir(path: Path) -> Iterator[Path]:
    """A fresh hidden directory next to `path` for building an artifact; always removed.

    Building next to the destination keeps the final rename on one filesystem (atomic).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def commit(built: Path, path: Path) -> None:
    """Move a finished file or directory onto `path`, replacing any previous artifact.

    Files are replaced atomically (`os.replace`); a directory (.mlpackage) replaces the
    old one through a rename aside, so `path` is never a half-written artifact.
    """
    if built.is_dir() and path.is_dir():
        old = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.old")
        path.rename(old)
        built.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(built, path)


def commit_ir(built: Path, path: Path) -> None:
    """Move a finished OpenVINO IR (`built`, an .xml beside its .bin) onto `path`. The old
    .xml goes first: an interruption leaves no artifact rather than an old .xml over a new .bin."""
    path.unlink(missing_ok=True)
    commit(built.with_suffix(".bin"), path.with_suffix(".bin"))
    commit(built, path)
