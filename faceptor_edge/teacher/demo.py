"""Deterministic stand-in weights for the Faceptor teacher (fixtures/FIXTURE.md).

The "demo" teacher is the official architecture filled from each tensor's key name.
It reproduces the official implementation's outputs for these weights, so it proves
the teacher is faithful and makes the pipeline runnable without the released
checkpoint. Its outputs mean nothing about faces.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import numpy as np

from faceptor_edge.teacher.checkpoint import load_teacher, official_layout
from faceptor_edge.teacher.model import FaceptorTeacher, Variant

DEMO_NOTICE = "demo teacher: deterministic stand-in weights, its outputs mean nothing about faces"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix_uniform(seed: int, n: int) -> np.ndarray:
    """n uniforms in [0, 1) from a splitmix64 stream: float64, element i from counter i + 1."""
    z = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def deterministic_tensor(key: str, shape: tuple[int, ...]) -> np.ndarray:
    """The FIXTURE.md value of one official tensor, from its key and shape."""
    n = int(np.prod(shape, dtype=np.int64))
    name = key.rsplit(".", 1)[-1]
    if name == "num_batches_tracked":
        return np.zeros(shape, dtype=np.int64)
    r = 2.0 * splitmix_uniform(zlib.crc32(key.encode("utf-8")), n) - 1.0
    if name == "running_var":
        values = 1.0 + 0.5 * np.abs(r)
    elif name == "running_mean":
        values = 0.1 * r
    elif len(shape) <= 1:
        values = 1.0 + 0.2 * r if name == "weight" else 0.1 * r
    else:
        values = r * np.sqrt(3.0 / np.prod(shape[1:]))
    return values.reshape(shape).astype(np.float32)


def deterministic_state(layout: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """Official keys -> deterministic arrays for every entry of a key/shape layout."""
    return {key: deterministic_tensor(key, shape) for key, shape in layout.items()}


def build_demo_teacher(variant: Variant = "full", *, dense_size: int = 512) -> FaceptorTeacher:
    """The official architecture with the deterministic FIXTURE.md weights (a stand-in)."""
    return load_teacher(deterministic_state(official_layout(variant)), dense_size=dense_size)
