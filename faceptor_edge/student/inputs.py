"""The student's one input: the teacher's dense-group face crop at the student's size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from faceptor_edge.data import FaceSample
from faceptor_edge.preprocess import CLIP_MEAN, CLIP_STD, prepare_face


def student_crop(sample: FaceSample, *, size: int = 256, scale: float = 0.8) -> np.ndarray:
    """size×size×3 uint8: the dense crop (box crop at `scale`, or the whole pre-cropped image)."""
    crops = prepare_face(sample.image, box=sample.box, points5=sample.points5, dense_size=size, dense_scale=scale)
    return crops.crop512.uint8()


def student_crops(samples: Sequence[FaceSample], *, size: int = 256, scale: float = 0.8) -> np.ndarray:
    """B×size×size×3 uint8 crops of several faces."""
    return np.stack([student_crop(sample, size=size, scale=scale) for sample in samples])


def normalise(images: np.ndarray) -> torch.Tensor:
    """B×S×S×3 uint8 crops -> B×3×S×S float32 with CLIP mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std
