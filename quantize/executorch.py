"""Static int8 post-training quantization with torchao PT2E and the XNNPACK quantizer.

Weights are int8 per output channel, symmetric; activations int8 per tensor, calibrated
with histogram observers. The result is an `ExportedProgram` holding
`quantized_decomposed` quantize/dequantize ops around float ops: ExecuTorch's XNNPACK
partitioner turns each pattern into an int8 kernel, and coremltools converts the same
ops to Core ML `quantize`/`dequantize` (so `quantize.coreml` reuses this module).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.export import ExportedProgram

from faceptor_edge.errors import UserError
from faceptor_edge.quantize.calibration import calibration_batches
from faceptor_edge.student.model import FaceptorStudent

_LAYER_OPS = (torch.ops.aten.linear.default, torch.ops.aten.conv2d.default)


@dataclass(frozen=True)
class QuantizedProgram:
    """A PT2E-quantized program and where int8 was applied.

    Attributes:
        program: `torch.export` program with quantize/dequantize ops, static shapes.
        quantized_layers: Module paths of Linear/Conv layers with int8 weights and inputs.
        float_layers: Module paths of Linear/Conv layers left in float.
        dynamic_layers: Those of `quantized_layers` whose inputs are quantized per call
            (dynamic int8) rather than with calibrated ranges.
    """

    program: ExportedProgram
    quantized_layers: tuple[str, ...]
    float_layers: tuple[str, ...]
    dynamic_layers: tuple[str, ...] = ()


def _type_name(module_type: object) -> str:
    if isinstance(module_type, str):
        return module_type
    return f"{module_type.__module__}.{module_type.__qualname__}"  # type: ignore[attr-defined]


def _module_stack(node: torch.fx.Node) -> list[tuple[str, str]]:
    """(module path, type name) from the outermost to the innermost module of a node."""
    stack = node.meta.get("nn_module_stack") or {}
    return [(path, _type_name(kind)) for path, kind in stack.values()]


def _keep_float_filter(
    keep_float: Sequence[str], keep_float_types: Sequence[type[nn.Module]], float_ops_of: Sequence[type[nn.Module]]
):
    """Quantizer filter: True for nodes to quantize."""
    types = {_type_name(t) for t in keep_float_types}
    own = {_type_name(t) for t in float_ops_of}

    def quantize_node(node: torch.fx.Node) -> bool:
        stack = _module_stack(node)
        for path, kind in stack:
            if kind in types or any(path == name or path.startswith(name + ".") for name in keep_float):
                return False
        return not (stack and stack[-1][1] in own)

    return quantize_node


def _layer_report(
    graph_module: torch.fx.GraphModule, float_ops_of: Sequence[type[nn.Module]]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(quantized, float) module paths of Linear/Conv layers in a converted graph; the own
    ops of `float_ops_of` modules (the soft-argmax's constant-grid product) are no layers."""
    own = {_type_name(t) for t in float_ops_of}
    quantized, floating = [], []
    for node in graph_module.graph.nodes:
        if node.op != "call_function" or node.target not in _LAYER_OPS:
            continue
        stack = _module_stack(node)
        if stack and stack[-1][1] in own:
            continue
        path = stack[-1][0] if stack else node.name
        weight = node.args[1]
        is_int8 = isinstance(weight, torch.fx.Node) and "dequantize" in str(weight.target)
        (quantized if is_int8 else floating).append(path)
    return tuple(quantized), tuple(floating)


def _check_names(model: nn.Module, keep_float: Sequence[str]) -> None:
    modules = dict(model.named_modules())
    unknown = [name for name in keep_float if name not in modules]
    if unknown:
        tops = ", ".join(name for name in modules if name and "." not in name)
        raise UserError(f"keep_float names {unknown} are not modules of the model (top level: {tops})")


def quantize_pt2e(
    model: nn.Module,
    example: torch.Tensor,
    calibration: torch.Tensor,
    *,
    keep_float: Sequence[str] = (),
    keep_float_types: Sequence[type[nn.Module]] = (),
    float_ops_of: Sequence[type[nn.Module]] = (FaceptorStudent,),
    dynamic: Sequence[str] = (),
) -> QuantizedProgram:
    """Static int8 quantization of `model` at the static shape of `example`.

    Args:
        model: Module in eval mode (for the student: `targets.base.ExportWrapper`).
        example: Example input; the program is specialised to its shape.
        calibration: N×3×S×S normalised crops; run in batches of `example`'s batch size.
        keep_float: Module paths (as `model.named_modules()` spells them) whose layers stay
            float, e.g. `"student.embedding_head"`.
        keep_float_types: Module classes whose layers stay float, e.g. `nn.LayerNorm`.
        float_ops_of: Module classes whose own ops (written in their `forward`, not in a
            submodule) stay float. For the student that is the head glue: value bias,
            map einsum and soft-argmax. Quantizing soft-argmax would put landmark
            coordinates on an 8-bit grid, and coremltools 9 cannot convert its quantized
            `arange` (it becomes int32 input to `quantize`).
        dynamic: Module paths whose Linear layers get dynamic int8 instead: int8 weights,
            inputs quantized per call from their own range (XNNPACK's qd8 kernels), for
            layers whose outputs need more than one calibrated range (the embedding head).

    Returns:
        The quantized program and the lists of int8 and float layers.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if model.training:
        raise UserError("quantize a model in eval mode (call .eval() first)")
    _check_names(model, (*keep_float, *dynamic))
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    for name in dynamic:
        quantizer.set_module_name(name, get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
    quantizer.set_filter_function(_keep_float_filter(keep_float, keep_float_types, float_ops_of))
    with torch.no_grad():
        graph = torch.export.export(model, (example,)).module()
        prepared = prepare_pt2e(graph, quantizer)
        for batch in calibration_batches(calibration, len(example)):
            prepared(batch)
        converted = convert_pt2e(prepared)
        quantized, floating = _layer_report(converted, float_ops_of)
        program = torch.export.export(converted, (example,))
    within = [path for path in quantized if any(path == name or path.startswith(name + ".") for name in dynamic)]
    return QuantizedProgram(program, quantized, floating, tuple(within))
