"""The official-implementation fixtures (tests/data, copied from shared/faceptor/fixtures).

Inputs are regenerated here from FIXTURE.md's rules; weights come from the same rules
through `faceptor_edge.teacher.demo`, filled over the manifest's own key list.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch

from faceptor_edge.teacher.demo import deterministic_state, splitmix_uniform

DATA = Path(__file__).parent / "data"
VARIANTS = ("base", "full", "full_layer_attention")


def manifest_layout(variant: str) -> dict[str, tuple[int, ...]]:
    """Official key -> shape, in checkpoint order, from the fixture manifest."""
    manifest = json.loads((DATA / f"manifest_{variant}.json").read_text())
    return {entry["key"]: tuple(entry["shape"]) for entry in manifest["tensors"]}


def manifest_state(variant: str) -> dict[str, np.ndarray]:
    """The deterministic official weights for every key the manifest lists."""
    return deterministic_state(manifest_layout(variant))


def reference(variant: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"reference_{variant}.npz") as archive:
        return dict(archive)


def fixture_input(side: int) -> torch.Tensor:
    """2×3×side×side: sample 0 splitmix noise, sample 1 the smooth pattern (FIXTURE.md)."""
    amplitude = 1.0 if side == 112 else 2.0
    u = splitmix_uniform(zlib.crc32(f"input_{side}".encode()), 3 * side * side)
    noise = (amplitude * (2.0 * u - 1.0)).reshape(3, side, side)
    yy, xx = np.meshgrid(np.linspace(-1, 1, side), np.linspace(-1, 1, side), indexing="ij")
    pattern = np.stack([np.sin(3 * xx + 1) * np.cos(2 * yy), 2 * np.exp(-4 * (xx**2 + yy**2)) - 1, xx * yy])
    if side == 512:
        pattern = 2.0 * pattern
    return torch.from_numpy(np.stack([noise, pattern]).astype(np.float32))
