"""FaRL ViT-B/16 encoder as Faceptor uses it: per-block feature maps, no CLS, no ln_post (SPEC §2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: x + MHA(ln_1(x)), then x + MLP(ln_2(x))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×L×D -> B×L×D."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))


class VisionTransformer(nn.Module):
    """Patch embedding, resizable position table and the block stack.

    The position table is stored at the training grid (32×32 for 512 px) and resized
    bicubically on every forward to the input's grid, as the official model does.
    """

    def __init__(self, *, width: int, layers: int, heads: int, patch_size: int, grid: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = grid
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width, eps=1e-5)
        self.transformer = Transformer(width, layers, heads)

    def position_table(self, side: int) -> torch.Tensor:
        """(side²+1)×D table: CLS row kept, grid rows bicubically resized (no antialias)."""
        cls_row, grid_rows = self.positional_embedding[:1], self.positional_embedding[1:]
        width = grid_rows.shape[-1]
        grid_rows = grid_rows.reshape(1, self.grid, self.grid, width).permute(0, 3, 1, 2)
        grid_rows = F.interpolate(grid_rows, size=(side, side), mode="bicubic", align_corners=False)
        grid_rows = grid_rows.permute(0, 2, 3, 1).reshape(side * side, width)  # row-major (y, x)
        return torch.cat([cls_row, grid_rows], dim=0)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encode a normalised image.

        Args:
            image: B×3×H×W with H = W a multiple of the patch size.

        Returns:
            One B×D×S×S map per block (S = H / patch), taken after the block, CLS dropped.
        """
        x = self.conv1(image)  # B×D×S×S
        batch, width, side, _ = x.shape
        x = x.flatten(2).transpose(1, 2)  # B×S²×D
        cls = self.class_embedding.expand(batch, 1, width)
        x = torch.cat([cls, x], dim=1) + self.position_table(side)
        x = self.ln_pre(x)
        features = []
        for block in self.transformer.resblocks:
            x = block(x)
            # B×S²×D -> B×D×S×S
            features.append(x[:, 1:].transpose(1, 2).reshape(batch, width, side, side))
        return features
