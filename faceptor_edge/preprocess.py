"""Face crops for the two Faceptor input groups, and mapping results back (SPEC §6).

All images are H×W×3 uint8 RGB (see `faceptor_edge.images`). Every crop carries the
3×3 matrix M that maps an original-image pixel (x, y, 1) to crop pixel coordinates,
so crop-frame predictions can be returned to the original image with M⁻¹.

- The 112 group (recognition, age, attributes, expression) gets a 5-point similarity
  alignment to the InsightFace ArcFace template, the layout of the MS1MV3 training
  crops (SPEC §6.1 flags this as the natural in-the-wild choice, an assumption), and
  0.5/0.5 normalisation.
- The dense group (parsing, landmarks) gets the official landmark box crop (SPEC §6.2),
  normalised as the model's `InputRecipe` says (CLIP/FaRL's mean and std for Faceptor).
- Without points or box the image is taken to be a pre-cropped face: it is resized
  whole, aspect not preserved, like the official `Resize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.images import check_image
from faceptor_edge.tasks import InputGroup

FACE112_MEAN = (0.5, 0.5, 0.5)
FACE112_STD = (0.5, 0.5, 0.5)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# InsightFace 5-point template for 112×112 crops: eye centres (image-left first), nose
# tip, mouth corners (image-left first), as (x, y) pixels.
ARCFACE_TEMPLATE_112 = (
    (38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366),
    (41.5493, 92.3655), (70.7299, 92.2041),
)  # fmt: skip

# Square face box, in the template's 112×112 frame, of 300W tightness: the bounding box
# of a mean 68-point (iBUG) frontal face fitted to ARCFACE_TEMPLATE_112 by its eye
# centres, nose tip and mouth corners, measured (centre ≈ (56.7, 79.9), side ≈ 83.4) and
# rounded. 300W test boxes are the 68-point bounding box made square (SPEC §6.2).
TEMPLATE_FACE_BOX_CENTRE = (56.0, 80.0)
TEMPLATE_FACE_BOX_SIDE = 84.0

Box = tuple[float, float, float, float]
# `scale_mu` of Faceptor's 300W, COFW and WFLW crops (SPEC §6.2): every dense crop's default.
LANDMARK_CROP_SCALE = 0.8

_NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "face112": (FACE112_MEAN, FACE112_STD),
    "face512": (CLIP_MEAN, CLIP_STD),
}


@dataclass(frozen=True, eq=False)
class Crop:
    """A square face crop and where it came from.

    Attributes:
        pixels: size×size×3 float32 RGB in [0, 1].
        matrix: 3×3 float64 M mapping original-image pixel (x, y, 1) to crop pixels.
        size: Side of the crop in pixels.
    """

    pixels: np.ndarray
    matrix: np.ndarray
    size: int

    def uint8(self) -> np.ndarray:
        """The pixels as size×size×3 uint8 (rounded), as a camera frame would hold them."""
        return np.clip(np.rint(self.pixels * 255.0), 0, 255).astype(np.uint8)


def align_112(image: np.ndarray, points5: np.ndarray) -> Crop:
    """Aligns a face to the ArcFace 112×112 template with a 5-point similarity.

    The similarity is the least-squares fit (the same solution as InsightFace's
    Umeyama estimate); `cv2.estimateAffinePartial2D` is not used because its RANSAC
    drops noisy points and its refinement stops short of the least-squares optimum.
    The uint8 image is warped bilinearly with a black border, as InsightFace made the
    MS1MV3 crops, then scaled to [0, 1].

    Args:
        image: H×W×3 uint8 RGB.
        points5: 5×2 (x, y): eye centres, nose tip, mouth corners, image-left first.

    Returns:
        The 112-px crop.
    """
    image = check_image(image)
    matrix = similarity_matrix(_as_points5(points5), np.asarray(ARCFACE_TEMPLATE_112))
    return _warp_uint8(image, matrix, 112)


def box_crop(image: np.ndarray, box: Box, *, size: int = 512, scale: float = LANDMARK_CROP_SCALE) -> Crop:
    """The official landmark crop of a face box (SPEC §6.2, `align_test_transform`).

    C maps the box onto the crop, `u = (x − x1)·size/(x2 − x1) − 0.5` (same for v);
    T scales about the crop centre, `u' = scale·(u − c) + c` with c = (size − 1)/2;
    M = T·C. The [0, 1] float image is warped with `cv2.warpAffine` (bilinear, black
    border), which matches the official `cv2.remap` sampling M⁻¹ at each crop pixel to
    float rounding, under 1e-5 (checked in the tests). M is kept in float64; the
    official float32 M moves sample points by under 1e-4 px.

    Args:
        image: H×W×3 uint8 RGB.
        box: (x1, y1, x2, y2) in image pixels. Note the order: the official code
            stores (y1, x1, y2, x2).
        size: Crop side in pixels.
        scale: `scale_mu`; 0.8 for 300W, COFW and WFLW, 1.0 for AFLW-19.

    Returns:
        The crop.
    """
    image = check_image(image)
    x1, y1, x2, y2 = _as_box(box)
    _check_size(size)
    if not np.isfinite(scale) or scale <= 0:
        raise UserError(f"crop scale must be positive, got {scale}")
    matrix = box_crop_matrix((x1, y1, x2, y2), size, scale)
    return _make_crop(_warp_unit(image, matrix, size), matrix, size)


def box_crop_matrix(box: Box, size: int, scale: float) -> np.ndarray:
    """The 3×3 M = T·C of `box_crop` (its docstring) for a valid (x1, y1, x2, y2) box."""
    x1, y1, x2, y2 = box
    sx, sy = size / (x2 - x1), size / (y2 - y1)
    crop_and_resize = np.array([[sx, 0.0, -x1 * sx - 0.5], [0.0, sy, -y1 * sy - 0.5], [0, 0, 1]])
    shift = (1.0 - scale) * (size - 1) / 2
    zoom = np.array([[scale, 0.0, shift], [0.0, scale, shift], [0, 0, 1]])
    return zoom @ crop_and_resize


def whole_image_crop(image: np.ndarray, size: int) -> Crop:
    """Uses the whole image as the face ("pre-cropped face image" mode).

    The uint8 image is resized to size×size with `cv2.INTER_LINEAR` (aspect ratio not
    preserved, as the official `Resize`; exactly the CelebAMask-HQ recipe), then scaled
    to [0, 1]. The official 112 group resized with PIL's antialiased bilinear, which
    differs from this on large downscales.

    Args:
        image: H×W×3 uint8 RGB.
        size: Output side in pixels.

    Returns:
        The crop; its matrix is cv2.resize's pixel-centre scaling.
    """
    image = check_image(image)
    _check_size(size)
    height, width = image.shape[:2]
    sx, sy = size / width, size / height
    matrix = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
    pixels = _to_unit(cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR))
    return _make_crop(pixels, matrix, size)


def box_from_points(points5: np.ndarray) -> Box:
    """A square face box of 300W tightness from 5 points.

    Heuristic: fit the similarity from ARCFACE_TEMPLATE_112 to the points and carry
    the template's face box (TEMPLATE_FACE_BOX_*, the 68-point bounding box of a mean
    frontal face, made square) through its scale and translation. In-plane rotation
    moves the centre with the face but the box stays axis-aligned, as 300W boxes are.

    Args:
        points5: 5×2 (x, y) points in ARCFACE_TEMPLATE_112 order.

    Returns:
        (x1, y1, x2, y2) in image pixels.
    """
    to_template = similarity_matrix(_as_points5(points5), np.asarray(ARCFACE_TEMPLATE_112))
    to_image = np.linalg.inv(to_template)
    scale = float(np.sqrt(abs(np.linalg.det(to_image[:2, :2]))))
    cx, cy, _ = to_image @ np.array([*TEMPLATE_FACE_BOX_CENTRE, 1.0])
    half = 0.5 * TEMPLATE_FACE_BOX_SIDE * scale
    return (float(cx - half), float(cy - half), float(cx + half), float(cy + half))


def to_tensor_input(crop: Crop, group: InputGroup) -> np.ndarray:
    """Normalises a crop into a model input.

    Args:
        crop: size×size crop with [0, 1] pixels.
        group: `face112` uses mean = std = 0.5, `face512` the CLIP/FaRL mean and std.

    Returns:
        3×size×size float32.
    """
    if group not in _NORMALISATION:
        raise UserError(f"unknown input group {group!r}; expected one of {sorted(_NORMALISATION)}")
    normalised = normalise_pixels(crop.pixels.astype(np.float32), *_NORMALISATION[group])
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))  # H×W×3 -> 3×H×W


def normalise_pixels(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(…×3 float32 RGB in [0, 1] - mean) / std, per channel, in float32: the one
    normalisation every model input goes through."""
    return (pixels - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)


def crop_112(image: np.ndarray, *, box: Box | None = None, points5: np.ndarray | None = None) -> Crop:
    """The 112 group's crop of one face: `points5` → `align_112`; else `box` → the upright
    similarity that puts the box on the template's face box (the framing `align_112` gives
    an upright face, assuming a 300W-tight box); else the whole image.

    Args:
        image: H×W×3 uint8 RGB.
        box: (x1, y1, x2, y2) square face box of 300W tightness.
        points5: 5×2 (x, y) points in ARCFACE_TEMPLATE_112 order.
    """
    image = check_image(image)
    if points5 is not None:
        return align_112(image, points5)
    if box is not None:
        return _box_to_112(image, box)
    return whole_image_crop(image, 112)


def points_to_image(points_crop: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Maps crop pixel coordinates back to the original image: [x, y, 1]ᵀ = M⁻¹[u, v, 1]ᵀ.

    Args:
        points_crop: N×2 (u, v) crop pixels.
        matrix: 3×3 crop matrix M.

    Returns:
        N×2 float64 (x, y) image pixels.
    """
    points = np.asarray(points_crop, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise UserError(f"points must be N×2, got shape {points.shape}")
    inverse = np.linalg.inv(np.asarray(matrix, dtype=np.float64))
    return points @ inverse[:2, :2].T + inverse[:2, 2]


def box_to_crop(box: Box, matrix: np.ndarray) -> Box:
    """An axis-aligned image box (x1, y1, x2, y2) carried into crop pixels by the crop's
    scale-and-shift matrix M (as `box_crop` makes)."""
    corners = np.array([box[:2], box[2:]], dtype=np.float64) @ matrix[:2, :2].T + matrix[:2, 2]  # 2×2
    (x1, y1), (x2, y2) = corners
    return float(x1), float(y1), float(x2), float(y2)


def map_to_image(
    values: np.ndarray,
    matrix: np.ndarray,
    out_hw: tuple[int, int],
    *,
    crop_size: int | None = None,
) -> np.ndarray:
    """Warps crop-frame values (e.g. parsing logits) onto the original image grid.

    Each original pixel (x, y) samples the values at M·[x, y, 1] (bilinear, 0 outside),
    as the official `*_test_post_transform` does with warp_factor 0 (SPEC §6.3). The
    official single `cv2.remap` of all C channels differs from this only on the ring of
    image pixels that sample within 1 px outside the crop: OpenCV's zero border is off
    there for more than 4 channels.

    Args:
        values: H×W×C or H×W floats over the crop.
        matrix: 3×3 crop matrix M.
        out_hw: (height, width) of the original image.
        crop_size: Side of the crop M maps to, when the values' grid differs from it
            (e.g. 512×512 parsing logits of a 256-px crop); the grids are related by
            pixel-centre scaling (align_corners=False). Defaults to the values' grid.

    Returns:
        out_h×out_w×C (or out_h×out_w) float32, or float64 for float64 input.
    """
    values = np.asarray(values)
    if values.ndim not in (2, 3) or 0 in values.shape:
        raise UserError(f"values must be H×W or H×W×C, got shape {values.shape}")
    if values.dtype != np.float64:
        values = values.astype(np.float32)
    height, width = values.shape[:2]
    sx, sy = (1.0, 1.0) if crop_size is None else (width / crop_size, height / crop_size)
    to_values = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
    forward = to_values @ np.asarray(matrix, dtype=np.float64)
    out_size = (int(out_hw[1]), int(out_hw[0]))
    channels = values.reshape(height, width, -1)  # H×W(×C) -> H×W×C
    # OpenCV mishandles the zero border for more than 4 channels; warp ≤4 at a time.
    warped = [
        cv2.warpAffine(
            np.ascontiguousarray(channels[:, :, start : start + 4]), forward[:2], out_size,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT, borderValue=0,
        ).reshape(out_size[1], out_size[0], -1)
        for start in range(0, channels.shape[2], 4)
    ]  # fmt: skip
    return np.concatenate(warped, axis=2).reshape(out_size[1], out_size[0], *values.shape[2:])


def crop_footprint(
    matrix: np.ndarray, crop_size: int, image_hw: tuple[int, int], *, cell: float = 1.0
) -> tuple[int, int, int, int]:
    """The image pixels (x0, y0, x1, y1; exclusive ends, clipped to the image) whose values
    `map_to_image` can take from inside a crop of side `crop_size` under the 3×3 matrix M:
    the bounding box of the crop's corners, widened by one `cell` (a values-grid cell, in crop
    pixels, for the bilinear ring), mapped back by M⁻¹, plus 2 px."""
    lo, hi = -2.0 * cell, crop_size + 2.0 * cell
    corners = np.array([[lo, lo, 1.0], [hi, lo, 1.0], [lo, hi, 1.0], [hi, hi, 1.0]])
    points = (np.linalg.inv(np.asarray(matrix, dtype=np.float64)) @ corners.T)[:2].T
    (x0, y0), (x1, y1) = np.floor(points.min(0)) - 2, np.ceil(points.max(0)) + 3
    height, width = image_hw
    return (int(np.clip(x0, 0, width)), int(np.clip(y0, 0, height)),
            int(np.clip(x1, 0, width)), int(np.clip(y1, 0, height)))  # fmt: skip


def _box_to_112(image: np.ndarray, box: Box) -> Crop:
    """112-px crop putting the box on the template face box, no rotation."""
    x1, y1, x2, y2 = _as_box(box)
    scale = TEMPLATE_FACE_BOX_SIDE / (0.5 * ((x2 - x1) + (y2 - y1)))
    tx = TEMPLATE_FACE_BOX_CENTRE[0] - scale * 0.5 * (x1 + x2)
    ty = TEMPLATE_FACE_BOX_CENTRE[1] - scale * 0.5 * (y1 + y2)
    matrix = np.array([[scale, 0.0, tx], [0.0, scale, ty], [0, 0, 1]])
    return _warp_uint8(image, matrix, 112)


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift) src → dst as 3×3.

    With a = s·cos θ and b = s·sin θ the model x' = a·x − b·y + tx, y' = b·x + a·y + ty
    is linear in (a, b, tx, ty), so ordinary least squares solves it exactly.
    """
    x, y = src[:, 0], src[:, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    design = np.empty((2 * len(src), 4))
    design[0::2] = np.stack([x, -y, ones, zeros], axis=1)  # rows for x'
    design[1::2] = np.stack([y, x, zeros, ones], axis=1)  # rows for y'
    if np.linalg.norm(src - src.mean(axis=0)) < 1e-9:
        raise UserError("the 5 points are degenerate (all at one place); cannot align")
    (a, b, tx, ty), *_ = np.linalg.lstsq(design, dst.reshape(-1), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty], [0.0, 0.0, 1.0]])


def _warp_uint8(image: np.ndarray, matrix: np.ndarray, size: int) -> Crop:
    """Warps uint8 pixels (bilinear, black border), then scales to [0, 1]."""
    return _make_crop(_to_unit(_warp(image, matrix, size)), matrix, size)


def _warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Samples the image at M⁻¹ of each crop pixel (bilinear, 0 outside)."""
    return cv2.warpAffine(
        image, matrix[:2], (size, size),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )  # fmt: skip


def _warp_unit(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """`_warp(_to_unit(image), matrix, size)` computed over the image region the crop samples
    (plus a 2-px margin for the bilinear neighbours), so memory scales with the face, not
    the photo; the shifted matrix moves every sample by whole pixels, so values are the same."""
    height, width = image.shape[:2]
    corners = np.linalg.inv(matrix) @ np.array([[-1, size, -1, size], [-1, -1, size, size], [1, 1, 1, 1]], float)
    x0, y0 = (max(0, int(np.floor(corners[i].min())) - 2) for i in (0, 1))
    x1, y1 = min(width, int(np.ceil(corners[0].max())) + 3), min(height, int(np.ceil(corners[1].max())) + 3)
    if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the image
        return np.zeros((size, size, 3), np.float32)
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    return _warp(_to_unit(image[y0:y1, x0:x1]), matrix @ shift, size)


def _to_unit(image: np.ndarray) -> np.ndarray:
    """uint8 → float32 in [0, 1] (`Normalize255`)."""
    return (image / 255.0).astype(np.float32)


def _make_crop(pixels: np.ndarray, matrix: np.ndarray, size: int) -> Crop:
    """Freezes the arrays of a new crop."""
    matrix = np.array(matrix, dtype=np.float64)
    pixels.setflags(write=False)
    matrix.setflags(write=False)
    return Crop(pixels=pixels, matrix=matrix, size=size)


def _check_size(size: int) -> None:
    """Rejects crop sizes that are not positive integers."""
    is_int = isinstance(size, (int, np.integer)) and not isinstance(size, bool)
    if not is_int or size <= 0:
        raise UserError(f"crop size must be a positive integer, got {size!r}")


def _as_points5(points5: np.ndarray) -> np.ndarray:
    """Validates 5 (x, y) points as a 5×2 float64 array."""
    points = np.asarray(points5, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise UserError(f"points5 must be 5×2 finite (x, y) values, got shape {points.shape}")
    return points


def _as_box(box: Box) -> Box:
    """Validates an (x1, y1, x2, y2) box with x2 > x1 and y2 > y1."""
    values = np.asarray(box, dtype=np.float64)
    if values.shape != (4,) or not np.all(np.isfinite(values)):
        raise UserError(f"box must be 4 finite values (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in values)
    if x2 <= x1 or y2 <= y1:
        raise UserError(f"box (x1, y1, x2, y2) = {box!r} is empty; need x2 > x1 and y2 > y1")
    return x1, y1, x2, y2
