"""Core ML runtime: a `.mlpackage` written by `targets.coreml`.

Metadata is a JSON string in `user_defined_metadata["faceptor_edge"]`. `load` and
`inspect_mlpackage` work on Linux (they read and type-check the ML Program without Core
ML itself); prediction needs macOS, so `CoreMLRunner.run` raises
`UnsupportedPlatformError` elsewhere. The runner loads the model once, on first use.
`compute_plan` says which compute unit (Neural Engine, GPU, CPU) Core ML would give
each operation; it needs Core ML itself (macOS 14.4 or later) and raises elsewhere.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.backends.artifact import (
    INPUT_NAME,
    ArtifactError,
    OutputSpec,
    Runner,
    check_input_shape,
    check_outputs,
    output_specs_from_metadata,
    parse_metadata,
)
from faceptor_edge.errors import UserError

METADATA_KEY = "faceptor_edge"
_LAYER_OPS = ("conv", "linear", "conv_transpose")
_WEIGHT_QUANT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")


class UnsupportedPlatformError(UserError):
    """Core ML prediction was asked for off macOS."""


@dataclass(frozen=True)
class MLPackageInfo:
    """What a saved `.mlpackage` holds, read without Core ML itself (works on Linux).

    Attributes:
        inputs, outputs: Names and static shapes from the model description.
        spec_version: Core ML specification version (8 = iOS 17).
        op_counts: MIL operation types and how often they occur in `main`.
        weight_dtypes: Weight dtype of conv/linear layers -> number of layers ("fp32", "int8").
        weights_quantized: Some weights are stored int8 (constexpr dequantize ops).
        activations_quantized: The graph quantizes activations (`quantize` ops).
        metadata: `user_defined_metadata` as stored (string to string).
    """

    inputs: list[OutputSpec]
    outputs: list[OutputSpec]
    spec_version: int
    op_counts: dict[str, int]
    weight_dtypes: dict[str, int]
    weights_quantized: bool
    activations_quantized: bool
    metadata: dict[str, str]


def _open_package(path: Path) -> Any:
    """`MLModel(path, skip_model_load=True)`; ArtifactError when the package is unreadable."""
    import coremltools as ct

    path = Path(path)
    if not (path / "Manifest.json").is_file():
        raise ArtifactError(f"{path}: not an .mlpackage directory (no Manifest.json)")
    try:
        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
    except Exception as err:  # protobuf DecodeError, JSON errors, missing files
        raise ArtifactError(f"{path}: not a readable Core ML package ({err})") from err
    if spec.WhichOneof("Type") != "mlProgram":
        raise ArtifactError(f"{path}: Core ML model is a {spec.WhichOneof('Type')}, not an ML Program")
    return model


def _features(features: Any) -> list[OutputSpec]:
    return [OutputSpec(f.name, tuple(int(d) for d in f.type.multiArrayType.shape)) for f in features]


def _weight_dtype(layer: Any) -> str:
    from coremltools.converters.mil.mil import types

    weight = getattr(layer, "weight", None)
    producer = weight.op if weight is not None else None
    if producer is not None and producer.op_type in _WEIGHT_QUANT_OPS:
        data = getattr(producer, "quantized_data", None) or getattr(producer, "data", None)
        return types.builtin_to_string(data.dtype)
    return types.builtin_to_string(weight.dtype) if weight is not None else "none"


def inspect_mlpackage(path: Path) -> MLPackageInfo:
    """Read and validate a `.mlpackage` without running it (Linux or macOS).

    The spec is parsed and the ML Program is rebuilt from its protobuf and weight file
    (`milproto` loader), which type-checks every op and reads every weight blob.

    Raises:
        ArtifactError: the package is missing, truncated or not an ML Program.
    """
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    model = _open_package(path)
    spec = model.get_spec()
    try:
        program = load_milproto(spec, spec.specificationVersion, model.weights_dir)
    except Exception as err:
        raise ArtifactError(f"{path}: the ML Program or its weights do not load ({err})") from err
    operations = list(program.functions["main"].operations)
    op_counts = Counter(op.op_type for op in operations)
    weight_dtypes = Counter(_weight_dtype(op) for op in operations if op.op_type in _LAYER_OPS)
    return MLPackageInfo(
        inputs=_features(spec.description.input),
        outputs=_features(spec.description.output),
        spec_version=int(spec.specificationVersion),
        op_counts=dict(sorted(op_counts.items())),
        weight_dtypes=dict(sorted(weight_dtypes.items())),
        weights_quantized=any(op_counts[name] for name in _WEIGHT_QUANT_OPS),
        activations_quantized=op_counts["quantize"] > 0,
        metadata=dict(spec.description.metadata.userDefined),
    )


def _package_metadata(info: MLPackageInfo, path: Path) -> dict[str, Any]:
    if METADATA_KEY not in info.metadata:
        raise ArtifactError(f"{path}: Core ML package has no '{METADATA_KEY}' user metadata")
    return parse_metadata(info.metadata[METADATA_KEY], path)


@dataclass(kw_only=True)
class CoreMLRunner(Runner):
    """A checked `.mlpackage`. `run` predicts on macOS and raises elsewhere."""

    info: MLPackageInfo
    compute_units: str
    _model: Any = field(default=None, repr=False)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if sys.platform != "darwin":
            raise UnsupportedPlatformError(
                f"{self.path}: Core ML prediction runs only on macOS (this is {sys.platform})"
            )
        return super().run(x)

    def run_batch(self, batch: np.ndarray) -> list[np.ndarray]:
        import coremltools as ct

        if self._model is None:
            self._model = ct.models.MLModel(str(self.path), compute_units=ct.ComputeUnit[self.compute_units])
        result = self._model.predict({INPUT_NAME: batch})
        return [np.asarray(result[spec.name]) for spec in self.outputs]


def load(path: Path, *, threads: int | None = None, compute_units: str = "ALL") -> CoreMLRunner:
    """Inspect a package and check its outputs against its metadata.

    Args:
        threads: Ignored: Core ML schedules its own compute units.
        compute_units: `coremltools.ComputeUnit` name used for prediction on macOS; ALL (what
            an app gets) lets the Neural Engine run fp16 and int8 packages.
    """
    info = inspect_mlpackage(Path(path))
    record = _package_metadata(info, Path(path))
    outputs = output_specs_from_metadata(record, Path(path))
    check_outputs([(spec.name, spec.shape) for spec in info.outputs], outputs, Path(path))
    if len(info.inputs) != 1:
        raise ArtifactError(
            f"{path}: Core ML package takes {len(info.inputs)} inputs; a faceptor-edge export takes one"
        )
    check_input_shape(info.inputs[0].shape, record, Path(path))
    return CoreMLRunner(**Runner.fields_from(record, path), info=info, compute_units=compute_units)


DEVICE_NAMES = {"MLNeuralEngineComputeDevice": "neural engine", "MLGPUComputeDevice": "gpu",
                "MLCPUComputeDevice": "cpu"}  # fmt: skip


@dataclass(frozen=True)
class ComputePlan:
    """Where Core ML would run each operation of a package's `main` function.

    Attributes:
        compute_units: The `coremltools.ComputeUnit` the plan was made for.
        ops: Operator name -> preferred device ("neural engine", "gpu", "cpu", "unknown")
            -> number of operations.
        cost: Device -> share of the estimated workload (0..1), where Core ML estimates it.
    """

    compute_units: str
    ops: dict[str, dict[str, int]]
    cost: dict[str, float]

    def by_device(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for devices in self.ops.values():
            totals.update(devices)
        return dict(totals.most_common())

    def format(self) -> str:
        totals = ", ".join(f"{device} {count}" for device, count in self.by_device().items())
        cost = ", ".join(f"{device} {share:.0%}" for device, share in sorted(self.cost.items()))
        lines = [f"Core ML compute plan ({self.compute_units}): ops by preferred device: {totals}"
                 + (f"; estimated work: {cost}" if cost else "")]  # fmt: skip
        for name, devices in sorted(self.ops.items()):
            lines.append(f"  {name}: " + ", ".join(f"{device} {count}" for device, count in sorted(devices.items())))
        return "\n".join(lines)


def compute_plan(path: Path, compute_units: str = "ALL") -> ComputePlan:
    """Core ML's own plan (`MLComputePlan`) for a package: each operation's preferred device.

    Raises:
        UnsupportedPlatformError: off macOS, where Core ML (and so the plan) does not exist.
        ArtifactError: the package does not load or is not an ML Program.
    """
    if sys.platform != "darwin":
        raise UnsupportedPlatformError(
            f"{path}: which ops run on the Neural Engine only Core ML itself can say (MLComputePlan, macOS 14.4 "
            f"or later); this is {sys.platform}"
        )
    import coremltools as ct
    from coremltools.models.compute_plan import MLComputePlan

    _open_package(Path(path))
    units = ct.ComputeUnit[compute_units]
    try:
        compiled = ct.models.MLModel(str(path), compute_units=units).get_compiled_model_path()
        plan = MLComputePlan.load_from_path(compiled, compute_units=units)
    except Exception as err:  # Core ML's own load errors
        raise ArtifactError(f"{path}: Core ML could not plan the model ({err})") from err
    ops: dict[str, Counter[str]] = {}
    cost: Counter[str] = Counter()
    for operation in plan.model_structure.program.functions["main"].block.operations:
        usage = plan.get_compute_device_usage_for_mlprogram_operation(operation)
        device = DEVICE_NAMES.get(type(usage.preferred_compute_device).__name__, "unknown") if usage else "unknown"
        ops.setdefault(operation.operator_name, Counter())[device] += 1
        estimate = plan.get_estimated_cost_for_mlprogram_operation(operation)
        if estimate is not None:
            cost[device] += estimate.weight
    return ComputePlan(compute_units, {name: dict(devices) for name, devices in ops.items()}, dict(cost))


def read_metadata(path: Path) -> dict[str, Any]:
    """The metadata record of a package (read without rebuilding the program)."""
    model = _open_package(Path(path))
    metadata = dict(model.get_spec().description.metadata.userDefined)
    if METADATA_KEY not in metadata:
        raise ArtifactError(f"{path}: Core ML package has no '{METADATA_KEY}' user metadata")
    return parse_metadata(metadata[METADATA_KEY], Path(path))
