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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from faceptor_edge.distill.keys import FEATURE_KEYS, FEATURE_MASK_KEY, STUDENT_IMAGE_KEY, mask_key
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

CV_MAX_CHANNELS = 128  # channels one cv2.warpAffine call takes
MAP_TASKS = frozenset(task.name for task in FULL_TASKS if task.kind == "map")


@dataclass(frozen=True)
class AugmentParams:
    """One face's augmentation; the defaults change nothing.

    Attributes:
        flip: Mirror the crop left-right (before the warp).
        angle: Rotation about the crop centre, degrees, counter-clockwise as seen.
        scale: Zoom about the crop centre (> 1 enlarges the face).
        shift: (dx, dy) translation, fractions of the crop side.
        brightness: Factor on every channel.
        contrast: Blend factor with the mean grey level.
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
    def geometric(self) -> bool:
        """Whether the crop moves (labels follow, encoder tokens no longer hold)."""
        return self.flip or self.angle != 0.0 or self.scale != 1.0 or self.shift != (0.0, 0.0)


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


def _warp_maps(maps: np.ndarray, params: AugmentParams, *, floor: bool) -> np.ndarray:
    """C×m×m maps over the crop, warped on their grid (bilinear, dtype kept); the area from
    outside is mirrored, or with `floor` each channel's minimum."""
    size = maps.shape[-1]
    hwc = np.ascontiguousarray(maps.transpose(1, 2, 0), dtype=np.float32)  # C×m×m -> m×m×C
    low = hwc.min(axis=(0, 1)) if floor else np.zeros(hwc.shape[-1], np.float32)
    border = cv2.BORDER_CONSTANT if floor else cv2.BORDER_REFLECT
    matrix = warp_matrix(params, size)
    chunks = [
        cv2.warpAffine(hwc[..., i : i + CV_MAX_CHANNELS] - low[i : i + CV_MAX_CHANNELS], matrix, (size, size),
                       flags=cv2.INTER_LINEAR, borderMode=border).reshape(size, size, -1)
        for i in range(0, hwc.shape[-1], CV_MAX_CHANNELS)
    ]  # fmt: skip
    return (np.concatenate(chunks, axis=-1) + low).transpose(2, 0, 1).astype(maps.dtype)  # m×m×C -> C×m×m


def _follow(out: dict[str, np.ndarray], task: TaskSpec, params: AugmentParams, size: int) -> None:
    """Carry one map head's labels in `out` through the geometric part of `params`."""
    perm = list(task.flip_perm) if params.flip else slice(None)
    if task.head.is_points and task.name in out:
        points = out[task.name]
        moved = (apply_to_points(warp_matrix(params, size), points * size - 0.5) + 0.5) / size
        out[task.name] = moved.astype(points.dtype)[perm]
        if heatmap_key(task.name) in out:
            out[heatmap_key(task.name)] = _warp_maps(out[heatmap_key(task.name)], params, floor=True)[perm]
    elif task.head.is_channels_last and task.name in out:
        out[task.name] = _warp_maps(out[task.name], params, floor=False)[perm]
    mask = out.get(mask_key(task.name))
    if mask is not None and mask.ndim == 1:  # one flag per point or class moves with it
        out[mask_key(task.name)] = mask[perm]


def augment_image(image: np.ndarray, params: AugmentParams) -> np.ndarray:
    """The photometric part of `params` on an S×S×3 uint8 RGB image, in a fixed order: hue
    and saturation, brightness and contrast, greyscale, blur, noise, JPEG."""
    levels = np.arange(256, dtype=np.float32)
    if params.hue != 0.0 or params.saturation != 1.0:  # the HSV round trip itself loses a little
        hue = np.rint(levels + 180 * params.hue) % 180  # OpenCV's uint8 hue is degrees / 2
        lut = np.stack([hue, np.clip(np.rint(levels * params.saturation), 0, 255), levels], axis=-1)
        hsv = cv2.LUT(cv2.cvtColor(image, cv2.COLOR_RGB2HSV), lut.astype(np.uint8)[None])  # 1×256×3 table
        image = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    mean = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean()
    lut = np.clip(np.rint(params.brightness * (params.contrast * levels + (1 - params.contrast) * mean)), 0, 255)
    image = cv2.LUT(image, lut.astype(np.uint8))
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
            C×M×M logits, value and embedding heads, `<task>/mask`, optional `FEATURE_KEYS`.
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
        size = image.shape[0]
        image = cv2.warpAffine(image, warp_matrix(params, size), (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)  # fmt: skip
        for task in (task for task in tasks if task.kind == "map"):
            _follow(out, task, params, size)
    features = [key for key in FEATURE_KEYS if key in item]
    if features:
        valid = np.asarray(item.get(FEATURE_MASK_KEY, 1.0), np.float32)
        out[FEATURE_MASK_KEY] = valid * np.float32(not params.geometric)
        if params.geometric:
            out.update({key: np.zeros_like(item[key]) for key in features})
    out[STUDENT_IMAGE_KEY] = augment_image(image, params)
    return out
