"""The PyTorch proxy of an artifact this platform cannot run (Core ML off macOS).

The proxy is the program that was converted, rebuilt from the float student and the
artifact's metadata and run in PyTorch: for int8 the PT2E-quantized program (the same
calibration crops and float layers, checked against the activation scales the export
recorded), for fp16 the exported program with float16 weights and activations. Parity checks it in the artifact's
place and labels it a proxy: it shows what quantization or float16 does to the student,
not what Core ML's runtime and compute units do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram

from faceptor_edge.errors import UserError

PROXY_BATCH = 16


@dataclass(frozen=True)
class Proxy:
    """A stand-in for an artifact: `run` maps N×3×S×S normalised crops to raw outputs by name."""

    description: str
    run: Callable[[torch.Tensor], dict[str, np.ndarray]]


def activation_scales(program: ExportedProgram) -> list[float]:
    """The scales of a PT2E program's activation quantize ops in graph order (6 significant
    digits): the fingerprint that says a rebuilt program is the one that was converted."""
    scales = []
    for node in program.graph.nodes:
        quantize = node.op == "call_function" and str(node.target).startswith("quantized_decomposed.quantize_per_t")
        if quantize and isinstance(node.args[1], float):
            scales.append(float(f"{node.args[1]:.6g}"))
    return scales


def coreml_proxy(metadata: dict[str, Any], student_dir: str | Path) -> Proxy | None:
    """The converted program of a Core ML package, or None where it says nothing the float
    student does not (fp32) or there is none to rebuild (int8 weights only).

    Raises:
        UserError: The rebuilt int8 program is not the one that was converted (other
            calibration faces, other quantizer versions).
    """
    from faceptor_edge.student.io import load_student
    from faceptor_edge.targets.base import ExportWrapper

    precision = metadata["precision"]
    if precision == "fp32" or (precision == "int8" and "activation_scales" not in metadata):
        return None
    wrapper = ExportWrapper(load_student(student_dir)[0])
    if precision == "fp16":
        rounded = _float16_rounded(wrapper)
        return Proxy("the exported program with float16 weights and activations, in PyTorch",
                     lambda x: _run(rounded, _round16(x), wrapper))  # fmt: skip
    program = _rebuild_int8(wrapper, metadata, student_dir)
    module = program.module()
    return Proxy("the converted PT2E int8 program, in PyTorch", lambda x: _run(module, x, wrapper))


def _rebuild_int8(wrapper, metadata: dict[str, Any], student_dir: str | Path) -> ExportedProgram:
    from faceptor_edge.quantize.coreml import activation_quantized_program
    from faceptor_edge.student.inputs import normalise
    from faceptor_edge.student.io import card_recipe, read_card
    from faceptor_edge.targets.verify import face_crops

    source = metadata.get("calibration")
    if source is None:
        raise UserError("no proxy: the package does not record its calibration faces (export it again)")
    recipe = card_recipe(read_card(student_dir), student_dir)
    crops = normalise(face_crops(source["images"], source["count"], source["seed"], recipe), recipe)
    example = wrapper.example_input(metadata["batch_size"])
    program = activation_quantized_program(wrapper, example, crops, keep_float=metadata.get("keep_float", ())).program
    rebuilt, recorded = activation_scales(program), metadata["activation_scales"]
    if len(rebuilt) != len(recorded) or not np.allclose(rebuilt, recorded, rtol=1e-3):
        raise UserError("no proxy: the int8 program rebuilt here has other activation scales than the one converted "
                        "(other calibration faces or quantizer version)")  # fmt: skip
    return program


def _round16(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


def _float16_rounded(wrapper):
    """`wrapper` with every weight and every layer's output rounded to float16, computed in
    float32: Core ML's float16 storage between ops, at float32 speed (PyTorch's own float16 on
    CPU runs about 7× slower than float32 here, too slow for 112 faces)."""
    with torch.no_grad():
        for parameter in wrapper.parameters():
            parameter.copy_(_round16(parameter))
    for module in wrapper.modules():
        if not any(module.children()):
            module.register_forward_hook(lambda _module, _inputs, out: _round16(out) if torch.is_tensor(out) else out)
    return wrapper


@torch.no_grad()
def _run(model, x: torch.Tensor, wrapper) -> dict[str, np.ndarray]:
    """Raw outputs of `model` (a tuple in `wrapper.output_names` order) on `x`, in batches of the
    program's static batch size (1) or PROXY_BATCH."""
    size = 1 if isinstance(model, torch.fx.GraphModule) else PROXY_BATCH
    parts = [model(x[start : start + size]) for start in range(0, len(x), size)]
    return {name: torch.cat([part[i] for part in parts]).float().numpy() for i, name in enumerate(wrapper.output_names)}
