"""Faceptor's interpreters: embedding, value and map heads, shared across tasks (SPEC §4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EmbeddingHead(nn.Module):
    """Recognition head on the last encoder block: LN, token mean, two Linear+BN (SPEC §4.1)."""

    def __init__(self, in_dim: int = 768, out_dim: int = 512) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim, eps=1e-5)
        self.head = nn.Sequential(
            nn.Linear(in_dim, in_dim, bias=False),
            nn.BatchNorm1d(in_dim, eps=2e-5),
            nn.Linear(in_dim, out_dim, bias=False),
            nn.BatchNorm1d(out_dim, eps=2e-5),
        )

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """feature: B×768×S×S -> B×512 (not normalised)."""
        tokens = self.norm(feature.flatten(2).transpose(1, 2))  # B×S²×768
        return self.head(tokens.mean(dim=1))


class ValueHead(nn.Module):
    """One shared Linear(256→1): each decoded query becomes one logit (SPEC §4.2)."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 1)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        """queries: B×Q×256 -> B×Q logits."""
        return self.fc(queries).squeeze(-1)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a B×C×H×W map, eps 1e-6 (official `Norm2d`)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLP(nn.Module):
    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


class MapHead(nn.Module):
    """Query-embedding × pixel-feature maps at 4× the token grid (SPEC §4.3).

    `pixel_features` is computed once per input group; `forward` is per task.
    """

    def __init__(self, dim: int = 256) -> None:
        super().__init__()
        self.mask_map = nn.Sequential(
            nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2),
            ChannelLayerNorm(dim),
            nn.GELU(),
            nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2),
        )
        self.mask_embed = MLP(dim, 3)

    def pixel_features(self, src: torch.Tensor, side: int) -> torch.Tensor:
        """src: B×S²×256 projected tokens -> B×256×4S×4S."""
        grid = src.transpose(1, 2).reshape(src.shape[0], src.shape[2], side, side)
        return self.mask_map(grid)

    def forward(self, queries: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """queries B×Q×256, pixels B×256×H×W -> B×Q×H×W logits."""
        return torch.einsum("bqc,bchw->bqhw", self.mask_embed(queries), pixels)


def parsing_output(logits: torch.Tensor, size: int) -> torch.Tensor:
    """B×C×h×w logits -> B×size×size×C, bilinear (align_corners=False), channels last (SPEC §4.4).

    Upsampling (the official case) is plain bilinear; a smaller `size` is antialiased.
    """
    downsample = size < logits.shape[-1]
    logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False, antialias=downsample)
    return logits.permute(0, 2, 3, 1)
