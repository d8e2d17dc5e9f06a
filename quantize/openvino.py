"""int8 post-training quantization of OpenVINO models with NNCF.

`quantize` inserts FakeQuantize ops (int8 weights per channel, int8 activations) from
calibration statistics; the CPU plugin then runs the int8 kernels. With a metric and a
validation set, `quantize_with_accuracy_control` reverts the layers that hurt most to
float until the drop is within `max_drop`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram

from faceptor_edge import signal_stack
from faceptor_edge.backends.openvino import shared_core
from faceptor_edge.errors import UserError
from faceptor_edge.quantize.calibration import calibration_arrays

_LAYER_TYPES = ("Convolution", "GroupConvolution", "MatMul")
_TORCH_LAYER_OPS = (torch.ops.aten.linear.default, torch.ops.aten.conv2d.default)
# Products of two activations (attention's `q @ kᵀ` and `weights @ v`, the maps' einsum): OpenVINO
# converts them to MatMul named after its own decomposition (`bmm_3/aten.bmm.default/MatMul`), not
# after the exported program's node, and NNCF quantizes their inputs like a layer's.
_TORCH_PRODUCT_OPS = (torch.ops.aten.matmul.default, torch.ops.aten.bmm.default, torch.ops.aten.einsum.default)
_OV_PRODUCT_OPS = tuple(str(op) for op in _TORCH_PRODUCT_OPS)  # as OpenVINO writes them in op names


def _static_batch(model: Any) -> int:
    shape = model.inputs[0].get_partial_shape()
    if shape.is_dynamic:
        raise UserError(f"quantize an OpenVINO model with a static input shape, got {shape}")
    return int(shape[0].get_length())


def quantize(model: Any, calibration: torch.Tensor, *, ignored_scope: Any = None, preset: str = "performance") -> Any:
    """Static int8 quantization of an `openvino.Model` with `nncf.quantize`.

    Args:
        model: `openvino.Model` with a static input shape.
        calibration: N×3×S×S normalised crops (batched to the model's batch size).
        ignored_scope: Optional `nncf.IgnoredScope` of ops to keep float
            (`ignored_scope_for_modules` builds one from module paths).
        preset: `"performance"` (symmetric activations) or `"mixed"` (asymmetric activations).

    Returns:
        The quantized `openvino.Model`.
    """
    import nncf

    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    if preset not in presets:
        raise UserError(f"preset must be one of {sorted(presets)}, got {preset!r}")
    batches = calibration_arrays(calibration, _static_batch(model))
    kwargs = {"ignored_scope": ignored_scope} if ignored_scope is not None else {}
    shared_core()  # ours first: NNCF's own short-lived Cores then nest inside it (backends.openvino doc)
    with signal_stack.kept():
        return nncf.quantize(model, nncf.Dataset(batches), preset=presets[preset], subset_size=len(batches), **kwargs)


def quantize_with_accuracy_control(
    model: Any,
    calibration: torch.Tensor,
    validation: torch.Tensor,
    metric_fn: Callable[[Any, Iterable[np.ndarray]], float],
    max_drop: float,
    *,
    ignored_scope: Any = None,
) -> Any:
    """int8 quantization that keeps `metric_fn` within `max_drop` of the float model.

    Args:
        model: `openvino.Model` with a static input shape.
        calibration: N×3×S×S crops for activation statistics.
        validation: M×3×S×S crops for the metric (batched like calibration).
        metric_fn: `metric_fn(compiled_model, items) -> float`, higher is better; it gets
            an `openvino.CompiledModel` and validation items `(first_row, batch)` (float32
            arrays of the model's batch size; NNCF passes subsets while ranking layers) and
            must compare against its own references for those rows.
        max_drop: Largest absolute metric drop accepted.

    Returns:
        The quantized `openvino.Model`, with some layers reverted to float if needed.
    """
    import nncf

    if max_drop < 0:
        raise UserError(f"max_drop must be non-negative, got {max_drop}")
    batch = _static_batch(model)
    calibration_batches = calibration_arrays(calibration, batch)
    # Items carry their first row, since NNCF validates on subsets while ranking layers.
    items = [(i * batch, array) for i, array in enumerate(calibration_arrays(validation, batch))]
    validation_set = nncf.Dataset(items, lambda item: item[1])
    kwargs = {"ignored_scope": ignored_scope} if ignored_scope is not None else {}
    core = shared_core()  # as in `quantize`
    # NNCF 3.4's `calculate_accuracy_drop` also computes the relative drop, quantized / initial,
    # whatever the drop type, so an initial metric of exactly 0 (a float model that agrees with
    # its own references) raises ZeroDivisionError. Drops here are absolute: a constant offset
    # changes no decision, so the metric is shifted off 0 when it starts there.
    offset = 1.0 if metric_fn(core.compile_model(model, "CPU"), items) == 0 else 0.0
    with signal_stack.kept():  # its validation compiles on Cores of its own (signal_stack doc)
        return nncf.quantize_with_accuracy_control(
            model,
            calibration_dataset=nncf.Dataset(calibration_batches),
            validation_dataset=validation_set,
            validation_fn=lambda compiled, subset: metric_fn(compiled, subset) + offset,
            max_drop=max_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            subset_size=len(calibration_batches),
            **kwargs,
        )


def ignored_scope_for_modules(program: ExportedProgram, model: Any, module_paths: Sequence[str]) -> Any:
    """An `nncf.IgnoredScope` keeping the layers (Linear, Conv) and the products of two
    activations (attention) under `module_paths` float.

    OpenVINO names converted ops `<torch node>/<aten op>/<OV op>`, so Linear layers are found
    by name through the exported program's module stack. Convolutions lose their names when
    BatchNorm is folded into them, so they are matched by kernel shape and order instead
    (`_convs_by_position`); products are renamed, so they are matched by order (`_products_by_position`).

    Raises:
        UserError: a module path has no layer to match in `model`, or the convolutions of the
            two graphs do not line up.
    """
    import nncf

    names = {op.get_friendly_name() for op in model.get_ops() if op.get_type_name() in _LAYER_TYPES}
    torch_convs = [node for node in program.graph.nodes
                   if node.op == "call_function" and node.target == torch.ops.aten.conv2d.default]  # fmt: skip
    ov_convs = [op for op in model.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    torch_products = [node for node in program.graph.nodes
                      if node.op == "call_function" and node.target in _TORCH_PRODUCT_OPS]  # fmt: skip
    ov_products = [op for op in model.get_ordered_ops()
                   if op.get_type_name() == "MatMul" and _aten_op(op) in _OV_PRODUCT_OPS]  # fmt: skip
    matched: list[str] = []
    for module in module_paths:
        nodes = [
            node.name
            for node in program.graph.nodes
            if node.op == "call_function" and node.target in _TORCH_LAYER_OPS and _inside(node, module)
        ]
        found = sorted(name for name in names if name.split("/", 1)[0] in nodes)
        convs = [i for i, node in enumerate(torch_convs) if _inside(node, module)]
        if convs:
            found += _convs_by_position(torch_convs, ov_convs, convs, module)
        products = [i for i, node in enumerate(torch_products) if _inside(node, module)]
        if products:
            found += _products_by_position(torch_products, ov_products, products, module)
        if not found:
            raise UserError(f"no OpenVINO layer of module {module!r} is left to keep float")
        matched += found
    return nncf.IgnoredScope(names=sorted(set(matched)))


def int8_ignored_scope(program: ExportedProgram, model: Any, keep_float: Sequence[str]) -> Any:
    """The `nncf.IgnoredScope` of an int8 export: the layers under the module paths
    `keep_float` (`ignored_scope_for_modules`) and every output's decoding (`output_decoding_ops`)."""
    import nncf

    layers = ignored_scope_for_modules(program, model, keep_float).names if keep_float else []
    return nncf.IgnoredScope(names=sorted({*layers, *output_decoding_ops(model)}))


def output_decoding_ops(model: Any) -> list[str]:
    """The ops between each output and the last layer (Convolution, MatMul) that feeds it: the
    graph's own decoding, such as the landmark heads' soft-argmax (sigmoid, sums, division).

    They cost nothing next to the layers, and int8 breaks them: NNCF quantizes a heatmap's
    weight sum like any activation, and where it rounds to 0 the division gives NaN (seen on
    2 of 43 dlib faces). So they stay float (`quantize(..., ignored_scope=...)`)."""
    names: set[str] = set()
    stack = [result.input_value(0).get_node() for result in model.get_results()]
    while stack:
        op = stack.pop()
        kind = op.get_type_name()
        if kind in _LAYER_TYPES or kind in ("Constant", "Parameter") or op.get_friendly_name() in names:
            continue
        names.add(op.get_friendly_name())
        stack += [value.get_node() for value in op.input_values()]
    return sorted(names)


def _convs_by_position(torch_convs: list, ov_convs: list, positions: list[int], module: str) -> list[str]:
    """OpenVINO names of the convolutions at `positions` of the exported program: matched by
    kernel (output channels, elements, height, width), then by order among the convolutions of
    that kernel. The two topological orders differ across branches (OpenVINO puts the pixel
    decoder's lateral convolutions beside the encoder stage they read); along one branch they agree."""
    if len(torch_convs) != len(ov_convs):
        raise UserError(f"cannot keep {module!r} float: the exported program has {len(torch_convs)} "
                        f"convolutions, the OpenVINO model {len(ov_convs)}")  # fmt: skip
    torch_keys = [_kernel_key(tuple(node.args[1].meta["val"].shape)) for node in torch_convs]  # O×I/g×kH×kW
    ov_keys = [_kernel_key(tuple(int(d) for d in op.input(1).get_partial_shape().to_shape())) for op in ov_convs]
    out = []
    for i in positions:
        key = torch_keys[i]
        rank = torch_keys[:i].count(key)
        same = [op for op, ov_key in zip(ov_convs, ov_keys) if ov_key == key]
        if len(same) != torch_keys.count(key):
            raise UserError(f"cannot keep {module!r} float: {torch_keys.count(key)} convolutions of kernel {key} "
                            f"in the exported program, {len(same)} in the OpenVINO model")  # fmt: skip
        out.append(same[rank].get_friendly_name())
    return out


def _products_by_position(torch_products: list, ov_products: list, positions: list[int], module: str) -> list[str]:
    """OpenVINO names of the products at `positions` among the exported program's, in order:
    each is one MatMul in OpenVINO, and along the decoder's single chain both orders agree."""
    if len(torch_products) != len(ov_products):
        raise UserError(f"cannot keep {module!r} float: the exported program has {len(torch_products)} matrix "
                        f"products, the OpenVINO model {len(ov_products)}")  # fmt: skip
    return [ov_products[i].get_friendly_name() for i in positions]


def _aten_op(op: Any) -> str:
    """The ATen op an OpenVINO op came from, read from its `<torch node>/<aten op>/<OV op>` name ("" if none)."""
    parts = op.get_friendly_name().split("/")
    return parts[1] if len(parts) > 2 else ""


def _kernel_key(kernel: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(output channels, elements, kH, kW) of a torch O×I/g×kH×kW or an OpenVINO (G×)O×I×kH×kW kernel."""
    outputs = kernel[0] * kernel[1] if len(kernel) == 5 else kernel[0]  # GroupConvolution: G×O/G×I/G×kH×kW
    return outputs, int(np.prod(kernel)), kernel[-2], kernel[-1]


def _inside(node: torch.fx.Node, module: str) -> bool:
    stack = node.meta.get("nn_module_stack") or {}
    return any(path == module or path.startswith(module + ".") for path, _ in stack.values())


def float_layers(model: Any, program: ExportedProgram | None = None) -> list[str]:
    """Convolution/MatMul ops whose weights stayed float in a quantized model.

    With the exported `program` the model came from, names that still carry their torch
    node (Linear layers) are given as module paths; others keep their OpenVINO names.
    """
    modules = {}
    if program is not None:
        for node in program.graph.nodes:
            stack = list((node.meta.get("nn_module_stack") or {}).values())
            if stack:
                modules[node.name] = stack[-1][0]
    result = []
    for op in model.get_ops():
        if op.get_type_name() not in _LAYER_TYPES:
            continue
        weight = op.input_value(1).get_node()
        if weight.get_type_name() == "Convert":  # f16 constants decompressed in place
            weight = weight.input_value(0).get_node()
        if weight.get_type_name() == "Constant" and weight.get_output_element_type(0).is_real():
            name = op.get_friendly_name()
            result.append(modules.get(name.split("/", 1)[0], name))
    return result


FP16_MIN_ELEMENTS = 1024  # smaller float constants (quantization ranges, scales, biases) stay float32


def store_float_as_fp16(model: Any) -> int:
    """Store an int8 model's remaining large float32 constants (the layers kept float, the
    position embedding) as float16 followed by a Convert to float32, in place; returns the
    bytes saved. The runtime decompresses them once at load and computes in float32.

    `ov.save_model(compress_to_fp16=True)` leaves an NNCF-quantized model's float constants
    as they are, so this does the same rewrite itself, for these constants only: they were
    4.1 of the `lite0` int8 IR's 8.2 MB."""
    import openvino as ov
    from openvino import opset13

    saved = 0
    for op in model.get_ops():
        if op.get_type_name() != "Constant" or op.get_output_element_type(0) != ov.Type.f32:
            continue
        values = op.get_data()
        if values.size < FP16_MIN_ELEMENTS:
            continue
        half = opset13.convert(opset13.constant(values.astype(np.float16)), ov.Type.f32)
        for target in op.output(0).get_target_inputs():
            target.replace_source_output(half.output(0))
        saved += values.size * 2
    return saved
