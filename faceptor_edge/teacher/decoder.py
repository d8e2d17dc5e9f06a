"""Faceptor's task-query transformer decoder (SPEC §3).

Each task owns a set of learned queries. The queries cross-attend a memory of projected
encoder tokens (one or more encoder levels, each with a level embedding), then attend to
each other, then pass an FFN; all three sub-layers are post-norm. Nine such layers.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def anchor_features(side: int, dim: int = 256, *, device: torch.device | None = None) -> torch.Tensor:
    """Sine features of the token centres of an S×S grid (SPEC §3.3, before adapt_pos2d).

    Returns:
        S²×dim: per token (y, x), [e(y) ‖ e(x)] with interleaved sin/cos, y first.
    """
    half = dim // 2
    centres = (torch.arange(side, dtype=torch.float32, device=device) + 0.5) / side
    n = torch.arange(half, dtype=torch.float32, device=device)
    freqs = 10000 ** (2 * torch.div(n, 2, rounding_mode="floor") / half)
    angles = 2 * math.pi * centres[:, None] / freqs  # S×half
    enc = torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=2).flatten(1)  # S×half
    y = enc[:, None, :].expand(side, side, half)
    x = enc[None, :, :].expand(side, side, half)
    return torch.cat([y, x], dim=-1).reshape(side * side, dim)


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt, query_pos, memory, memory_pos):
        out = self.multihead_attn(tgt + query_pos, memory + memory_pos, memory, need_weights=False)[0]
        return self.norm(tgt + out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt, query_pos):
        q = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, q, tgt, need_weights=False)[0])


class FFNLayer(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tgt):
        return self.norm(tgt + self.linear2(torch.relu(self.linear1(tgt))))


class TaskQueryDecoder(nn.Module):
    """Decoder shared by all tasks; only the queries are task specific.

    Args:
        query_counts: Decoder task name -> number of queries, in official order.
        levels: Encoder blocks whose tokens form the memory (`input_proj`, `level_embed`).
        new_levels: Extra Layer-Attention blocks (`new_input_proj`, `new_level_embed`).
    """

    def __init__(
        self,
        *,
        query_counts: dict[str, int],
        levels: tuple[int, ...],
        new_levels: tuple[int, ...],
        in_dim: int,
        dim: int,
        heads: int,
        ffn_dim: int,
        num_layers: int,
    ) -> None:
        super().__init__()
        self.levels = levels
        self.new_levels = new_levels
        self.query_feat = nn.ModuleDict({name: nn.Embedding(q, dim) for name, q in query_counts.items()})
        self.query_embed = nn.ModuleDict({name: nn.Embedding(q, dim) for name, q in query_counts.items()})
        self.level_embed = nn.Embedding(len(levels), dim)
        self.input_proj = nn.ModuleList(nn.Conv2d(in_dim, dim, 1) for _ in levels)
        if new_levels:
            self.new_level_embed = nn.Embedding(len(new_levels), dim)
            self.new_input_proj = nn.ModuleList(nn.Conv2d(in_dim, dim, 1) for _ in new_levels)
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, heads) for _ in range(num_layers)
        )
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, heads) for _ in range(num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(dim, ffn_dim) for _ in range(num_layers))
        self.adapt_pos2d = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def build_memory(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project the selected encoder levels into decoder memory.

        Args:
            features: Per-block encoder maps, each B×768×S×S.

        Returns:
            memory B×(L·S²)×256, its position B-broadcastable 1×(L·S²)×256, and the
            projected last-level tokens `src` B×S²×256 (no position term) for map heads.
        """
        side = features[0].shape[-1]
        anchor = self.adapt_pos2d(anchor_features(side, device=features[0].device))  # S²×256
        projections = [(proj, features[j], self.level_embed.weight[i]) for i, (proj, j) in
                       enumerate(zip(self.input_proj, self.levels))]  # fmt: skip
        if self.new_levels:
            projections += [(proj, features[j], self.new_level_embed.weight[i]) for i, (proj, j) in
                            enumerate(zip(self.new_input_proj, self.new_levels))]  # fmt: skip
        memory, pos = [], []
        for proj, feature, level_embedding in projections:
            memory.append(proj(feature).flatten(2).transpose(1, 2))  # B×256×S×S -> B×S²×256
            pos.append(anchor + level_embedding)
        return torch.cat(memory, dim=1), torch.cat(pos, dim=0)[None], memory[0]

    def forward(self, task: str, memory: torch.Tensor, memory_pos: torch.Tensor) -> torch.Tensor:
        """Run one task's queries through the layers.

        Args:
            task: Decoder task name.
            memory: B×T×256; memory_pos: 1×T×256.

        Returns:
            B×Q×256 decoded queries.
        """
        batch = memory.shape[0]
        tgt = self.query_feat[task].weight.expand(batch, -1, -1)
        query_pos = self.query_embed[task].weight.expand(batch, -1, -1)
        for cross, self_attn, ffn in zip(
            self.transformer_cross_attention_layers,
            self.transformer_self_attention_layers,
            self.transformer_ffn_layers,
        ):
            tgt = cross(tgt, query_pos, memory, memory_pos)
            tgt = self_attn(tgt, query_pos)
            tgt = ffn(tgt)
        return tgt
