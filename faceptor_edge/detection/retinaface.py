"""RetinaFace-MobileNet0.25 (Deng et al., CVPR 2020): the network and its checkpoint keys.

The module layout and parameter names follow the widely shared biubug6
Pytorch_Retinaface checkpoints (`mobilenet0.25_Final.pth`), so those load strictly:
a MobileNetV1 ×0.25 body (strides 8/16/32), a 3-level FPN, one SSH context module per
level and 1×1 class / box / landmark heads with 2 anchors per cell. The network only
predicts; `detection.decoding` (numpy, shared by every runtime) makes its input and turns
its raw outputs into pixel boxes and points.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from faceptor_edge.detection.decoding import RetinaFaceConfig


def _conv_bn(c_in: int, c_out: int, *, kernel: int = 3, stride: int = 1, leaky: float | None) -> nn.Sequential:
    """Conv (no bias) + BN, then LeakyReLU unless `leaky` is None."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(c_out)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky, inplace=True))
    return nn.Sequential(*layers)


def _conv_dw(c_in: int, c_out: int, stride: int, leaky: float) -> nn.Sequential:
    """Depthwise-separable block: 3×3 depthwise (indices 0–2), 1×1 pointwise (3–5)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False),
        nn.BatchNorm2d(c_in),
        nn.LeakyReLU(leaky, inplace=True),
        nn.Conv2d(c_in, c_out, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(leaky, inplace=True),
    )


class MobileNetV1Body(nn.Module):
    """MobileNetV1 ×0.25 up to stride 32, returning the stride 8/16/32 maps (64/128/256 ch)."""

    def __init__(self, leaky: float) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, stride=2, leaky=leaky),
            _conv_dw(8, 16, 1, leaky),
            _conv_dw(16, 32, 2, leaky),
            _conv_dw(32, 32, 1, leaky),
            _conv_dw(32, 64, 2, leaky),
            _conv_dw(64, 64, 1, leaky),
        )
        self.stage2 = nn.Sequential(_conv_dw(64, 128, 2, leaky), *(_conv_dw(128, 128, 1, leaky) for _ in range(5)))
        self.stage3 = nn.Sequential(_conv_dw(128, 256, 2, leaky), _conv_dw(256, 256, 1, leaky))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """B×3×H×W -> (B×64×H/8×W/8, B×128×H/16×W/16, B×256×H/32×W/32), sizes rounded up."""
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        return c3, c4, self.stage3(c4)


class FPN(nn.Module):
    """Top-down feature pyramid: 1×1 laterals, nearest upsampling, 3×3 merges."""

    def __init__(self, in_channels: tuple[int, int, int], channels: int, leaky: float) -> None:
        super().__init__()
        self.output1 = _conv_bn(in_channels[0], channels, kernel=1, leaky=leaky)
        self.output2 = _conv_bn(in_channels[1], channels, kernel=1, leaky=leaky)
        self.output3 = _conv_bn(in_channels[2], channels, kernel=1, leaky=leaky)
        self.merge1 = _conv_bn(channels, channels, leaky=leaky)
        self.merge2 = _conv_bn(channels, channels, leaky=leaky)

    def forward(self, features: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """Three B×C_i×H_i×W_i maps -> three B×channels×H_i×W_i maps."""
        p3, p4, p5 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        p4 = self.merge2(p4 + F.interpolate(p5, size=p4.shape[-2:], mode="nearest"))
        p3 = self.merge1(p3 + F.interpolate(p4, size=p3.shape[-2:], mode="nearest"))
        return [p3, p4, p5]


class SSH(nn.Module):
    """SSH context module: concatenated 3×3, 5×5 and 7×7 (stacked 3×3) branches, ReLU."""

    def __init__(self, channels: int, leaky: float) -> None:
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.conv3X3 = _conv_bn(channels, half, leaky=None)
        self.conv5X5_1 = _conv_bn(channels, quarter, leaky=leaky)
        self.conv5X5_2 = _conv_bn(quarter, quarter, leaky=None)
        self.conv7X7_2 = _conv_bn(quarter, quarter, leaky=leaky)
        self.conv7x7_3 = _conv_bn(quarter, quarter, leaky=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×C×H×W -> B×C×H×W."""
        branch5 = self.conv5X5_1(x)
        branch7 = self.conv7x7_3(self.conv7X7_2(branch5))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(branch5), branch7], dim=1))


class _Head(nn.Module):
    """1×1 conv predicting `values` numbers per anchor, flattened to B×(H·W·A)×values."""

    def __init__(self, channels: int, anchors: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1x1(x).permute(0, 2, 3, 1)  # B×(A·V)×H×W -> B×H×W×(A·V)
        return out.reshape(out.shape[0], -1, self.values)  # anchors ordered row, column, anchor


class RetinaFace(nn.Module):
    """RetinaFace-MobileNet0.25 returning raw per-anchor outputs."""

    def __init__(self, config: RetinaFaceConfig | None = None) -> None:
        super().__init__()
        self.config = config or RetinaFaceConfig()
        width, leaky = self.config.channels, self.config.leaky
        per_cell = len(self.config.min_sizes[0])
        self.body = MobileNetV1Body(leaky)
        self.fpn = FPN((64, 128, 256), width, leaky)
        self.ssh1, self.ssh2, self.ssh3 = (SSH(width, leaky) for _ in range(3))
        self.ClassHead = nn.ModuleList(_Head(width, per_cell, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(width, per_cell, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(width, per_cell, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Runs the detector.

        Args:
            x: B×3×H×W float, BGR 0–255 minus `config.pixel_mean_bgr`.

        Returns:
            offsets: B×N×4 box offsets from the anchors (see `decode`).
            logits: B×N×2 (background, face) logits.
            landmarks: B×N×10 point offsets from the anchors, 5 (x, y) pairs.
            N = Σ_levels 2·⌈H/step⌉·⌈W/step⌉, in `anchors` order.
        """
        levels = [ssh(p) for ssh, p in zip((self.ssh1, self.ssh2, self.ssh3), self.fpn(self.body(x)))]
        offsets = torch.cat([head(p) for head, p in zip(self.BboxHead, levels)], dim=1)
        logits = torch.cat([head(p) for head, p in zip(self.ClassHead, levels)], dim=1)
        landmarks = torch.cat([head(p) for head, p in zip(self.LandmarkHead, levels)], dim=1)
        return offsets, logits, landmarks


def convert_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Maps a Pytorch_Retinaface state dict to this module's keys.

    The layouts match; checkpoints saved from `nn.DataParallel` carry a `module.`
    prefix, which is removed. Anything else left over fails the strict load.
    """
    return {key.removeprefix("module."): value for key, value in state.items()}
