"""Calibration batches for static-shape quantization.

Turning images into normalised crops is the caller's job (`faceptor_edge.preprocess`);
this only cuts an N×3×S×S tensor into the exported program's static batch size.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from faceptor_edge.errors import UserError


def check_calibration(images: torch.Tensor) -> None:
    """Raise UserError unless `images` is a non-empty N×3×H×W float tensor."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise UserError(f"calibration images must be a non-empty N×3×H×W tensor, got {got}")
    if not images.is_floating_point():
        raise UserError(f"calibration images must be float crops, got {images.dtype}")


def calibration_batches(images: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    """Split N calibration crops into batches of exactly `batch_size`.

    Static-shape programs take only their export batch size, so a short last batch is
    filled from the first images (wrapping around); every image is seen at least once.

    Args:
        images: N×3×H×W float crops, normalised as the model expects.
        batch_size: The exported program's batch size.

    Yields:
        batch_size×3×H×W float32 tensors, ceil(N / batch_size) of them.
    """
    check_calibration(images)
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    images = images.detach().float()
    count = len(images)
    for start in range(0, count, batch_size):
        index = torch.arange(start, start + batch_size) % count
        yield images[index]


def calibration_arrays(images: torch.Tensor, batch_size: int) -> list[np.ndarray]:
    """`calibration_batches` as float32 numpy arrays (the input NNCF datasets iterate)."""
    return [batch.numpy() for batch in calibration_batches(images, batch_size)]
