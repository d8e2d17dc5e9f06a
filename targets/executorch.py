"""ExecuTorch target: `torch.export` → XNNPACK-lowered `.pte`, run with `executorch.runtime`.

The metadata record lives inside the `.pte` as a constant method (`METADATA_METHOD`,
returning one JSON string), so the artifact is one self-describing file; any ExecuTorch
runtime reads it with `Module::execute("faceptor_edge_metadata")`.

int8 programs come from `quantize.executorch.quantize_pt2e` (static per-channel
symmetric int8, XNNPACK quantizer). Ops XNNPACK does not take (layer norm, nearest
upsampling, reductions of the soft-argmax, …) stay in the portable CPU kernels; the
counts are logged at INFO level (`non_delegated_ops`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from faceptor_edge.quantize.executorch import quantize_pt2e
from faceptor_edge.targets.base import (
    ArtifactError,
    ExportWrapper,
    OutputSpec,
    Precision,
    artifact_metadata,
    check_export_args,
    check_input,
    check_outputs,
    commit,
    output_specs_from_metadata,
    parse_metadata,
    run_in_batches,
    staging_dir,
)

_log = logging.getLogger(__name__)
METADATA_METHOD = "faceptor_edge_metadata"
INT8_DESCRIPTION = "int8 weights and activations (torchao PT2E, XNNPACK quantizer, per-channel symmetric weights)"


def _load_program(path: Path):
    from executorch.runtime import Runtime

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such ExecuTorch program")
    try:
        program = Runtime.get().load_program(path)
    except Exception as err:  # the runtime raises bare RuntimeError/ValueError for bad bytes
        raise ArtifactError(f"{path}: not a readable ExecuTorch program ({err})") from err
    if "forward" not in program.method_names or METADATA_METHOD not in program.method_names:
        raise ArtifactError(
            f"{path}: ExecuTorch program lacks 'forward' or '{METADATA_METHOD}'; not a faceptor-edge export"
        )
    return program


def _read_metadata(program: Any, path: Path) -> dict[str, Any]:
    try:
        (text,) = program.load_method(METADATA_METHOD).execute([])
    except Exception as err:
        raise ArtifactError(f"{path}: cannot read the metadata method ({err})") from err
    return parse_metadata(str(text), path)


def non_delegated_ops(edge_program: Any) -> dict[str, int]:
    """Operators left outside the XNNPACK delegate (they run on portable CPU kernels).

    Args:
        edge_program: The `EdgeProgramManager` from `to_edge_transform_and_lower`.
    """
    counts: Counter[str] = Counter()
    for node in edge_program.exported_program().graph.nodes:
        name = str(getattr(node.target, "__name__", node.target))
        if node.op == "call_function" and name not in ("getitem", "executorch_call_delegate"):
            counts[name] += 1
    return dict(sorted(counts.items()))


@dataclass
class ExecuTorchRunner:
    """A loaded `.pte`: `run` takes N×3×S×S float32 crops, returns raw outputs by name."""

    path: Path
    program: Any
    outputs: list[OutputSpec]
    batch_size: int
    input_shape: tuple[int, ...]
    metadata: dict[str, Any] = field(repr=False)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = check_input(x, self.input_shape)
        method = self.program.load_method("forward")

        def run_batch(batch: np.ndarray) -> list[np.ndarray]:
            return [out.numpy().copy() for out in method.execute([torch.from_numpy(batch)])]

        return run_in_batches(x, self.batch_size, self.outputs, run_batch)


@dataclass(frozen=True)
class ExecuTorchTarget:
    """`.pte` export for the XNNPACK backend.

    Attributes:
        keep_float: int8 only: module paths of the wrapper to keep float
            (e.g. `"student.embedding_head"`); see `quantize.executorch.quantize_pt2e`.
        keep_float_types: int8 only: module classes to keep float.
    """

    keep_float: Sequence[str] = ()
    keep_float_types: Sequence[type[nn.Module]] = ()
    name: str = "executorch"
    suffix: str = ".pte"

    def export(
        self,
        wrapper: ExportWrapper,
        example: torch.Tensor,
        path: Path,
        metadata: dict[str, Any],
        *,
        precision: Precision = "fp32",
        calibration: torch.Tensor | None = None,
    ) -> Path:
        """Export, lower to XNNPACK, check in the runtime, then move into place."""
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        path = check_export_args(wrapper, example, path, self.suffix, metadata, precision, calibration)
        extra: dict[str, Any] = {}
        if precision == "int8":
            quantized = quantize_pt2e(
                wrapper, example, calibration, keep_float=self.keep_float, keep_float_types=self.keep_float_types
            )
            program, quantization = quantized.program, INT8_DESCRIPTION
            extra["float_layers"] = list(quantized.float_layers)
        else:
            with torch.no_grad():
                program = torch.export.export(wrapper, (example,))
            quantization = "none (float32)"
        record = artifact_metadata(
            wrapper, example, metadata, target=self.name, precision=precision, quantization=quantization, **extra
        )
        edge = to_edge_transform_and_lower(
            program, partitioner=[XnnpackPartitioner()], constant_methods={METADATA_METHOD: json.dumps(record)}
        )
        _log.info("%s: ops outside the XNNPACK delegate: %s", path.name, non_delegated_ops(edge))
        buffer = edge.to_executorch().buffer
        with staging_dir(path) as tmp:
            built = tmp / path.name
            built.write_bytes(buffer)
            _verify(built, record)
            commit(built, path)
        return path

    def load(self, path: Path) -> ExecuTorchRunner:
        program = _load_program(path)
        record = _read_metadata(program, Path(path))
        outputs = output_specs_from_metadata(record, Path(path))
        _check_method(program, outputs, Path(path))
        shape = tuple(record["input"]["shape"])
        return ExecuTorchRunner(Path(path), program, outputs, int(record["batch_size"]), shape, record)

    def read_metadata(self, path: Path) -> dict[str, Any]:
        return _read_metadata(_load_program(path), Path(path))


def _check_method(program: Any, outputs: list[OutputSpec], path: Path) -> None:
    """Load 'forward' (initialising the XNNPACK delegate) and compare its outputs to `outputs`."""
    try:
        meta = program.load_method("forward").metadata
        shapes = [tuple(meta.output_tensor_meta(i).sizes()) for i in range(meta.num_outputs())]
    except Exception as err:
        raise ArtifactError(f"{path}: cannot read the 'forward' signature ({err})") from err
    check_outputs(list(zip([spec.name for spec in outputs], shapes)), outputs, path)


def _verify(path: Path, record: dict[str, Any]) -> None:
    """Right after writing: the runtime loads the program and its outputs match the record."""
    program = _load_program(path)
    _check_method(program, output_specs_from_metadata(record, path), path)
