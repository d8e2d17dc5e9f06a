"""ExecuTorch target: `torch.export` → XNNPACK-lowered `.pte` (run by `backends.executorch`).

The metadata record goes into the `.pte` as a constant method (`METADATA_METHOD`).

The student is exported in its delegable form (`targets.xnnpack_graph.delegable_copy`)
and lowered with ExecuTorch's recommended XNNPACK passes and configs, so that XNNPACK
takes the whole graph; `backends.executorch.delegation_summary` reads back what it took.
int8 programs come from `quantize.executorch.quantize_pt2e` (static per-channel
symmetric int8, XNNPACK quantizer).
"""

from __future__ import annotations

import json
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
from faceptor_edge.targets.xnnpack_graph import delegable_copy

INT8_DESCRIPTION = "int8 weights and activations (torchao PT2E, XNNPACK quantizer, per-channel symmetric weights)"


def fold_constants(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """ExecuTorch's constant propagation over an exported program, quantize/dequantize ops
    excepted: tensors the graph builds from constants alone (the soft-argmax grid, expanded
    query embeddings) become constants XNNPACK takes, while int8 weights stay int8."""
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    quantization = {node.target for node in program.graph.nodes
                    if getattr(node.target, "namespace", None) in ("quantized_decomposed", "torchao")}  # fmt: skip
    return constant_prop_pass(program, custom_skip_targets=quantization)


@dataclass(frozen=True)
class ExecuTorchTarget:
    """`.pte` export for the XNNPACK backend.

    Attributes:
        keep_float: int8 only: module paths of the wrapper to keep float
            (e.g. `"student.embedding_head"`); see `quantize.executorch.quantize_pt2e`.
        keep_float_types: int8 only: module classes to keep float.
        dynamic: int8 only: module paths whose Linear layers get dynamic int8.
    """

    keep_float: Sequence[str] = ()
    keep_float_types: Sequence[type[nn.Module]] = ()
    dynamic: Sequence[str] = ()
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
        from executorch.backends.xnnpack.utils.configs import (
            get_transform_passes,
            get_xnnpack_edge_compile_config,
            get_xnnpack_executorch_backend_config,
        )
        from executorch.exir import to_edge_transform_and_lower

        path = check_export_args(wrapper, example, path, self.suffix, metadata, precision, calibration)
        graph = delegable_copy(wrapper)
        extra: dict[str, Any] = {}
        if precision == "int8":
            quantized = quantize_pt2e(graph, example, calibration, keep_float=self.keep_float,
                                      keep_float_types=self.keep_float_types, dynamic=self.dynamic)  # fmt: skip
            program, quantization = quantized.program, INT8_DESCRIPTION
            extra["float_layers"] = list(quantized.float_layers)
            if quantized.dynamic_layers:
                extra["dynamic_int8_layers"] = list(quantized.dynamic_layers)
        else:
            with torch.no_grad():
                program = torch.export.export(graph, (example,))
            quantization = "none (float32)"
        record = artifact_metadata(
            wrapper, example, metadata, target=self.name, precision=precision, quantization=quantization, **extra
        )
        edge = to_edge_transform_and_lower(
            fold_constants(program), partitioner=[XnnpackPartitioner()], transform_passes=get_transform_passes(),
            compile_config=get_xnnpack_edge_compile_config(), constant_methods={METADATA_METHOD: json.dumps(record)},
        )  # fmt: skip
        buffer = edge.to_executorch(config=get_xnnpack_executorch_backend_config()).buffer
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
