"""int8 for Core ML with coremltools 9 on any OS.

Two routes, tried in this order by `targets.coreml`:
- weights and activations (W8A8): quantize the exported program with torchao PT2E and
  the XNNPACK quantizer (`activation_quantized_program`); coremltools converts its
  `quantized_decomposed` ops to Core ML `quantize`/`dequantize` (iOS 17 opset) and int8
  `constexpr_affine_dequantize` weights. coremltools' own `CoreMLQuantizer` needs
  `torch.ao.quantization.quantizer`, gone from torch 2.13, and its
  `linear_quantize_activations` calibrates by predicting, which needs macOS.
- weights only: `quantize_weights` (`linear_quantize_weights`, int8 per channel,
  symmetric) on the converted float model; activations stay float.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from faceptor_edge.quantize.executorch import QuantizedProgram, quantize_pt2e

W8A8_DESCRIPTION = "int8 weights and activations (torchao PT2E, XNNPACK quantizer, converted to Core ML quantize ops)"
WEIGHTS_DESCRIPTION = "int8 weights only (coremltools linear_quantize_weights, per-channel symmetric)"


def activation_quantized_program(
    model: nn.Module,
    example: torch.Tensor,
    calibration: torch.Tensor,
    *,
    keep_float: Sequence[str] = (),
    keep_float_types: Sequence[type[nn.Module]] = (),
) -> QuantizedProgram:
    """A W8A8 program for `coremltools.convert` (see `quantize.executorch.quantize_pt2e`).

    The student's head glue (soft-argmax) stays float: coremltools cannot convert its
    quantized `arange`.
    """
    return quantize_pt2e(model, example, calibration, keep_float=keep_float, keep_float_types=keep_float_types)


def quantize_weights(mlmodel: Any) -> Any:
    """int8 per-channel symmetric weights for a converted `coremltools.models.MLModel`."""
    import coremltools.optimize.coreml as cto

    config = cto.OptimizationConfig(
        global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    )
    return cto.linear_quantize_weights(mlmodel, config=config)
