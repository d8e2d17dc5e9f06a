"""The Faceptor teacher: config, model and one builder per official variant."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from faceptor_edge.landmarks import soft_argmax
from faceptor_edge.tasks import BASE_TASKS, FULL_TASKS, TaskSpec, heatmap_key
from faceptor_edge.teacher.decoder import TaskQueryDecoder
from faceptor_edge.teacher.heads import EmbeddingHead, MapHead, ValueHead, parsing_output
from faceptor_edge.teacher.vit import VisionTransformer

Variant = Literal["base", "full", "full_layer_attention"]


@dataclass(frozen=True)
class TeacherConfig:
    """Everything that shapes a Faceptor teacher (SPEC §2.1, §3.1).

    `dense_size` is the input side of the 512 group. 512 is official; any multiple of 16
    works because the position table is resized on every forward, at a fidelity cost.
    """

    variant: Variant
    tasks: tuple[TaskSpec, ...]
    levels: tuple[int, ...] = (11,)
    new_levels: tuple[int, ...] = ()
    width: int = 768
    layers: int = 12
    heads: int = 12
    patch_size: int = 16
    position_grid: int = 32
    decoder_dim: int = 256
    decoder_heads: int = 8
    decoder_ffn_dim: int = 2048
    decoder_layers: int = 9
    face_size: int = 112
    dense_size: int = 512

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(task.name for task in self.tasks)


class FaceptorTeacher(nn.Module):
    """ViT-B/16 encoder + task-query decoder + shared interpreters.

    The model only predicts: `forward_raw` returns the official raw outputs; decoding
    lives in `faceptor_edge.decode`.
    """

    def __init__(self, config: TeacherConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = VisionTransformer(
            width=config.width,
            layers=config.layers,
            heads=config.heads,
            patch_size=config.patch_size,
            grid=config.position_grid,
        )
        self.decoder = TaskQueryDecoder(
            query_counts={t.name: t.num_queries for t in config.tasks if t.kind != "embedding"},
            levels=config.levels,
            new_levels=config.new_levels,
            in_dim=config.width,
            dim=config.decoder_dim,
            heads=config.decoder_heads,
            ffn_dim=config.decoder_ffn_dim,
            num_layers=config.decoder_layers,
        )
        self.embedding_head = EmbeddingHead(config.width)
        self.value_head = ValueHead(config.decoder_dim)
        self.map_head = MapHead(config.decoder_dim)

    @property
    def variant(self) -> Variant:
        return self.config.variant

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.config.task_names

    def forward_raw(
        self,
        x112: torch.Tensor | None,
        x_dense: torch.Tensor | None,
        *,
        feature_layers: Collection[int] = (),
        parsing_size: int | None = None,
        tasks: Collection[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Raw outputs of every head, keyed by official task name.

        Args:
            x112: B×3×112×112 aligned faces normalised 0.5/0.5, or None to skip that group.
            x_dense: B×3×D×D dense crops (D = config.dense_size) with CLIP normalisation, or None.
            feature_layers: Also return these encoder blocks' maps as `"encoder/<group>/layer<i>"`
                (B×768×S×S), e.g. (11,) for feature distillation.
            parsing_size: Side of the parsing logits; default (official) the input side D.
            tasks: Run only these heads (official names; default all), e.g. the dense heads
                of one framing (`faceptor_edge.frames`).

        Returns:
            `recog_*` B×512, `age_*` B×101, `biattr_celeba` B×40, `affect_*` B×7,
            `parsing_*` B×P×P×C logits (channels last, P = parsing_size or D), `align_*` B×N×2 normalised (x, y),
            and `"<align task>/heatmap"` B×N×(D/4)×(D/4) logits.
        """
        outputs: dict[str, torch.Tensor] = {}
        for group, image in (("face112", x112), ("face512", x_dense)):
            chosen = [t for t in self.config.tasks if t.input_group == group and (tasks is None or t.name in tasks)]
            if image is None or not chosen:
                continue
            features = self.encoder(image)  # once per group, shared by its heads
            outputs.update({f"encoder/{group}/layer{i}": features[i] for i in feature_layers})
            outputs.update(self._run_group(chosen, features, parsing_size or image.shape[-1]))
        return outputs

    def _run_group(self, tasks: list[TaskSpec], features: list[torch.Tensor], size: int) -> dict[str, torch.Tensor]:
        memory, memory_pos, src = self.decoder.build_memory(features)
        pixels = None
        outputs = {}
        for task in tasks:
            if task.kind == "embedding":
                outputs[task.name] = self.embedding_head(features[-1])
                continue
            queries = self.decoder(task.name, memory, memory_pos)
            if task.kind == "value":
                outputs[task.name] = self.value_head(queries)
                continue
            if pixels is None:
                pixels = self.map_head.pixel_features(src, features[-1].shape[-1])
            logits = self.map_head(queries, pixels)
            if task.head.is_points:
                outputs[task.name] = soft_argmax(logits)
                outputs[heatmap_key(task.name)] = logits
            else:
                outputs[task.name] = parsing_output(logits, size)
        return outputs


def _build(
    variant: Variant, tasks: tuple[TaskSpec, ...], *, new_levels: tuple[int, ...] = (), dense_size: int = 512
) -> FaceptorTeacher:
    if dense_size % 16 or dense_size <= 0:
        raise ValueError(f"dense_size must be a positive multiple of 16, got {dense_size}")
    return FaceptorTeacher(TeacherConfig(variant=variant, tasks=tasks, new_levels=new_levels, dense_size=dense_size))


def build_faceptor_base(*, dense_size: int = 512) -> FaceptorTeacher:
    """Faceptor-Base: stage 1, 7 heads."""
    return _build("base", BASE_TASKS, dense_size=dense_size)


def build_faceptor_full(*, dense_size: int = 512) -> FaceptorTeacher:
    """Faceptor-Full ("plus"): stage 1, 13 heads."""
    return _build("full", FULL_TASKS, dense_size=dense_size)


def build_faceptor_full_layer_attention(*, dense_size: int = 512) -> FaceptorTeacher:
    """Stage-2 Layer-Attention: Full heads, memory also from blocks 1, 3, 5, 7, 9."""
    return _build("full_layer_attention", FULL_TASKS, new_levels=(1, 3, 5, 7, 9), dense_size=dense_size)


VARIANT_TASKS: dict[str, tuple[TaskSpec, ...]] = {
    "base": BASE_TASKS,
    "full": FULL_TASKS,
    "full_layer_attention": FULL_TASKS,
}

teacher_builders = {
    "base": build_faceptor_base,
    "full": build_faceptor_full,
    "full_layer_attention": build_faceptor_full_layer_attention,
}
