"""The teacher's inputs made on its device: per-face crops from loader workers, labels that
never leave the device.

A loader worker turns one face sample into `face_inputs`: the student's crop (augmented,
uint8), a patch of the photo around the face (uint8, `patch_side` px whatever the photo's
size, so a batch stacks and a 12-MP photo never leaves the worker), and the geometry of
everything the teacher sees, as small matrices and grids computed from the face's 5 points
moved by the one augmentation sampled for that face. On the device, `teacher_labels` samples
the teacher's crops from the patches (`grid_sample`, the LaPa tanh warp included), runs the
teacher in chunks of `batch_size` faces, and carries its outputs into the student's frame.
The labels are those of `distill.labels.teacher_outputs` on the same augmented face (tests
compare them), in its keys and layouts, as device tensors.

Augmentation: the geometric part W (defined on the student's crop, `augment.warp_matrix`)
moves the face in the photo by G = C⁻¹WC (C: the student's crop), so the student's crop of
the moved face is exactly the augmented crop, and every teacher frame is rebuilt from the
moved 5 points. The photometric part touches the student's crop only, as in cache mode: the
teacher describes the face, not the noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from faceptor_edge.data import FaceSample
from faceptor_edge.distill.augment import AugmentParams, augment_image, warp_matrix
from faceptor_edge.distill.devices import AutocastDtype, autocast
from faceptor_edge.distill.keys import FEATURE_KEYS, FEATURE_MASK_KEY, STUDENT_IMAGE_KEY, coverage_key, mask_key
from faceptor_edge.distill.labels import TEACHER_BATCH, CropRecipe, dense_groups, teacher_points
from faceptor_edge.frames import FRAMES, Frame, sampling_grid
from faceptor_edge.preprocess import ARCFACE_TEMPLATE_112, CLIP_MEAN, CLIP_STD, similarity_matrix
from faceptor_edge.tasks import TaskSpec, heatmap_key
from faceptor_edge.teacher import FaceptorTeacher

POINTS5_FLIP = (1, 0, 2, 4, 3)  # the 5 points' order after a mirror: image-left eye <-> image-right eye, ...
# Two patches of the photo per face, in student-frame sides: the near one, at the dense frames'
# pixel density, holds every box frame, the 112 alignment and the CelebA-HQ square of a moved
# face; the far one, at a quarter of that density, the outer ring of LaPa's tanh-warped crop,
# which reaches ~3.5 face boxes from the centre but is squeezed there to a few pixels per box.
PATCH_SPAN = 2.5
FAR_SPAN = 8.0
ALIGN = "arcface112"  # the 112 group's frame, beside the dense frames (`frames.FRAMES`)


def patch_side(recipe: CropRecipe) -> int:
    """Side of the near photo patch shipped per face: at the dense frames' (and the 112
    alignment's) pixel density. The far patch is half as wide."""
    return 2 * max(recipe.teacher_dense_size, recipe.student_size)


@dataclass(frozen=True)
class Plan:
    """What the teacher needs of every face: its dense frames, each with the grids its heads'
    outputs are carried on, and whether the layer-11 tokens are kept."""

    frames: tuple[str, ...]
    grids: dict[str, tuple[int, ...]]
    features: bool

    @staticmethod
    def source_side(frame: str, grid: int, recipe: CropRecipe) -> int:
        """Side of the teacher's map carried onto `grid`: layer-11 tokens (D/16) on the token
        grid, else heatmaps and parsing logits (D/4)."""
        tokens = frame == "box0.8" and grid == recipe.student_size // 16
        return recipe.teacher_dense_size // (16 if tokens else 4)

    @classmethod
    def of(cls, tasks: Sequence[TaskSpec], recipe: CropRecipe, *, features: bool) -> Plan:
        groups = dense_groups(tasks)
        grids = {}
        for spec, heads in groups.items():
            sizes = {recipe.heatmap_grid if t.head.is_points else recipe.map_grid for t in heads}
            if features and spec is FRAMES["box0.8"]:
                sizes.add(recipe.student_size // 16)
            grids[spec.name] = tuple(sorted(sizes))
        return cls(tuple(spec.name for spec in groups), grids, features)


def face_inputs(sample: FaceSample, recipe: CropRecipe, plan: Plan, params: AugmentParams | None) -> dict:
    """One face as a loader worker ships it (numpy; `collate_inputs` stacks a batch).

    Keys: `STUDENT_IMAGE_KEY` S×S×3 uint8; `patch` K×K×3 uint8 (K = `patch_side`); `valid`
    float32; per frame f (`ALIGN` and `plan.frames`) `frame/f` 3×3 float32, teacher crop pixels
    (before the tanh warp) -> patch pixels; per dense frame and grid g `grid/f/g` g×g×2
    float32 (`frames.sampling_grid` into the student's frame) and `cells/f/g` (source map cells
    per target cell); per box frame `points/f` 3×3, normalised points -> normalised student points.
    """
    image, student = recipe.student_frame(sample)  # C: photo -> student crop
    size = recipe.student_size
    move = np.eye(3)  # G: photo -> moved photo
    if params is not None and params.geometric:
        warp = np.vstack([warp_matrix(params, size), [0, 0, 1]])
        move = np.linalg.inv(student.matrix) @ warp @ student.matrix
        image = cv2.warpAffine(sample.image, (warp @ student.matrix)[:2], (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip
    if params is not None:
        image = augment_image(image, params)
    if sample.points5 is not None:
        points = _apply(move, np.asarray(sample.points5, np.float64))
        points = points[list(POINTS5_FLIP)] if params is not None and params.flip else points
    else:  # a whole face without points: the template on the (unmoving) student frame
        points = teacher_points(sample, student)
    patch, to_near = _patch(sample.image, student, patch_side(recipe), PATCH_SPAN)
    far, to_far = _patch(sample.image, student, patch_side(recipe) // 2, FAR_SPAN)
    to_patch = to_near @ np.linalg.inv(move)  # moved photo -> near patch
    valid = sample.problem is None and (sample.points5 is not None or sample.box is not None)
    out = {STUDENT_IMAGE_KEY: image, "patch": patch, "far": far, "valid": np.float32(valid)}
    out["far/matrix"] = (to_far @ np.linalg.inv(to_near)).astype(np.float32)  # near patch -> far patch pixels
    aligned = similarity_matrix(points, np.asarray(ARCFACE_TEMPLATE_112))
    out[f"frame/{ALIGN}"] = (to_patch @ np.linalg.inv(aligned)).astype(np.float32)
    for name in plan.frames:
        frame = FRAMES[name].frame(points, recipe.teacher_dense_size)
        out[f"frame/{name}"] = (to_patch @ np.linalg.inv(frame.matrix)).astype(np.float32)
        for grid in plan.grids[name]:
            out[f"grid/{name}/{grid}"] = sampling_grid(frame, student, grid)
            out[f"cells/{name}/{grid}"] = _cells(frame, student, grid) * plan.source_side(name, grid, recipe)
        if not frame.warp:
            out[f"points/{name}"] = _points_matrix(frame, student).astype(np.float32)
    return out


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _patch(photo: np.ndarray, student: Frame, side: int, sides: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo around the student's frame (`sides` of its side, black beyond the photo),
    resized to side×side (area average when shrinking), and the 3×3 map photo -> patch pixels."""
    centre = _apply(np.linalg.inv(student.matrix), np.array([[(student.size - 1) / 2] * 2]))[0]
    span = max(1, round(sides * student.size / np.sqrt(abs(np.linalg.det(student.matrix[:2, :2])))))
    x0, y0 = np.round(centre - span / 2).astype(int)
    height, width = photo.shape[:2]
    region = np.zeros((span, span, 3), np.uint8)
    top, left, bottom, right = max(0, y0), max(0, x0), min(height, y0 + span), min(width, x0 + span)
    if bottom > top and right > left:
        region[top - y0 : bottom - y0, left - x0 : right - x0] = photo[top:bottom, left:right]
    scale = side / span
    patch = cv2.resize(region, (side, side), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    # cv2.resize: patch pixel u samples region pixel (u + 0.5)/scale − 0.5
    to_patch = np.array([[scale, 0, (0.5 - x0) * scale - 0.5], [0, scale, (0.5 - y0) * scale - 0.5], [0, 0, 1]])
    return patch, to_patch


def _cells(source: Frame, target: Frame, grid: int) -> float:
    """Source crop pixels per target grid cell at the frames' centres, over the source crop's side
    (times a source map's side: its cells per target cell, as `labels._pooling` computes them)."""
    scale = np.sqrt(abs(np.linalg.det(source.matrix[:2, :2])) / abs(np.linalg.det(target.matrix[:2, :2])))
    return scale * target.size / grid / source.size


def _points_matrix(source: Frame, target: Frame) -> np.ndarray:
    """3×3: points normalised to the source crop -> normalised to the target crop (affine frames)."""
    to_pixels = np.array([[source.size, 0, -0.5], [0, source.size, -0.5], [0, 0, 1]])
    to_normalised = np.array([[1 / target.size, 0, 0.5 / target.size], [0, 1 / target.size, 0.5 / target.size],
                              [0, 0, 1]])  # fmt: skip
    return to_normalised @ target.matrix @ np.linalg.inv(source.matrix) @ to_pixels


def collate_inputs(items: Sequence[dict]) -> dict:
    """`DataLoader` collate of `face_inputs`: B×... tensors, and under `pool` the average-pooling
    factor of each carried map (`labels._pooling`: whole source cells per target cell, the
    batch's fewest), so the device never asks the host."""
    cells = [key for key in items[0] if key.startswith("cells/")]
    batch = {key: torch.from_numpy(np.stack([item[key] for item in items])) for key in items[0] if key not in cells}
    batch["pool"] = {key[len("cells/") :]: max(1, int(np.floor(min(item[key] for item in items)))) for key in cells}
    return batch


def _tanh_unwarp(n: torch.Tensor, warp: float) -> torch.Tensor:
    """`frames._tanh_warp(inverse=True)` on normalised crop coordinates n in [−1, 1]."""
    inner = 1.0 - warp
    excess = ((n.abs() - inner) / warp).clamp(-0.999, 0.999)
    return torch.where(n.abs() > inner, n.sign() * (torch.atanh(excess) * warp + inner), n)


def sample_crops(batch: dict, frames: torch.Tensor, size: int, warp: float = 0.0) -> torch.Tensor:
    """Teacher crops from a batch's patches: B×3×size×size in [0, 1]. Crop pixel q samples near
    patch pixel A·q (A = `frames`, B×3×3; q unwarped first for a tanh frame), or the far patch
    where A·q lies beyond the near one; bilinear, black beyond the photo, as
    `frames.Frame.crop` samples it."""
    pixels = torch.arange(size, device=frames.device, dtype=torch.float32)
    if warp:
        pixels = (_tanh_unwarp(pixels / size * 2 - 1, warp) + 1) / 2 * size
    v, u = torch.meshgrid(pixels, pixels, indexing="ij")
    grid = torch.stack([u, v, torch.ones_like(u)], -1).reshape(1, -1, 3)  # 1×size²×3 (u, v, 1)
    where = grid @ frames[:, :2].transpose(1, 2)  # B×size²×2 near-patch pixels
    near = _sample(batch["patch"], where)
    margin = 1.0  # a bilinear tap beyond the near patch would read its black border
    inside = ((where >= margin - 0.5) & (where <= batch["patch"].shape[1] - 0.5 - margin)).all(-1)
    far_matrix = batch["far/matrix"]
    far = _sample(batch["far"], where @ far_matrix[:, :2, :2].transpose(1, 2) + far_matrix[:, None, :2, 2])
    crops = torch.where(inside[:, None], near, far)
    return crops.reshape(-1, 3, size, size) / 255.0


def _sample(patches: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """B×K×K×3 uint8 patches at B×N×2 pixel positions -> B×3×N float (bilinear, 0 outside)."""
    grid = ((where + 0.5) / patches.shape[1] * 2 - 1)[:, None]  # B×1×N×2
    values = F.grid_sample(patches.permute(0, 3, 1, 2).float(), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)  # fmt: skip
    return values[:, :, 0]


def _normalised(crops: torch.Tensor, mean, std) -> torch.Tensor:
    """B×3×H×W (crops − mean) / std per channel, with Python numbers: nothing copied to the device."""
    return torch.cat([(crops[:, c : c + 1] - m) / s for c, (m, s) in enumerate(zip(mean, std))], 1)


@torch.no_grad()  # not inference mode: the labels are the targets of the student's autograd graph
def teacher_labels(
    teacher: FaceptorTeacher,
    batch: dict[str, torch.Tensor],
    recipe: CropRecipe,
    plan: Plan,
    *,
    precision: AutocastDtype = "fp32",
    batch_size: int = TEACHER_BATCH,
) -> dict[str, torch.Tensor]:
    """Teacher outputs of a collated batch of `face_inputs` on the teacher's device, in
    `teacher_outputs`' keys and layouts (float32 maps; the student's crops as given)."""
    device = next(teacher.parameters()).device
    pool = batch["pool"]
    batch = {key: value.to(device, non_blocking=True) for key, value in batch.items() if key != "pool"}
    count = len(batch["valid"])
    chunks = [_label_chunk(teacher, {**{k: v[i : i + batch_size] for k, v in batch.items()}, "pool": pool}, recipe,
                           plan, precision) for i in range(0, count, batch_size)]  # fmt: skip
    out = {key: torch.cat([chunk[key] for chunk in chunks]) for key in chunks[0]}
    out[STUDENT_IMAGE_KEY] = batch[STUDENT_IMAGE_KEY]
    out.update({mask_key(task.name): batch["valid"] for task in teacher.config.tasks})
    if plan.features:
        out[FEATURE_MASK_KEY] = batch["valid"]
    return out


def cache_arrays(labels: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """`teacher_labels` as the cache stores them (`teacher_outputs`' dtypes: maps, coverage and
    tokens in float16), on the host."""
    arrays = {key: value.cpu().numpy() for key, value in labels.items()}
    return {key: array.astype(np.float16) if _stored_half(key) else array for key, array in arrays.items()}


def _stored_half(key: str) -> bool:
    return not key.endswith("/mask") and (key.startswith(("parsing_", "encoder/")) or key.endswith("/heatmap"))


def _label_chunk(
    teacher: FaceptorTeacher, batch: dict, recipe: CropRecipe, plan: Plan, precision: AutocastDtype
) -> dict:
    device = batch["patch"].device
    x112 = sample_crops(batch, batch[f"frame/{ALIGN}"], 112)
    x112 = _normalised((x112 * 255).round() / 255, (0.5,) * 3, (0.5,) * 3)  # uint8 crop, as `align_112` makes it
    out = {}
    layers = (11,) if plan.features else ()
    with autocast(device, precision):
        raw = teacher.forward_raw(x112, None, feature_layers=layers)
    for task in (t for t in teacher.config.tasks if t.input_group == "face112"):
        out[task.name] = raw[task.name].float()
    if plan.features:
        out[FEATURE_KEYS[1]] = raw[FEATURE_KEYS[1]].float()
    size = recipe.teacher_dense_size
    for spec, tasks in dense_groups(teacher.config.tasks).items():
        x = sample_crops(batch, batch[f"frame/{spec.name}"], size, spec.warp)
        tokens = plan.features and spec is FRAMES["box0.8"]
        with autocast(device, precision):
            raw = teacher.forward_raw(None, _normalised(x, CLIP_MEAN, CLIP_STD), feature_layers=(11,) if tokens else (),
                                      parsing_size=size // 4, tasks={t.name for t in tasks})  # fmt: skip
        for task in tasks:
            out.update(_carried(task, raw, batch, spec.name, recipe))
        if tokens:
            grid = recipe.student_size // 16
            out[FEATURE_KEYS[0]], _ = _carry(raw[FEATURE_KEYS[0]], batch, spec.name, grid)
    return out


def _carry(values: torch.Tensor, batch: dict, frame: str, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`labels.carry_maps` on the shipped grids: B×C×h×w -> B×C×grid×grid and B×grid×grid coverage."""
    factor = batch["pool"][f"{frame}/{grid}"]
    if factor > 1:
        values = F.avg_pool2d(values, factor, ceil_mode=True)
    where = batch[f"grid/{frame}/{grid}"]
    carried = F.grid_sample(values.float(), where, mode="bilinear", padding_mode="border", align_corners=False)
    return carried, (where.abs() <= 1).all(-1).float()


def _carried(task: TaskSpec, raw: dict[str, torch.Tensor], batch: dict, frame: str, recipe: CropRecipe) -> dict:
    """One dense head's outputs over its own frames, carried into the student's frames."""
    if task.head.is_points:
        matrix = batch[f"points/{frame}"]
        points = raw[task.name].float() @ matrix[:, :2, :2].transpose(1, 2) + matrix[:, None, :2, 2]
        heatmap, _ = _carry(raw[heatmap_key(task.name)], batch, frame, recipe.heatmap_grid)
        return {task.name: points, heatmap_key(task.name): heatmap}
    logits = raw[task.name].permute(0, 3, 1, 2)  # grid_sample resamples B×C×P×P; kept channels last again
    maps, coverage = _carry(logits, batch, frame, recipe.map_grid)
    return {task.name: maps.permute(0, 2, 3, 1), coverage_key(task.name): coverage}
