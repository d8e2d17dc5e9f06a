"""Convolution-first encoder of the student: MobileNetV2-style inverted residuals.

Only Conv2d, BatchNorm (folded at export), ReLU6 and additions: every op quantizes to
int8 on XNNPACK, the Apple Neural Engine and OpenVINO CPU/NPU.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_bn(
    in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1×1 expand, 3×3 depthwise (stride 1 or 2), 1×1 project; residual when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers = [conv_bn(in_ch, hidden)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, out_ch, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class StagedEncoder(nn.Module):
    """An encoder made of `stem` and four `stages`; returns each stage's map."""

    stem: nn.Module
    stages: nn.ModuleList

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """image: B×3×H×W -> maps at strides 4, 8, 16, 32 (B×C_i×H/s×W/s)."""
        x = self.stem(image)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class ConvEncoder(StagedEncoder):
    """Stem at stride 2, then four stages at strides 4, 8, 16 and 32.

    Args:
        widths: Channels of the stem and of the four stages.
        depths: Inverted-residual blocks per stage (the first one downsamples).
        expand: Expansion ratio of the inverted residuals.
    """

    def __init__(
        self, *, widths: tuple[int, int, int, int, int], depths: tuple[int, int, int, int], expand: int
    ) -> None:
        super().__init__()
        self.stem = conv_bn(3, widths[0], 3, 2)
        self.stages = nn.ModuleList()
        for in_ch, out_ch, depth in zip(widths[:-1], widths[1:], depths):
            blocks = [InvertedResidual(in_ch, out_ch, 2, expand)]
            blocks += [InvertedResidual(out_ch, out_ch, 1, expand) for _ in range(depth - 1)]
            self.stages.append(nn.Sequential(*blocks))


class PixelDecoder(nn.Module):
    """Top-down FPN: fuse strides 32→4 into one stride-4 pixel-feature map, plus a learned
    per-pixel position embedding (convolutions alone barely know where they are, and face
    maps depend strongly on position)."""

    def __init__(self, in_widths: tuple[int, int, int, int], dim: int, size: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn(width, dim, act=False) for width in in_widths)
        self.smooth = nn.Sequential(conv_bn(dim, dim, 3, groups=dim), conv_bn(dim, dim, act=False))
        self.dim = dim
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.position = nn.Parameter(torch.randn(1, dim, size, size) * 0.02)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features at strides 4..32 -> B×dim×H/4×W/4."""
        x = self.lateral[-1](features[-1])
        for lateral, feature in zip(self.lateral[-2::-1], features[-2::-1]):
            x = self.upsample(x) + lateral(feature)
        return self.smooth(x) + self.position
