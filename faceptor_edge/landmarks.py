"""Heatmap → landmark soft-argmax shared by the teacher and the student (SPEC §4.5)."""

from __future__ import annotations

import torch


def soft_argmax(heatmap: torch.Tensor) -> torch.Tensor:
    """Landmarks from heatmap logits.

    Args:
        heatmap: B×N×h×w raw logits.

    Returns:
        B×N×2 points (x, y) normalised to [0, 1] over the crop: ((x̂+0.5)/w, (ŷ+0.5)/h)
        with x̂, ŷ the sigmoid-weighted mean pixel position (sum clamped at 1e-6).
    """
    _, _, h, w = heatmap.shape
    weights = torch.sigmoid(heatmap)
    total = weights.sum(dim=(2, 3)).clamp_min(1e-6)
    xs = torch.arange(w, dtype=weights.dtype, device=weights.device)
    ys = torch.arange(h, dtype=weights.dtype, device=weights.device)
    x = (weights.sum(dim=2) * xs).sum(dim=-1) / total
    y = (weights.sum(dim=3) * ys).sum(dim=-1) / total
    return torch.stack([(x + 0.5) / w, (y + 0.5) / h], dim=-1)
