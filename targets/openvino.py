"""OpenVINO target: `openvino.convert_model(ExportedProgram)` → IR `.xml` + `.bin`.

The exported program is converted (tracing the `nn.Module` is not used: it fails on
attention graphs), given a static input shape and named inputs/outputs, and saved
uncompressed (fp32 weights). int8 goes through `quantize.openvino.quantize` (NNCF).
Metadata lives in the IR's `rt_info` under `faceptor_edge/metadata`.

The runner compiles for CPU with `INFERENCE_PRECISION_HINT=f32` by default: on CPUs
with bf16/AMX support OpenVINO otherwise runs float layers in bf16 (errors ~1e-2).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from faceptor_edge.metrics import fidelity_score
from faceptor_edge.quantize.openvino import (
    float_layers,
    ignored_scope_for_modules,
    quantize,
    quantize_with_accuracy_control,
)
from faceptor_edge.targets.base import (
    INPUT_NAME,
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
from faceptor_edge.tasks import TaskSpec

METADATA_KEY = ["faceptor_edge", "metadata"]
INT8_DESCRIPTION = "int8 weights and activations (NNCF post-training quantization, performance preset)"


def _read_model(path: Path) -> Any:
    import openvino as ov

    path = Path(path)
    if not path.is_file() or not path.with_suffix(".bin").is_file():
        raise ArtifactError(f"{path}: OpenVINO IR needs both {path.name} and {path.with_suffix('.bin').name}")
    try:
        return ov.Core().read_model(path)
    except Exception as err:  # OpenVINO raises RuntimeError with its own parser message
        raise ArtifactError(f"{path}: not a readable OpenVINO IR ({str(err).strip().splitlines()[-1]})") from err


def _model_metadata(model: Any, path: Path) -> dict[str, Any]:
    if not model.has_rt_info(METADATA_KEY):
        raise ArtifactError(f"{path}: OpenVINO IR has no faceptor_edge metadata in rt_info")
    return parse_metadata(model.get_rt_info(METADATA_KEY).astype(str), path)


def _model_outputs(model: Any) -> list[tuple[str, tuple[int, ...]]]:
    return [(out.get_any_name(), tuple(int(d) for d in out.get_partial_shape().to_shape())) for out in model.outputs]


def _load_checked(path: Path) -> tuple[Any, dict[str, Any], list[OutputSpec]]:
    model = _read_model(path)
    record = _model_metadata(model, Path(path))
    outputs = output_specs_from_metadata(record, Path(path))
    if any(out.get_partial_shape().is_dynamic for out in model.outputs):
        raise ArtifactError(f"{path}: OpenVINO IR has dynamic output shapes; not a faceptor-edge export")
    check_outputs(_model_outputs(model), outputs, Path(path))
    return model, record, outputs


@dataclass
class OpenVINORunner:
    """A compiled IR: `run` takes N×3×S×S float32 crops, returns raw outputs by name."""

    path: Path
    compiled: Any
    outputs: list[OutputSpec]
    batch_size: int
    input_shape: tuple[int, ...]
    metadata: dict[str, Any] = field(repr=False)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = check_input(x, self.input_shape)
        request = self.compiled.create_infer_request()

        def run_batch(batch: np.ndarray) -> list[np.ndarray]:
            result = request.infer({0: batch})
            return [result[self.compiled.output(spec.name)].copy() for spec in self.outputs]

        return run_in_batches(x, self.batch_size, self.outputs, run_batch)


@dataclass(frozen=True)
class AccuracyControl:
    """int8 with `nncf.quantize_with_accuracy_control`: layers go back to float until the
    fidelity to the teacher (`metrics.fidelity_score`) drops by at most `max_drop`.

    Attributes:
        validation: M×3×S×S normalised crops.
        reference: The teacher's raw outputs on them (shared layout, parsing channels last).
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
    inference_precision: Literal["f32", "bf16", "f16"] | None = "f32"
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
            scope = ignored_scope_for_modules(program, model, self.keep_float) if self.keep_float else None
            if self.accuracy_control is None:
                model = quantize(model, calibration, ignored_scope=scope)
                quantization = INT8_DESCRIPTION
            else:
                control = self.accuracy_control
                model = quantize_with_accuracy_control(model, calibration, control.validation, control.metric,
                                                       control.max_drop, ignored_scope=scope)  # fmt: skip
                quantization = f"{INT8_DESCRIPTION}; accuracy control: teacher-fidelity drop ≤ {control.max_drop}"
            extra["float_layers"] = float_layers(model, program)
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
            commit(built.with_suffix(".bin"), path.with_suffix(".bin"))
            commit(built, path)
        return path

    def load(self, path: Path) -> OpenVINORunner:
        import openvino as ov

        model, record, outputs = _load_checked(Path(path))
        config = {"INFERENCE_PRECISION_HINT": self.inference_precision} if self.inference_precision else {}
        try:
            compiled = ov.Core().compile_model(model, self.device, config)
        except Exception as err:
            raise ArtifactError(f"{path}: OpenVINO cannot compile the model for {self.device} ({err})") from err
        shape = tuple(record["input"]["shape"])
        return OpenVINORunner(Path(path), compiled, outputs, int(record["batch_size"]), shape, record)

    def read_metadata(self, path: Path) -> dict[str, Any]:
        return _model_metadata(_read_model(Path(path)), Path(path))


def _verify(path: Path) -> None:
    """Right after saving: the IR reloads and its outputs match its metadata."""
    _load_checked(path)
