"""ExecuTorch target: `torch.export` → XNNPACK-lowered `.pte` (run by `backends.executorch`).

The metadata record goes into the `.pte` as a constant method (`METADATA_METHOD`).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from faceptor_edge.backends import executorch as runtime
from faceptor_edge.backends.executorch import METADATA_METHOD, ExecuTorchRunner
from faceptor_edge.quantize.executorch import quantize_pt2e
from faceptor_edge.targets.base import (
    ExportWrapper,
    Precision,
    artifact_metadata,
    check_export_args,
    commit,
    staging_dir,
)

_log = logging.getLogger(__name__)
INT8_DESCRIPTION = "int8 weights and activations (torchao PT2E, XNNPACK quantizer, per-channel symmetric weights)"


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

    def load(self, path: Path, *, threads: int | None = None) -> ExecuTorchRunner:
        return runtime.load(path, threads=threads)

    def read_metadata(self, path: Path) -> dict[str, Any]:
        return runtime.read_metadata(path)


def _verify(path: Path, record: dict[str, Any]) -> None:
    """Right after writing: the runtime loads the program and its outputs match the record."""
    program = runtime.load_program(path)
    runtime.check_method(program, record, path)
