"""Heatmap → landmark soft-argmax shared by the teacher and the student (SPEC §4.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_argmax(heatmap: torch.Tensor, *, grid_product: bool = False) -> torch.Tensor:
    """Landmarks from heatmap logits.

    Args:
        heatmap: B×N×h×w raw logits.
        grid_product: Take the weight sum and the two first moments as one product with a
            constant hw×3 (1, x, y) grid, a linear layer XNNPACK delegates (it takes no
            `sum`); the export graph for ExecuTorch sets it. Same values to float rounding.

    Returns:
        B×N×2 points (x, y) normalised to [0, 1] over the crop: ((x̂+0.5)/w, (ŷ+0.5)/h)
        with x̂, ŷ the sigmoid-weighted mean pixel position (sum clamped at 1e-6).
    """
    b, n, h, w = heatmap.shape
    if not grid_product:
        weights = torch.sigmoid(heatmap)
        total = weights.sum(dim=(2, 3)).clamp_min(1e-6)
        xs = torch.arange(w, dtype=weights.dtype, device=weights.device)
        ys = torch.arange(h, dtype=weights.dtype, device=weights.device)
        x = (weights.sum(dim=2) * xs).sum(dim=-1) / total
        y = (weights.sum(dim=3) * ys).sum(dim=-1) / total
        return torch.stack([(x + 0.5) / w, (y + 0.5) / h], dim=-1)
    weights = torch.sigmoid(heatmap).flatten(2)  # B×N×h×w -> B×N×hw
    xs = torch.arange(w, device=weights.device).repeat(h).to(weights.dtype)  # cast: Core ML's arange is int
    ys = torch.arange(h, device=weights.device).repeat_interleave(w).to(weights.dtype)
    grid = torch.stack([torch.ones_like(xs), xs, ys])  # 3×hw
    moments = F.linear(weights, grid)  # B×N×3
    total = moments[..., :1].clamp_min(1e-6)
    x, y = moments[..., 1:2] / total, moments[..., 2:3] / total
    return torch.cat([(x + 0.5) / float(w), (y + 0.5) / float(h)], dim=-1).view(b, n, 2)  # float scalars: no casts
