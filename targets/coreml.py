"""Core ML target: `coremltools.convert(ExportedProgram)` → ML Program `.mlpackage`.

Deployment target iOS 17 / macOS 14: the oldest opset with activation `quantize`/
`dequantize` ops, so fp32 and int8 packages share one floor. fp32 packages compute in
float32; int8 packages compute the ops left in float in float16 (what the Neural
Engine runs). Metadata is a JSON string in `user_defined_metadata["faceptor_edge"]`.

Conversion, saving, `load` and `inspect_mlpackage` work on Linux; prediction needs
macOS, so `CoreMLRunner.run` raises `UnsupportedPlatformError` elsewhere.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

import faceptor_edge
from faceptor_edge.errors import UserError
from faceptor_edge.quantize.coreml import (
    W8A8_DESCRIPTION,
    WEIGHTS_DESCRIPTION,
    activation_quantized_program,
    quantize_weights,
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

_log = logging.getLogger(__name__)
METADATA_KEY = "faceptor_edge"
_LAYER_OPS = ("conv", "linear", "conv_transpose")
_WEIGHT_QUANT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")
Int8Route = Literal["auto", "w8a8", "weights"]


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


@dataclass
class CoreMLRunner:
    """A checked `.mlpackage`. `run` predicts on macOS and raises elsewhere."""

    path: Path
    info: MLPackageInfo
    outputs: list[OutputSpec]
    batch_size: int
    input_shape: tuple[int, ...]
    compute_units: str
    metadata: dict[str, Any] = field(repr=False)
    _model: Any = field(default=None, repr=False)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if sys.platform != "darwin":
            raise UnsupportedPlatformError(
                f"{self.path}: Core ML prediction runs only on macOS (this is {sys.platform})"
            )
        import coremltools as ct

        x = check_input(x, self.input_shape)
        if self._model is None:
            self._model = ct.models.MLModel(str(self.path), compute_units=ct.ComputeUnit[self.compute_units])

        def run_batch(batch: np.ndarray) -> list[np.ndarray]:
            result = self._model.predict({INPUT_NAME: batch})
            return [np.asarray(result[spec.name]) for spec in self.outputs]

        return run_in_batches(x, self.batch_size, self.outputs, run_batch)


@dataclass(frozen=True)
class CoreMLTarget:
    """`.mlpackage` export.

    Attributes:
        int8_route: `"auto"` tries weights+activations (PT2E) and falls back to
            weights-only if conversion fails; `"w8a8"` or `"weights"` force one route.
        keep_float, keep_float_types: W8A8 only: wrapper modules kept float
            (see `quantize.executorch.quantize_pt2e`).
        compute_units: `coremltools.ComputeUnit` name used for prediction on macOS;
            CPU_ONLY gives the float32 numbers parity checks expect.
    """

    int8_route: Int8Route = "auto"
    keep_float: Sequence[str] = ()
    keep_float_types: Sequence[type[nn.Module]] = ()
    compute_units: str = "CPU_ONLY"
    name: str = "coreml"
    suffix: str = ".mlpackage"

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
        """Convert (and quantize), save to a staging dir, inspect, then move into place."""
        path = check_export_args(wrapper, example, path, self.suffix, metadata, precision, calibration)
        if self.int8_route not in ("auto", "w8a8", "weights"):
            raise UserError(f"int8_route must be 'auto', 'w8a8' or 'weights', got {self.int8_route!r}")
        extra: dict[str, Any] = {}
        if precision == "fp32":
            mlmodel, quantization = self._convert_float(wrapper, example, "float32"), "none (float32)"
        else:
            mlmodel, quantization, extra = self._convert_int8(wrapper, example, calibration)
        record = artifact_metadata(
            wrapper, example, metadata, target=self.name, precision=precision, quantization=quantization,
            compute_precision="float32" if precision == "fp32" else "float16", **extra,
        )  # fmt: skip
        _describe(mlmodel, record)
        with staging_dir(path) as tmp:
            built = tmp / path.name
            mlmodel.save(str(built))
            # ExecuTorch Core ML delegate debug map, outside the manifest; not needed here.
            (built / "executorch_debug_handle_mapping.json").unlink(missing_ok=True)
            _verify(built, record)
            commit(built, path)
        return path

    def _convert_float(self, wrapper: ExportWrapper, example: torch.Tensor, compute: str) -> Any:
        with torch.no_grad():
            program = torch.export.export(wrapper, (example,))
        return _convert(program, example, wrapper.output_names, compute)

    def _convert_int8(
        self, wrapper: ExportWrapper, example: torch.Tensor, calibration: torch.Tensor
    ) -> tuple[Any, str, dict[str, Any]]:
        if self.int8_route in ("auto", "w8a8"):
            try:
                quantized = activation_quantized_program(
                    wrapper, example, calibration, keep_float=self.keep_float, keep_float_types=self.keep_float_types
                )
                mlmodel = _convert(quantized.program, example, wrapper.output_names, "float16")
                return mlmodel, W8A8_DESCRIPTION, {"float_layers": list(quantized.float_layers)}
            except UserError:
                raise
            except Exception as err:
                if self.int8_route == "w8a8":
                    raise UserError(f"Core ML int8 weights+activations conversion failed: {err}") from err
                reason = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                _log.warning("Core ML W8A8 conversion failed (%s); falling back to int8 weights only", reason)
                mlmodel = quantize_weights(self._convert_float(wrapper, example, "float16"))
                return mlmodel, WEIGHTS_DESCRIPTION, {"w8a8_failure": reason}
        return quantize_weights(self._convert_float(wrapper, example, "float16")), WEIGHTS_DESCRIPTION, {}

    def load(self, path: Path) -> CoreMLRunner:
        info = inspect_mlpackage(Path(path))
        record = _package_metadata(info, Path(path))
        outputs = output_specs_from_metadata(record, Path(path))
        check_outputs([(spec.name, spec.shape) for spec in info.outputs], outputs, Path(path))
        shape = tuple(record["input"]["shape"])
        return CoreMLRunner(Path(path), info, outputs, int(record["batch_size"]), shape, self.compute_units, record)

    def read_metadata(self, path: Path) -> dict[str, Any]:
        model = _open_package(Path(path))
        metadata = dict(model.get_spec().description.metadata.userDefined)
        if METADATA_KEY not in metadata:
            raise ArtifactError(f"{path}: Core ML package has no '{METADATA_KEY}' user metadata")
        return parse_metadata(metadata[METADATA_KEY], Path(path))


def _convert(program: torch.export.ExportedProgram, example: torch.Tensor, names: list[str], compute: str) -> Any:
    import coremltools as ct

    return ct.convert(
        program.run_decompositions({}),
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        inputs=[ct.TensorType(name=INPUT_NAME, shape=tuple(example.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name=name, dtype=np.float32) for name in names],
        compute_precision=ct.precision.FLOAT32 if compute == "float32" else ct.precision.FLOAT16,
        skip_model_load=True,
    )


def _describe(mlmodel: Any, record: dict[str, Any]) -> None:
    """Fill the package's description fields (shown by Xcode) and the metadata record."""
    mlmodel.author = f"faceptor-edge {faceptor_edge.__version__}"
    mlmodel.short_description = f"Faceptor student ({record['student']}), {record['quantization']}"
    mlmodel.version = faceptor_edge.__version__
    mlmodel.input_description[INPUT_NAME] = "B×3×S×S face crop, CLIP-normalised (see metadata)"
    for out in record["outputs"]:
        mlmodel.output_description[out["name"]] = f"raw output {out['name']}, shape {out['shape']}"
    mlmodel.user_defined_metadata[METADATA_KEY] = json.dumps(record)
    mlmodel.user_defined_metadata["precision"] = record["precision"]
    mlmodel.user_defined_metadata["quantization"] = record["quantization"]


def _verify(path: Path, record: dict[str, Any]) -> None:
    """Right after saving: the package reloads, validates, and its outputs match the record."""
    info = inspect_mlpackage(path)
    check_outputs([(spec.name, spec.shape) for spec in info.outputs], output_specs_from_metadata(record, path), path)
