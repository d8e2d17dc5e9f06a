"""Augmentation of cached teacher outputs that keeps the distillation labels true.

One cached face (no batch axis) is augmented in the student's crop: a horizontal flip and a
small similarity warp move the image and every landmark and map label together (points
through the matrix, points and parsing classes reordered by `TaskSpec.flip_perm`); then
photometric changes touch the image only. All randomness is drawn once into `AugmentParams`
from `augment_rng(seed, step, item)`, so a resumed run repeats it exactly.

What a warp brings in from outside the crop:
- image and parsing logits: `cv2.BORDER_REFLECT`, mirrored about the crop's edge. On every
  grid that is the same line (normalised x = 0 or 1), so the parsing labels of the mirrored
  area are those of the mirrored pixels (`BORDER_REFLECT_101` mirrors about the first pixel
  centre, a different line on a 64-cell map than on the 256-px image); and mirrored texture
  looks like a photo where replicated edge pixels make streaks.
- landmark heatmaps: each channel's minimum, the teacher's "no point here"; a landmark is
  one point, and a mirrored heatmap would put a ghost peak beside a point near the edge.

ViT tokens (`FEATURE_KEYS`) do not follow a flip or a warp: a geometric augmentation zeroes
them and sets `FEATURE_MASK_KEY` to 0. The keys stay so that items still collate.

Photometric changes are mild, but cached labels of colour and sharpness (CelebA's Blurry, hair
colours, Pale_Skin) still describe the unaugmented face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from faceptor_edge.distill.keys import FEATURE_KEYS, FEATURE_MASK_KEY, STUDENT_IMAGE_KEY, coverage_key, mask_key
from faceptor_edge.tasks import FULL_TASKS, TaskSpec, heatmap_key

# Geometry (about the crop centre; shifts are fractions of the crop side, per axis).
FLIP_P = 0.5
WARP_P = 0.5
MAX_ROTATION = 15.0  # degrees
SCALE_RANGE = (0.9, 1.1)
MAX_SHIFT = 0.05
# Photometry: factors drawn from 1 ± the value, hue in turns of the colour wheel.
BRIGHTNESS = 0.25
CONTRAST = 0.25
SATURATION = 0.3
HUE = 0.04
GREY_P = 0.05
BLUR_P = 0.1
BLUR_SIGMA = (0.5, 1.5)  # pixels of the 256-px crop
NOISE_P = 0.2
NOISE_SIGMA = (2.0, 8.0)  # grey levels, one luminance noise field for all three channels
JPEG_P = 0.3
JPEG_QUALITY = (40, 95)

MAP_TASKS = frozenset(task.name for task in FULL_TASKS if task.kind == "map")


@dataclass(frozen=True)
class AugmentParams:
    """One face's augmentation; the defaults change nothing.

    Attributes:
        flip: Mirror the crop left-right (before the warp).
        angle: Rotation about the crop centre, degrees, counter-clockwise as seen.
        scale: Zoom about the crop centre (> 1 enlarges the face).
        shift: (dx, dy) translation, fractions of the crop side.
        brightness: Factor on HSV value (on every channel).
        contrast: Factor on the spread of HSV value about its mean.
        saturation: Factor on HSV saturation.
        hue: HSV hue rotation, turns of the colour wheel.
        grey: Make the image greyscale (still 3 channels).
        blur_sigma: Gaussian blur σ in pixels; 0 for none.
        noise_sigma: Gaussian luminance noise σ in grey levels; 0 for none.
        noise_seed: Seed of the noise field.
        jpeg_quality: JPEG re-compression quality; None for none.
    """

    flip: bool = False
    angle: float = 0.0
    scale: float = 1.0
    shift: tuple[float, float] = (0.0, 0.0)
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0
    grey: bool = False
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    noise_seed: int = 0
    jpeg_quality: int | None = None

    @property
    def warped(self) -> bool:
        """Whether the crop rotates, scales or shifts."""
        return self.angle != 0.0 or self.scale != 1.0 or self.shift != (0.0, 0.0)

    @property
    def geometric(self) -> bool:
        """Whether the crop moves at all (labels follow, encoder tokens no longer hold)."""
        return self.flip or self.warped


def augment_rng(seed: int, step: int, item: int) -> np.random.Generator:
    """The generator of one face's augmentation: a pure function of seed, step and item index."""
    return np.random.default_rng([seed, step, item])


def sample_params(rng: np.random.Generator) -> AugmentParams:
    """Draw one face's augmentation (the module constants give the ranges). Every value is
    drawn whether or not its change applies, so the stream's layout never shifts."""
    flip, warp, grey, blur, noise, jpeg = rng.random(6) < (FLIP_P, WARP_P, GREY_P, BLUR_P, NOISE_P, JPEG_P)
    angle, scale, dx, dy = rng.uniform((-MAX_ROTATION, SCALE_RANGE[0], -MAX_SHIFT, -MAX_SHIFT),
                                       (MAX_ROTATION, SCALE_RANGE[1], MAX_SHIFT, MAX_SHIFT))  # fmt: skip
    brightness, contrast, saturation, hue = rng.uniform((1 - BRIGHTNESS, 1 - CONTRAST, 1 - SATURATION, -HUE),
                                                        (1 + BRIGHTNESS, 1 + CONTRAST, 1 + SATURATION, HUE))  # fmt: skip
    blur_sigma, noise_sigma = rng.uniform(*BLUR_SIGMA), rng.uniform(*NOISE_SIGMA)
    noise_seed, quality = int(rng.integers(2**31)), int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    return AugmentParams(
        flip=bool(flip),
        angle=float(angle) if warp else 0.0,
        scale=float(scale) if warp else 1.0,
        shift=(float(dx), float(dy)) if warp else (0.0, 0.0),
        brightness=float(brightness),
        contrast=float(contrast),
        saturation=float(saturation),
        hue=float(hue),
        grey=bool(grey),
        blur_sigma=float(blur_sigma) if blur else 0.0,
        noise_sigma=float(noise_sigma) if noise else 0.0,
        noise_seed=noise_seed,
        jpeg_quality=quality if jpeg else None,
    )


def warp_matrix(params: AugmentParams, size: int) -> np.ndarray:
    """2×3 float64 map from original to augmented pixel coordinates of a side-`size` grid over
    the crop, pixel centres at integers (u = size·x − 0.5 for normalised x): the flip, then
    rotation and scale about the centre, then the shift. Every grid (the image, a parsing or
    heatmap grid) gets the same transform of normalised coordinates."""
    c = size / 2 - 0.5
    matrix = cv2.getRotationMatrix2D((c, c), params.angle, params.scale)
    if params.flip:
        matrix = matrix @ np.array([[-1.0, 0.0, 2 * c], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # u -> 2c − u first
    matrix[:, 2] += np.multiply(params.shift, size)
    return matrix


def apply_to_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """N×2 points (x, y) through a 2×3 affine matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def _warp(hwc: np.ndarray, params: AugmentParams, border: int) -> np.ndarray:
    """An m×m(×C) array over the crop through `warp_matrix` on its own grid; bilinear, C ≤ 128."""
    size = hwc.shape[0]
    return cv2.warpAffine(hwc, warp_matrix(params, size), (size, size), flags=cv2.INTER_LINEAR, borderMode=border)


def _cast(array: np.ndarray, dtype: np.typing.DTypeLike) -> np.ndarray:
    """A contiguous array in another float dtype, through torch: numpy's float16 casts are ~10× slower."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(getattr(torch, np.dtype(dtype).name)).numpy()


def _move_maps(maps: np.ndarray, params: AugmentParams, *, floor: bool) -> np.ndarray:
    """m×m×C maps (channels last; or one m×m map) over the crop through the geometry of `params`
    (dtype kept); the area from outside the crop is mirrored, or with `floor` each channel's minimum."""
    if not params.warped:  # a flip alone: every row reversed, exact (as the warp would be) and fast
        return np.ascontiguousarray(maps[:, ::-1])
    values = _cast(maps, np.float32)
    if floor:  # warp each channel's excess over its minimum, zero outside the crop
        low = values.min(axis=(0, 1))
        moved = _warp(values - low, params, cv2.BORDER_CONSTANT).reshape(maps.shape) + low
    else:
        moved = _warp(values, params, cv2.BORDER_REFLECT).reshape(maps.shape)
    return _cast(moved, maps.dtype)


def _follow(out: dict[str, np.ndarray], task: TaskSpec, params: AugmentParams, size: int) -> None:
    """Carry one map head's labels in `out` through the geometric part of `params`."""
    perm = list(task.flip_perm) if params.flip else slice(None)
    if task.head.is_points and task.name in out:
        points = out[task.name]
        moved = (apply_to_points(warp_matrix(params, size), points * size - 0.5) + 0.5) / size
        out[task.name] = moved.astype(points.dtype)[perm]
        if heatmap_key(task.name) in out:  # N×H×H, one map per point
            heatmaps = _move_maps(out[heatmap_key(task.name)].transpose(1, 2, 0), params, floor=True)
            out[heatmap_key(task.name)] = np.ascontiguousarray(heatmaps.transpose(2, 0, 1)[perm])
    elif task.head.is_channels_last and task.name in out:
        out[task.name] = np.ascontiguousarray(_move_maps(out[task.name], params, floor=False)[..., perm])
        if coverage_key(task.name) in out:  # the cells the teacher saw move (and mirror) with its logits
            out[coverage_key(task.name)] = _move_maps(out[coverage_key(task.name)], params, floor=False)
    mask = out.get(mask_key(task.name))
    if mask is not None and mask.ndim == 1:  # one flag per point or class moves with it
        out[mask_key(task.name)] = mask[perm]


def augment_image(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """The photometric part of `params` on an S×S×3 uint8 RGB image, in a fixed order: colour
    (one lookup table in HSV: hue, saturation, brightness, and contrast of V about its mean),
    greyscale, blur, noise, JPEG."""
    if (params.hue, params.saturation, params.brightness, params.contrast) != (0.0, 1.0, 1.0, 1.0):
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)  # uint8 hue is degrees / 2; the round trip loses a little
        levels = np.arange(256, dtype=np.float32)
        hue = np.rint(levels + 180 * params.hue) % 180
        mean = cv2.mean(hsv)[2]
        value = params.brightness * (params.contrast * levels + (1 - params.contrast) * mean)
        lut = np.clip(np.rint(np.stack([hue, levels * params.saturation, value], axis=-1)), 0, 255)
        image = cv2.cvtColor(cv2.LUT(hsv, lut.astype(np.uint8)[None]), cv2.COLOR_HSV2RGB)  # 1×256×3 table
    if params.grey:
        image = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    if params.blur_sigma > 0:
        image = cv2.GaussianBlur(image, (0, 0), params.blur_sigma)
    if params.noise_sigma > 0:
        field = np.random.default_rng(params.noise_seed).standard_normal(image.shape[:2], dtype=np.float32)
        noise = np.rint(params.noise_sigma * field).astype(np.int16)[..., None]  # S×S×1, same on R, G, B
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    if params.jpeg_quality is not None:
        _, data = cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, params.jpeg_quality]
        )
        image = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return image


def augment_item(
    item: dict[str, np.ndarray], tasks: Sequence[TaskSpec], params: AugmentParams
) -> dict[str, np.ndarray]:
    """One cached face, augmented; a new dict (`item` and its arrays are left as they are).

    Args:
        item: One face's teacher outputs (no batch axis): `STUDENT_IMAGE_KEY` S×S×3 uint8,
            landmark heads N×2 normalised points and N×H×H heatmap logits, parsing heads
            M×M×C logits (channels last), value and embedding heads, `<task>/mask`, optional `FEATURE_KEYS`.
        tasks: The heads whose labels the item may hold.
        params: The augmentation (`sample_params`).

    Returns:
        The same keys: the image warped and recoloured, map heads' labels following the
        warp, value and embedding heads and masks as they were (per-point masks reordered by
        a flip); with features, `FEATURE_MASK_KEY` 0 and zeroed tokens after a geometric
        change, else the stored mask (1 when none is stored).

    Raises:
        ValueError: The item holds map labels of a head not in `tasks` (they could not follow).
    """
    out = dict(item)
    image = item[STUDENT_IMAGE_KEY]
    if params.geometric:
        unknown = {key.split("/")[0] for key in item} & (MAP_TASKS - {task.name for task in tasks})
        if unknown:
            raise ValueError(f"labels of {sorted(unknown)} cannot follow the warp: their TaskSpecs were not given")
        image = _warp(image, params, cv2.BORDER_REFLECT) if params.warped else cv2.flip(image, 1)
        for task in (task for task in tasks if task.kind == "map"):
            _follow(out, task, params, image.shape[0])
    features = [key for key in FEATURE_KEYS if key in item]
    if features:
        valid = np.asarray(item.get(FEATURE_MASK_KEY, 1.0), np.float32)
        out[FEATURE_MASK_KEY] = valid * np.float32(not params.geometric)
        if params.geometric:
            out.update({key: np.zeros_like(item[key]) for key in features})
    out[STUDENT_IMAGE_KEY] = augment_image(image, params)
    return out
