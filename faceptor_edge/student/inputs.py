"""The student's one input: the dense face crop its input recipe describes."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from faceptor_edge.recipe import STUDENT_SCALE, Framing, InputRecipe
from faceptor_edge.student.model import ENCODER_NORMALISATION, StudentConfig

if TYPE_CHECKING:  # annotations only: loading a student never imports the face sources (their GANs)
    from faceptor_edge.data import FaceSample


def student_recipe(
    config: StudentConfig, framing: Framing = "detected", crop_scale: float = STUDENT_SCALE
) -> InputRecipe:
    """The input recipe of a student: its size, its encoder's normalisation, its frame (the
    300W-tight box of the 5 points × `crop_scale`), and how the faces it is distilled on were found."""
    mean, std = ENCODER_NORMALISATION[config.encoder]
    return InputRecipe(size=config.input_size, mean=mean, std=std, crop_scale=crop_scale, framing=framing)


def student_crop(sample: FaceSample, recipe: InputRecipe) -> np.ndarray:
    """S×S×3 uint8: the dense crop of a face sample (its box or points, else the whole image)."""
    return recipe.crop(sample.image, box=sample.box, points5=sample.points5).uint8()


def student_crops(samples: Sequence[FaceSample], recipe: InputRecipe) -> np.ndarray:
    """B×S×S×3 uint8 crops of several faces."""
    return np.stack([student_crop(sample, recipe) for sample in samples])


def normalise(images: np.ndarray, recipe: InputRecipe) -> torch.Tensor:
    """B×S×S×3 uint8 crops -> B×3×S×S float32 with the recipe's mean and std, in channels-last
    memory: the student's convolutions run about a quarter faster on it on CPU."""
    return torch.from_numpy(recipe.normalise_channels_last(images)).permute(0, 3, 1, 2)  # B×S×S×3 -> B×3×S×S


def normalise_tensor(images: torch.Tensor, recipe: InputRecipe) -> torch.Tensor:
    """B×S×S×3 uint8 crops on any device -> B×3×S×S float32 in channels-last memory, on that
    device: the same per-channel lookup (and values) as `normalise`."""
    table, channels = _device_table(recipe, images.device)  # 256×3, [0, 1, 2]
    return table[images.long(), channels].permute(0, 3, 1, 2)  # B×S×S×3 -> B×3×S×S


@functools.lru_cache(maxsize=8)
def _device_table(recipe: InputRecipe, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's lookup table and the channel indices, copied to `device` once (not per batch)."""
    return torch.from_numpy(recipe.table).to(device), torch.arange(3, device=device)
