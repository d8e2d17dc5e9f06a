"""OpenVINO target: `openvino.convert_model(ExportedProgram)` → IR `.xml` + `.bin` (run by `backends.openvino`).

The exported program is converted (tracing the `nn.Module` is not used: it fails on
attention graphs), given a static input shape and named inputs/outputs, and saved
uncompressed (fp32 weights). int8 goes through `quantize.openvino.quantize` (NNCF).
Metadata goes into the IR's `rt_info` under `faceptor_edge/metadata`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from faceptor_edge.backends import openvino as runtime
from faceptor_edge.backends.artifact import INPUT_NAME
from faceptor_edge.backends.openvino import METADATA_KEY, InferencePrecision, OpenVINORunner
from faceptor_edge.metrics import fidelity_score
from faceptor_edge.quantize.openvino import (
    float_layers,
    int8_ignored_scope,
    quantize,
    quantize_with_accuracy_control,
    store_float_as_fp16,
)
from faceptor_edge.targets.base import (
    ExportWrapper,
    Precision,
    artifact_metadata,
    check_export_args,
    commit_ir,
    staging_dir,
)
from faceptor_edge.tasks import TaskSpec

INT8_DESCRIPTION = ("int8 weights and activations (NNCF post-training quantization, performance preset); the layers "
                    "kept float are stored as float16 and computed in float32")  # fmt: skip


@dataclass(frozen=True)
class AccuracyControl:
    """int8 with `nncf.quantize_with_accuracy_control`: layers go back to float until the
    fidelity to a reference (`metrics.fidelity_score`: the float student's own outputs or a
    teacher's) drops by at most `max_drop`.

    Attributes:
        validation: M×3×S×S normalised crops.
        reference: The reference's raw outputs on them (shared layout, parsing channels last).
        tasks: The student's heads.
        max_drop: Largest accepted absolute drop of the score from the float model's.
    """

    validation: torch.Tensor
    reference: dict[str, np.ndarray]
    tasks: tuple[TaskSpec, ...]
    max_drop: float

    def metric(self, compiled: Any, items: Iterable[tuple[int, np.ndarray]]) -> float:
        """Fidelity of the rows in `items` ((first row, batch) pairs, possibly a subset)."""
        names = [task.name for task in self.tasks]  # the model's outputs, in export order
        count = len(self.validation)
        rows, parts = [], []
        for start, batch in items:
            keep = min(len(batch), count - start)  # the last batch wraps around to fill up
            result = compiled(batch)
            parts.append({name: result[port][:keep] for name, port in zip(names, compiled.outputs)})
            rows.extend(range(start, start + keep))
        raw = {name: np.concatenate([part[name] for part in parts]) for name in names}
        reference = {name: np.asarray(value)[rows] for name, value in self.reference.items()}
        return fidelity_score(self.tasks, raw, reference)


@dataclass(frozen=True)
class OpenVINOTarget:
    """OpenVINO IR export (`path` is the `.xml`; the `.bin` is written beside it).

    Attributes:
        keep_float: int8 only: wrapper module paths whose Linear layers stay float.
        accuracy_control: int8 only: bound the drop in fidelity to the teacher (NNCF).
        device: OpenVINO device the runner compiles for.
        inference_precision: CPU `INFERENCE_PRECISION_HINT` for running; None keeps the
            plugin default (bf16 on CPUs that have it).
    """

    keep_float: Sequence[str] = ()
    accuracy_control: AccuracyControl | None = None
    device: str = "CPU"
    inference_precision: InferencePrecision | None = "f32"
    name: str = "openvino"
    suffix: str = ".xml"

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
        """Convert, optionally quantize, save to a staging dir, check, then move into place."""
        import openvino as ov

        path = check_export_args(wrapper, example, path, self.suffix, metadata, precision, calibration)
        with torch.no_grad():
            program = torch.export.export(wrapper, (example,))
        model = ov.convert_model(program)
        model.reshape({model.inputs[0]: ov.PartialShape(list(example.shape))})
        extra: dict[str, Any] = {}
        quantization = "none (float32)"
        if precision == "int8":
            scope = int8_ignored_scope(program, model, self.keep_float)
            if self.accuracy_control is None:
                model = quantize(model, calibration, ignored_scope=scope)
                quantization = INT8_DESCRIPTION
            else:
                control = self.accuracy_control
                model = quantize_with_accuracy_control(model, calibration, control.validation, control.metric,
                                                       control.max_drop, ignored_scope=scope)  # fmt: skip
                quantization = f"{INT8_DESCRIPTION}; accuracy control: fidelity drop ≤ {control.max_drop}"
            extra["float_layers"] = float_layers(model, program)
            store_float_as_fp16(model)
            extra["float_decoding"] = "every output's ops after its last layer (the landmark soft-argmax)"
        model.inputs[0].get_tensor().set_names({INPUT_NAME})
        for port, name in zip(model.outputs, wrapper.output_names):
            port.get_tensor().set_names({name})
        record = artifact_metadata(
            wrapper, example, metadata, target=self.name, precision=precision, quantization=quantization, **extra
        )
        model.set_rt_info(json.dumps(record), METADATA_KEY)
        with staging_dir(path) as tmp:
            built = tmp / path.name
            ov.save_model(model, built, compress_to_fp16=False)
            _verify(built)
            commit_ir(built, path)
        return path

    def load(self, path: Path, *, threads: int | None = None) -> OpenVINORunner:
        return runtime.load(path, threads=threads, device=self.device, inference_precision=self.inference_precision)

    def read_metadata(self, path: Path) -> dict[str, Any]:
        return runtime.read_metadata(path)


def _verify(path: Path) -> None:
    """Right after saving: the IR reloads and its outputs match its metadata."""
    runtime.load_checked(path)
