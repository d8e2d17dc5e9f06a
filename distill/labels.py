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
from faceptor_edge.distill.devices import AutocastDtype, autocast
from faceptor_edge.distill.keys import FEATURE_KEYS, FEATURE_MASK_KEY, STUDENT_IMAGE_KEY, coverage_key, mask_key
from faceptor_edge.frames import FRAMES, Frame, FrameSpec, carry_points, head_frame, sampling_grid
from faceptor_edge.preprocess import (
    ARCFACE_TEMPLATE_112,
    CLIP_MEAN,
    CLIP_STD,
    TEMPLATE_FACE_BOX_CENTRE,
    TEMPLATE_FACE_BOX_SIDE,
    Box,
    align_112,
    box_from_points,
    box_to_crop,
    normalise_pixels,
    to_tensor_input,
)
from faceptor_edge.recipe import InputRecipe
from faceptor_edge.specialists.teacher import SpecialistTeacher
from faceptor_edge.student.inputs import student_crop
from faceptor_edge.tasks import FULL_TASKS, TaskSpec, heatmap_key
from faceptor_edge.teacher import FaceptorTeacher

TEACHER_FRAMING = "faceptor-per-head"  # SPEC §6.2's framing per dense head (`faceptor_edge.frames`)
# Faces per teacher forward: at 512 px in bf16 the ViT-B/16's activations (1,025 tokens, SDPA
# attention) and the map heads' B×256×128×128 pixel features stay a few GB on a 24 GB card.
TEACHER_BATCH = 64


@dataclass(frozen=True)
class CropRecipe:
    """How faces become teacher and student inputs; part of the cache identity.

    The student sees one frame of each face (`student_frame`): the square 300W-tight box of
    its 5 points (or its given box) scaled by `student_scale`, at `student_size`. A Faceptor
    teacher sees each face as it was trained: the 112 group ArcFace-aligned, each dense head
    in its own framing (`faceptor_edge.frames`); its outputs are then carried into the
    student's frame.
    """

    teacher_dense_size: int
    student_size: int = 256
    student_scale: float = 0.8
    map_grid: int = 64
    heatmap_grid: int = 32
    teacher_framing: str = TEACHER_FRAMING

    @property
    def student_input(self) -> InputRecipe:
        """The student's crop (its side and scale; normalisation happens in training)."""
        return InputRecipe(size=self.student_size, crop_scale=self.student_scale)

    def student_frame(self, sample: FaceSample) -> tuple[np.ndarray, Frame]:
        """The student's input, S×S×3 uint8, and its frame (`student_crop`'s framing)."""
        crop = self.student_input.crop(sample.image, box=framing_box(sample))
        return crop.uint8(), Frame(crop.matrix, crop.size)

    def student_crop(self, sample: FaceSample) -> np.ndarray:
        """The student's input: S×S×3 uint8 (`student.inputs.student_crop`)."""
        return student_crop(sample, self.student_input)

    def framed_face(self, sample: FaceSample) -> tuple[np.ndarray, Box | None]:
        """The student's input (as `student_crop`) and where the face is in its pixels: the box
        fitted to the 5 points when known (they follow the face through augmentation, while
        the framing box stays), else the given box; None when neither is known."""
        image, frame = self.student_frame(sample)
        face = box_from_points(sample.points5) if sample.points5 is not None else sample.box
        return image, None if face is None else box_to_crop(face, frame.matrix)


def framing_box(sample: FaceSample) -> Box | None:
    """The box the student's crop of a sample is framed on: its given box, else the box fitted
    to its 5 points, else None (the whole image)."""
    if sample.box is not None:
        return sample.box
    return None if sample.points5 is None else box_from_points(sample.points5)


def teacher_points(sample: FaceSample, frame: Frame) -> np.ndarray:
    """5 points the teacher frames a sample on: its own, else the ArcFace template placed on
    the student frame's central face box (a whole pre-cropped face)."""
    if sample.points5 is not None:
        return np.asarray(sample.points5, np.float64)
    side = frame.size * 0.8  # the template face box fills the crop at the 300W scale
    template = (np.asarray(ARCFACE_TEMPLATE_112) - np.asarray(TEMPLATE_FACE_BOX_CENTRE)) * side / TEMPLATE_FACE_BOX_SIDE
    return frame.crop_to_image(template + (frame.size - 1) / 2)


def _normalised(frame: Frame, image: np.ndarray) -> np.ndarray:
    """3×D×D CLIP-normalised teacher input of one face in `frame`."""
    return np.ascontiguousarray(normalise_pixels(frame.crop(image), CLIP_MEAN, CLIP_STD).transpose(2, 0, 1))


def _pooling(sources: Sequence[Frame], targets: Sequence[Frame], grid: int, values: int) -> int:
    """Whole source-map cells per target cell (≥ 1), from the frames' scales at their centres:
    maps are average-pooled by this before sampling, so a coarse target grid does not alias."""
    ratios = [np.sqrt(abs(np.linalg.det(s.matrix[:2, :2])) / abs(np.linalg.det(t.matrix[:2, :2])))
              * (t.size / grid) * (values / s.size) for s, t in zip(sources, targets)]  # fmt: skip
    return max(1, int(np.floor(min(ratios))))


def carry_maps(
    values: torch.Tensor, sources: Sequence[Frame], targets: Sequence[Frame], grid: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """B×C×h×w maps over each face's `sources` frame -> B×C×grid×grid over its `targets` frame,
    bilinear through the frames' geometry (the inverse tanh warp included) on the maps'
    device, with the edge values beyond the source crop; and B×grid×grid coverage, 1 where
    the target cell lies inside the source crop."""
    factor = _pooling(sources, targets, grid, values.shape[-1])
    if factor > 1:
        values = F.avg_pool2d(values, factor, ceil_mode=True)
    where = torch.from_numpy(np.stack([sampling_grid(s, t, grid) for s, t in zip(sources, targets)]))
    where = where.to(values.device)
    carried = F.grid_sample(values.float(), where, mode="bilinear", padding_mode="border", align_corners=False)
    return carried, (where.abs() <= 1).all(-1).float()


def dense_groups(tasks: Sequence[TaskSpec]) -> dict[FrameSpec, list[TaskSpec]]:
    """The teacher's dense heads by framing, in task order: one encoder pass per framing."""
    groups: dict[FrameSpec, list[TaskSpec]] = {}
    for task in (t for t in tasks if t.input_group == "face512"):
        groups.setdefault(head_frame(task.name), []).append(task)
    return groups


@torch.inference_mode()
def teacher_outputs(
    teacher: FaceptorTeacher,
    samples: Sequence[FaceSample],
    recipe: CropRecipe,
    *,
    features: bool = False,
    device: torch.device | None = None,
    precision: AutocastDtype = "fp32",
    batch_size: int = TEACHER_BATCH,
) -> dict[str, np.ndarray]:
    """Run the teacher on a batch of faces (on `device`, autocast to `precision`, at most
    `batch_size` faces per forward), each head on its own framing of each face, and carry its
    outputs into the student's frame.

    Returns:
        `student/image` B×S×S×3 uint8; value and embedding heads float32 as in
        `forward_raw`; `parsing_*` B×M×M×C float16 logits (M = map_grid, channels last, as every
        model outputs them) and
        `parsing_*/coverage` B×M×M float16 (1 where the head's frame saw the cell);
        `align_*` B×N×2 float32 normalised to the student crop; `align_*/heatmap` B×N×H×H
        float16 (H = heatmap_grid); with `features`, the layer-11 tokens of both groups
        (`FEATURE_KEYS`) as float16: the dense group's (from the ×0.8 box frame) B×768×s×s
        (s = student_size / 16), the 112 group's B×768×7×7; and per head (and
        `FEATURE_MASK_KEY`) a B float32 mask: 0 for a sample whose image could not be read
        (`FaceSample.problem`) or with no face found (no points, no box), 1 otherwise.
    """
    if len(samples) > batch_size:
        parts = [teacher_outputs(teacher, samples[i : i + batch_size], recipe, features=features, device=device,
                                 precision=precision, batch_size=batch_size) for i in range(0, len(samples), batch_size)]  # fmt: skip
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    device = device or torch.device("cpu")
    size = recipe.teacher_dense_size
    student = [recipe.student_frame(sample) for sample in samples]
    targets = [frame for _, frame in student]
    points = [teacher_points(sample, frame) for sample, frame in zip(samples, targets)]
    valid = np.array([sample.problem is None and (sample.points5 is not None or sample.box is not None)
                      for sample in samples], np.float32)  # fmt: skip
    out = {STUDENT_IMAGE_KEY: np.stack([image for image, _ in student])}
    out.update({mask_key(task.name): valid for task in teacher.config.tasks})
    x112 = np.stack([to_tensor_input(align_112(s.image, p), "face112") for s, p in zip(samples, points)])
    with autocast(device, precision):
        raw = teacher.forward_raw(torch.from_numpy(x112).to(device), None, feature_layers=(11,) if features else ())
    for task in (t for t in teacher.config.tasks if t.input_group == "face112"):
        out[task.name] = raw[task.name].float().cpu().numpy()
    if features:
        out[FEATURE_KEYS[1]] = raw[FEATURE_KEYS[1]].float().cpu().numpy().astype(np.float16)
    for spec, tasks in dense_groups(teacher.config.tasks).items():
        frames = [spec.frame(p, size) for p in points]
        x = torch.from_numpy(np.stack([_normalised(f, s.image) for f, s in zip(frames, samples)])).to(device)
        with_features = features and spec is FRAMES["box0.8"]
        with autocast(device, precision):
            raw = teacher.forward_raw(None, x, feature_layers=(11,) if with_features else (), parsing_size=size // 4,
                                      tasks={t.name for t in tasks})  # fmt: skip
        for task in tasks:
            out.update(_carried(task, raw, frames, targets, recipe))
        if with_features:
            tokens, _ = carry_maps(raw[FEATURE_KEYS[0]], frames, targets, recipe.student_size // 16)
            out[FEATURE_KEYS[0]] = tokens.cpu().numpy().astype(np.float16)
    if features:
        out[FEATURE_MASK_KEY] = valid
    return out


def _carried(
    task: TaskSpec, raw: dict[str, torch.Tensor], frames: Sequence[Frame], targets: Sequence[Frame], recipe: CropRecipe
) -> dict[str, np.ndarray]:
    """One dense head's outputs over its own frames, carried into the student's frames."""
    if task.head.is_points:
        points = raw[task.name].float().cpu().numpy()
        moved = np.stack([carry_points(p, f, t) for p, f, t in zip(points, frames, targets)]).astype(np.float32)
        heatmap, _ = carry_maps(raw[heatmap_key(task.name)], frames, targets, recipe.heatmap_grid)
        return {task.name: moved, heatmap_key(task.name): heatmap.cpu().numpy().astype(np.float16)}
    logits = raw[task.name].permute(0, 3, 1, 2)  # grid_sample resamples B×C×P×P; stored channels last again
    maps, coverage = carry_maps(logits, frames, targets, recipe.map_grid)
    return {task.name: maps.permute(0, 2, 3, 1).cpu().numpy().astype(np.float16),
            coverage_key(task.name): coverage.cpu().numpy().astype(np.float16)}  # fmt: skip


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
