"""Light version of Faceptor's task-query decoder, written with export-safe ops only.

Attention is plain matmul + softmax (no fused kernels), so torch.export lowers it the
same way for ExecuTorch/XNNPACK, Core ML and OpenVINO.
"""

from __future__ import annotations

import torch
from torch import nn


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.reshape(batch, length, self.heads, dim // self.heads).transpose(1, 2)  # B×h×L×d

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """query B×Q×D, key/value B×T×D -> B×Q×D."""
        q, k, v = self._split(self.q(query)), self._split(self.k(key)), self._split(self.v(value))
        weights = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)  # B×h×Q×T
        out = (weights @ v).transpose(1, 2)  # B×Q×h×d
        return self.out(out.reshape(query.shape))


class DecoderLayer(nn.Module):
    """Cross-attention to the image tokens, self-attention among queries, FFN; post-norm as in Faceptor."""

    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.cross = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Linear(ffn_dim, dim))
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self, tgt: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        """tgt, query_pos: B×Q×D; memory B×T×D; memory_pos 1×T×D -> B×Q×D."""
        tgt = self.norm1(tgt + self.cross(tgt + query_pos, memory + memory_pos, memory))
        q = tgt + query_pos
        tgt = self.norm2(tgt + self.self_attn(q, q, tgt))
        return self.norm3(tgt + self.ffn(tgt))


class QueryDecoder(nn.Module):
    """All tasks' queries decoded together in one pass (one query block per decoder task)."""

    def __init__(self, *, num_queries: int, num_tokens: int, dim: int, heads: int, ffn_dim: int, layers: int) -> None:
        super().__init__()
        self.query_feat = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.query_pos = nn.Parameter(torch.randn(num_queries, dim) * 0.02)
        self.memory_pos = nn.Parameter(torch.randn(1, num_tokens, dim) * 0.02)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim) for _ in range(layers))

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        """memory: B×T×D image tokens -> B×Q×D decoded queries."""
        batch = memory.shape[0]
        tgt = self.query_feat.expand(batch, -1, -1)
        query_pos = self.query_pos.expand(batch, -1, -1)
        for layer in self.layers:
            tgt = layer(tgt, query_pos, memory, self.memory_pos)
        return tgt
