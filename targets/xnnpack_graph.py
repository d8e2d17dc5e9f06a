"""The student as a graph XNNPACK delegates whole: equivalent forms of the ops it lacks.

ExecuTorch's XNNPACK partitioner (1.5) takes no `upsample_nearest2d` and no
`native_layer_norm`, and `mean` only over a 4-D tensor's last two axes with keepdim; every
op it refuses splits the program into separate delegates, with layout transposes and
quantize/dequantize pairs at each border. `delegable_copy` swaps the student's modules for
forms built from ops it takes (a fixed identity transposed convolution; 4-D means, `rsqrt`,
arithmetic; slices).
The student's own code writes its means that way; its splits and soft-argmax sums switch
form with `FaceptorStudent.xnnpack_forms` (set here only), so training, OpenVINO (whose
int8 keeps the soft-argmax float by finding the last MatMul before each output) and Core
ML keep the plain forms and only the ExecuTorch graph changes. The outputs are
unchanged to float rounding (tests: ≤ 1e-5).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from faceptor_edge.student.encoder import PixelDecoder
from faceptor_edge.student.model import FaceptorStudent


class NearestUpsample2x(nn.ConvTranspose2d):
    """`nn.Upsample(scale_factor=2, mode="nearest")` of a C-channel map as a fixed 2×2
    transposed convolution, stride 2, whose C×C kernel is the identity at every tap: each
    input pixel copied into its 2×2 block (bit-exact in float32: ones times the pixel plus
    zeros). Dense rather than depthwise: XNNPACK runs a depthwise transposed convolution as
    C one-channel sub-convolutions, 6× slower than this one GEMM for the student's 64×64 map
    (4.2 against 0.7 ms, `faceptor-edge inspect X.pte --profile`)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 2, stride=2, bias=False)
        with torch.no_grad():
            self.weight.zero_()
            self.weight[torch.arange(channels), torch.arange(channels)] = 1.0
        self.weight.requires_grad_(False)


class LayerNormAsMeans(nn.Module):
    """`nn.LayerNorm` over the last axis from 4-D means and arithmetic; it shares the
    original's weight and bias."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        if len(norm.normalized_shape) != 1 or not norm.elementwise_affine:
            raise ValueError("only a last-axis LayerNorm with weight and bias is rewritten")
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: …×D -> …×D."""
        shape = x.shape
        rows = x.reshape(1, -1, 1, shape[-1])  # …×D -> 1×R×1×D: one channel per row
        centred = rows - rows.mean(dim=(2, 3), keepdim=True)
        variance = (centred * centred).mean(dim=(2, 3), keepdim=True)
        return (centred * torch.rsqrt(variance + self.eps)).reshape(shape) * self.weight + self.bias


def delegable_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` (in eval mode) in delegable form: the student's pixel-decoder
    upsampling as `NearestUpsample2x`, every `nn.LayerNorm` as `LayerNormAsMeans`, and its
    query and map splits as slices and its soft-argmax as a grid product; `module` is left as it was."""
    graph = copy.deepcopy(module).eval()
    for part in list(graph.modules()):
        if isinstance(part, PixelDecoder):
            part.upsample = NearestUpsample2x(part.dim)
        elif isinstance(part, FaceptorStudent):
            part.xnnpack_forms = True
        for name, child in part.named_children():
            if isinstance(child, nn.LayerNorm):
                setattr(part, name, LayerNormAsMeans(child))
    return graph
