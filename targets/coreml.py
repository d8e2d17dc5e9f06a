"""Core ML target: `coremltools.convert(ExportedProgram)` → ML Program `.mlpackage`.

Deployment target iOS 17 / macOS 14: the oldest opset with activation `quantize`/
`dequantize` ops, so every package shares one floor. fp32 packages compute in float32
(CPU and GPU only); fp16 and int8 packages compute in float16, what the Neural Engine
runs (int8: the ops left float). Metadata is a JSON string in
`user_defined_metadata["faceptor_edge"]`.

Conversion and saving work on Linux; `backends.coreml` loads, inspects and (on macOS) runs
it with `ComputeUnit.ALL`. Off macOS, `proxy` rebuilds what was converted as a PyTorch
program (`targets.proxy`), which parity checks in its place and labels as a proxy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

import faceptor_edge
from faceptor_edge.backends import coreml as runtime
from faceptor_edge.backends.artifact import INPUT_NAME, check_outputs, output_specs_from_metadata
from faceptor_edge.backends.coreml import METADATA_KEY, CoreMLRunner, inspect_mlpackage
from faceptor_edge.backends.formats import FORMATS
from faceptor_edge.errors import UserError
from faceptor_edge.quantize.coreml import (
    W8A8_DESCRIPTION,
    WEIGHTS_DESCRIPTION,
    activation_quantized_program,
    quantize_weights,
)
from faceptor_edge.targets.base import (
    ExportWrapper,
    Precision,
    artifact_metadata,
    check_export_args,
    commit,
    staging_dir,
)
from faceptor_edge.targets.proxy import Proxy, activation_scales, coreml_proxy

_log = logging.getLogger(__name__)
Int8Route = Literal["auto", "w8a8", "weights"]


@dataclass(frozen=True)
class CoreMLTarget:
    """`.mlpackage` export.

    Attributes:
        int8_route: `"auto"` tries weights+activations (PT2E) and falls back to
            weights-only if coremltools cannot convert the quantized program (the
            metadata's `quantization` and `w8a8_failure` say so); without torchao or
            ExecuTorch's quantizer it is an error, never a silent fallback. `"w8a8"` or
            `"weights"` force one route.
        keep_float, keep_float_types: W8A8 only: wrapper modules kept float
            (see `quantize.executorch.quantize_pt2e`).
        compute_units: `coremltools.ComputeUnit` name used for prediction on macOS (ALL:
            what an app gets; the Neural Engine runs fp16 and int8 packages).
    """

    int8_route: Int8Route = "auto"
    keep_float: Sequence[str] = ()
    keep_float_types: Sequence[type[nn.Module]] = ()
    compute_units: str = "ALL"
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
        path = check_export_args(wrapper, example, path, self.suffix, metadata, precision, calibration,
                                 precisions=FORMATS["coreml"].precisions)  # fmt: skip
        if self.int8_route not in ("auto", "w8a8", "weights"):
            raise UserError(f"int8_route must be 'auto', 'w8a8' or 'weights', got {self.int8_route!r}")
        extra: dict[str, Any] = {}
        if precision != "int8":
            compute = "float32" if precision == "fp32" else "float16"
            mlmodel, quantization = self._convert_float(wrapper, example, compute), f"none ({compute} compute)"
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
                return mlmodel, W8A8_DESCRIPTION, {"float_layers": list(quantized.float_layers),
                                                   "keep_float": list(self.keep_float),
                                                   "activation_scales": activation_scales(quantized.program)}  # fmt: skip
            except (UserError, ImportError) as err:
                if isinstance(err, ImportError):
                    raise UserError(f"Core ML int8 weights and activations need torchao and ExecuTorch's XNNPACK "
                                    f"quantizer ({err}): pip install faceptor-edge[executorch]") from err  # fmt: skip
                raise
            except Exception as err:
                if self.int8_route == "w8a8":
                    raise UserError(f"Core ML int8 weights+activations conversion failed: {err}") from err
                reason = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                _log.warning("Core ML W8A8 conversion failed (%s); falling back to int8 weights only", reason)
                mlmodel = quantize_weights(self._convert_float(wrapper, example, "float16"))
                return mlmodel, WEIGHTS_DESCRIPTION, {"w8a8_failure": reason}
        return quantize_weights(self._convert_float(wrapper, example, "float16")), WEIGHTS_DESCRIPTION, {}

    def proxy(self, path: Path, student_dir: Path) -> Proxy | None:
        """What was converted into the package, as a PyTorch program (`targets.proxy.coreml_proxy`)."""
        return coreml_proxy(self.read_metadata(path), student_dir)

    def load(self, path: Path, *, threads: int | None = None) -> CoreMLRunner:
        return runtime.load(path, compute_units=self.compute_units)

    def read_metadata(self, path: Path) -> dict[str, Any]:
        return runtime.read_metadata(path)


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
