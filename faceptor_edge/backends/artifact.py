"""What every artifact runtime shares: the artifact error, output specs, the metadata
record's parsing, input checks and static-batch running.

A loaded artifact is a runner whose `run` takes N×3×S×S float32 crops and returns the
student's raw-output dictionary (without landmark heatmaps), so one `faceptor_edge.decode`
serves PyTorch and every runtime. An artifact has the static batch size of the example it
was exported with (`metadata["batch_size"]`); `run` takes any N and runs it in chunks of
that size, padding the last chunk.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.errors import UserError

INPUT_NAME = "image"


class ArtifactError(UserError):
    """An exported artifact is missing, truncated, corrupt or not one of ours."""


@dataclass(frozen=True)
class OutputSpec:
    """One exported output: the task name and its full static shape (batch first)."""

    name: str
    shape: tuple[int, ...]


@dataclass(kw_only=True)
class Runner:
    """A loaded artifact, ready to run: what every runtime's runner holds.

    Attributes:
        path: The artifact.
        outputs: Its outputs, in the order the runtime returns them.
        batch_size: Its static batch.
        input_shape: Its static input shape (batch first).
        metadata: The metadata record stored with it.
        threads: The runtime's thread settings, as it reports them.
    """

    path: Path
    outputs: list[OutputSpec]
    batch_size: int
    input_shape: tuple[int, ...]
    metadata: dict[str, Any] = field(repr=False)
    threads: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def fields_from(record: dict[str, Any], path: Path) -> dict[str, Any]:
        """The shared fields of a runner for the artifact at `path` with metadata `record`."""
        return {"path": Path(path), "outputs": output_specs_from_metadata(record, path),
                "batch_size": input_shape_from_metadata(record, path)[0],
                "input_shape": input_shape_from_metadata(record, path), "metadata": record}  # fmt: skip

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs for N×3×S×S float32 crops, keyed by output name."""
        return run_in_batches(check_input(x, self.input_shape), self.batch_size, self.outputs, self.run_batch)

    def run_batch(self, batch: np.ndarray) -> list[np.ndarray]:
        """One batch_size×3×S×S chunk -> arrays in `outputs` order (each runtime's own call)."""
        raise NotImplementedError


def output_specs_from_metadata(record: dict[str, Any], path: Path) -> list[OutputSpec]:
    """`OutputSpec`s from a stored metadata record; ArtifactError if the record lacks them."""
    try:
        return [OutputSpec(str(out["name"]), tuple(int(d) for d in out["shape"])) for out in record["outputs"]]
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path}: metadata has no valid 'outputs' list; not a faceptor-edge artifact") from err


def input_shape_from_metadata(record: dict[str, Any], path: Path) -> tuple[int, ...]:
    """The static N×3×S×S input shape a metadata record gives (and its batch size agrees
    with); ArtifactError if it is missing or malformed."""
    try:
        shape = tuple(int(d) for d in record["input"]["shape"])
        batch = int(record["batch_size"])
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{path}: metadata has no valid 'input' shape and 'batch_size'") from err
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3] or min(shape) < 1 or shape[0] != batch:
        raise ArtifactError(f"{path}: metadata input shape {list(shape)} (batch {batch}) is not N×3×S×S")
    return shape


def check_input_shape(got: tuple[int, ...], record: dict[str, Any], path: Path) -> None:
    """Raise ArtifactError when an artifact's graph input differs from its metadata."""
    want = input_shape_from_metadata(record, path)
    if tuple(got) != want:
        raise ArtifactError(f"{path}: the model's input {list(got)} does not match its metadata {list(want)}")


def parse_metadata(text: str, path: Path) -> dict[str, Any]:
    """Decode a stored metadata JSON string; ArtifactError when it is not a JSON object."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{path}: stored metadata is not valid JSON ({err})") from err
    if not isinstance(record, dict):
        raise ArtifactError(f"{path}: stored metadata is not a JSON object")
    return record


def check_input(x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Validate N×3×S×S crops for `Runner.run`; returns a C-contiguous float32 array."""
    if not isinstance(x, np.ndarray) or x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape[1:]):
        got = getattr(x, "shape", type(x).__name__)
        raise UserError(f"expected an N×{'×'.join(map(str, input_shape[1:]))} float32 array, got {got}")
    if not np.issubdtype(x.dtype, np.floating):
        raise UserError(f"expected float32 crops, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def run_in_batches(
    x: np.ndarray, batch_size: int, outputs: list[OutputSpec], run_batch: Callable[[np.ndarray], list[np.ndarray]]
) -> dict[str, np.ndarray]:
    """Run N crops through a static-batch artifact in chunks, zero-padding the last one.

    Args:
        x: N×3×S×S float32 crops (already checked).
        batch_size: The artifact's static batch size.
        outputs: Output specs, in the order `run_batch` returns them.
        run_batch: Runs one batch_size×3×S×S chunk, returns arrays in `outputs` order.
    """
    parts: list[list[np.ndarray]] = [[] for _ in outputs]
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        real = len(chunk)
        if real < batch_size:
            chunk = np.concatenate([chunk, np.zeros((batch_size - real, *chunk.shape[1:]), np.float32)])
        for i, out in enumerate(run_batch(chunk)):
            parts[i].append(np.asarray(out, dtype=np.float32)[:real])
    return {
        spec.name: np.concatenate(chunks) if chunks else np.zeros((0, *spec.shape[1:]), np.float32)
        for spec, chunks in zip(outputs, parts)
    }


def check_outputs(got: list[tuple[str, tuple[int, ...]]], expected: list[OutputSpec], path: Path) -> None:
    """Raise ArtifactError when an artifact's outputs differ from its metadata."""
    want = [(spec.name, tuple(spec.shape)) for spec in expected]
    if [(name, tuple(shape)) for name, shape in got] != want:
        raise ArtifactError(f"{path}: the model's outputs {got} do not match its metadata {want}")
