"""Teacher outputs for distillation, in the form the cache stores and the losses read.

Per face: the student's input crop (uint8) and every teacher head, with map outputs
brought to the student's grids: parsing logits at the student's map grid and landmark
heatmap logits at a coarser `heatmap_grid` (the coordinates carry the precision).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from faceptor_edge.data import FaceSample
from faceptor_edge.distill.devices import Precision, autocast
from faceptor_edge.distill.keys import FEATURE_KEYS, FEATURE_MASK_KEY, STUDENT_IMAGE_KEY, mask_key
from faceptor_edge.preprocess import Box, FaceCrops, box_from_points, box_to_crop, prepare_face
from faceptor_edge.recipe import InputRecipe
from faceptor_edge.specialists.teacher import SpecialistTeacher
from faceptor_edge.student.inputs import student_crop
from faceptor_edge.tasks import FULL_TASKS, heatmap_key
from faceptor_edge.teacher import FaceptorTeacher


@dataclass(frozen=True)
class CropRecipe:
    """How faces become teacher and student inputs; part of the cache identity."""

    teacher_dense_size: int
    student_size: int = 256
    dense_scale: float = 0.8
    map_grid: int = 64
    heatmap_grid: int = 32

    def teacher_crops(self, sample: FaceSample) -> FaceCrops:
        return prepare_face(
            sample.image, box=sample.box, points5=sample.points5,
            dense_size=self.teacher_dense_size, dense_scale=self.dense_scale,
        )  # fmt: skip

    @property
    def student_input(self) -> InputRecipe:
        """The student's crop (its side and scale; normalisation happens in training)."""
        return InputRecipe(size=self.student_size, crop_scale=self.dense_scale)

    def student_crop(self, sample: FaceSample) -> np.ndarray:
        """The student's input: the same dense crop at student_size, S×S×3 uint8."""
        return student_crop(sample, self.student_input)

    def framed_face(self, sample: FaceSample) -> tuple[np.ndarray, Box | None]:
        """The student's input (as `student_crop`) and where the face is in its pixels: the box
        fitted to the 5 points when known (they follow the face through augmentation, while
        the framing box stays), else the given box; None when neither is known."""
        frame = sample.box if sample.box is not None else None
        if frame is None and sample.points5 is not None:
            frame = box_from_points(sample.points5)
        crop = self.student_input.crop(sample.image, box=frame)
        face = box_from_points(sample.points5) if sample.points5 is not None else frame
        return crop.uint8(), None if face is None else box_to_crop(face, crop.matrix)


def _resize(maps: torch.Tensor, size: int) -> torch.Tensor:
    if maps.shape[-1] == size:
        return maps
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False, antialias=size < maps.shape[-1])


@torch.inference_mode()
def teacher_outputs(
    teacher: FaceptorTeacher,
    samples: Sequence[FaceSample],
    recipe: CropRecipe,
    *,
    features: bool = False,
    device: torch.device | None = None,
    precision: Precision = "fp32",
) -> dict[str, np.ndarray]:
    """Run the teacher on a batch of faces (on `device`, autocast to `precision`).

    Returns:
        `student/image` B×S×S×3 uint8; value and embedding heads float32 as in
        `forward_raw`; `parsing_*` B×C×M×M float16 logits (M = map_grid, channels first);
        `align_*` B×N×2 float32; `align_*/heatmap` B×N×H×H float16 (H = heatmap_grid);
        with `features`, the layer-11 tokens of both groups (`FEATURE_KEYS`) as float16:
        the dense group's B×768×s×s (s = student_size / 16), the 112 group's B×768×7×7; and
        per head (and `FEATURE_MASK_KEY`) a B float32 mask: 0 for a sample whose image could
        not be read (`FaceSample.problem`), 1 otherwise.
    """
    device = device or torch.device("cpu")
    crops = [recipe.teacher_crops(sample) for sample in samples]
    x112 = torch.from_numpy(np.stack([c.x112 for c in crops])).to(device)
    x512 = torch.from_numpy(np.stack([c.x512 for c in crops])).to(device)
    with autocast(device, precision):
        raw = teacher.forward_raw(x112, x512, with_features=features, parsing_size=recipe.map_grid)
    raw = {key: value.float().cpu() for key, value in raw.items()}
    valid = np.array([sample.problem is None for sample in samples], np.float32)
    out = {STUDENT_IMAGE_KEY: np.stack([recipe.student_crop(sample) for sample in samples])}
    out.update({mask_key(task.name): valid for task in teacher.config.tasks})
    for task in teacher.config.tasks:
        value = raw[task.name]
        if task.head.is_channels_last:
            out[task.name] = value.permute(0, 3, 1, 2).numpy().astype(np.float16)  # B×M×M×C -> B×C×M×M
        elif task.head.is_points:
            out[task.name] = value.numpy().astype(np.float32)
            heatmap = _resize(raw[heatmap_key(task.name)], recipe.heatmap_grid)
            out[heatmap_key(task.name)] = heatmap.numpy().astype(np.float16)
        else:
            out[task.name] = value.numpy().astype(np.float32)
    if features:
        dense, value = FEATURE_KEYS
        out[dense] = _resize(raw[dense], recipe.student_size // 16).numpy().astype(np.float16)
        out[value] = raw[value].numpy().astype(np.float16)
        out[FEATURE_MASK_KEY] = valid
    return out


def specialist_outputs(
    teacher: SpecialistTeacher, samples: Sequence[FaceSample], recipe: CropRecipe
) -> dict[str, np.ndarray]:
    """Specialist labels for a batch of faces, in `teacher_outputs`' layout plus `<task>/mask`
    arrays. A face with no known box or points (no face detected) gets all-zero masks."""
    framed = [recipe.framed_face(sample) for sample in samples]
    out: dict[str, list[np.ndarray]] = {}
    masks = {mask_key(task.name) for task in FULL_TASKS}
    for image, box in framed:
        # undetected: label a central box, then mask it all out
        labels = teacher.label(image, box or recipe.student_input.central_box(),
                               map_grid=recipe.map_grid, heatmap_grid=recipe.heatmap_grid)  # fmt: skip
        for key, value in labels.items():
            out.setdefault(key, []).append(value * 0 if box is None and key in masks else value)
    images = np.stack([image for image, _ in framed])
    return {STUDENT_IMAGE_KEY: images, **{key: np.stack(values) for key, values in out.items()}}
