"""Faceptor's own framing of a face for each dense head (SPEC §6.2), and carrying outputs
from one frame into another.

A `Frame` says where a square crop of side `size` lies in a photo: the 3×3 matrix M maps an
image pixel (x, y, 1) to crop pixels, optionally followed by the tanh warp of the LaPa
pipeline. Pixel coordinates put pixel centres on integers, as OpenCV does.

Faceptor was trained and evaluated with one framing per dense data set; in the wild every
frame is built from the face's 5 points (eye centres, nose tip, mouth corners, image-left
first):

| frame | heads | built from the 5 points |
|---|---|---|
| `box0.8` | align_300w, align_cofw, align_wflw | the square 300W-tight box (`box_from_points`), ×0.8 (`box_crop`) |
| `box1.0` | align_aflw | the same box, ×1.0 |
| `celeba-hq` | parsing_celebam | CelebA-HQ's alignment (`celeba_hq_matrix`), the 1024 image resized to 512 |
| `lapa` | parsing_lapa | the 5-point similarity to LaPa's template, then the tanh warp with w = 0.8 |

`carry_points` and `sampling_grid` bring a teacher's outputs in one frame into another frame
(the student's) exactly through the geometry, the inverse tanh warp included
(`distill.labels.carry_maps` samples maps on that grid, with a coverage mask where the source
frame saw nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.preprocess import box_crop_matrix, box_from_points, similarity_matrix

# LaPa's 5-point template in a 512 crop (SPEC §6.2): (std + 1)·(511, 511)/2.
_LAPA_STD = np.array([(196, 226), (316, 226), (256, 286), (220, 360.4), (292, 360.4)]) / 256 - 1
_ATANH_CLIP = 0.999  # the blueprint clips the argument of atanh here


@dataclass(frozen=True, eq=False)
class Frame:
    """A square crop of a photo: image pixel x -> crop pixel `warp(M·x)`.

    Attributes:
        matrix: 3×3 float64 M, image pixels -> crop pixels before the warp.
        size: Side of the crop in pixels.
        warp: Tanh warp factor w (0: none; LaPa: 0.8).
    """

    matrix: np.ndarray
    size: int
    warp: float = 0.0

    def image_to_crop(self, points: np.ndarray) -> np.ndarray:
        """N×2 image pixels -> N×2 crop pixels."""
        linear = _affine(self.matrix, points)
        return _tanh_warp(linear, self.size, self.warp, inverse=False) if self.warp else linear

    def crop_to_image(self, points: np.ndarray) -> np.ndarray:
        """N×2 crop pixels -> N×2 image pixels."""
        linear = _tanh_warp(np.asarray(points, np.float64), self.size, self.warp, inverse=True) if self.warp else points
        return _affine(np.linalg.inv(self.matrix), linear)

    def crop(self, image: np.ndarray) -> np.ndarray:
        """size×size×3 float32 RGB in [0, 1]: the [0, 1] image sampled at each crop pixel's image
        position (bilinear, black outside), as the official `cv2.remap` pipeline does. Only the
        image region the crop samples is converted to float."""
        grid = np.stack(np.meshgrid(np.arange(self.size), np.arange(self.size)), -1).reshape(-1, 2)  # (u, v) rows
        where = self.crop_to_image(grid.astype(np.float64)).reshape(self.size, self.size, 2)
        height, width = image.shape[:2]
        lo = np.floor(where.min(axis=(0, 1))).astype(int) - 2
        hi = np.ceil(where.max(axis=(0, 1))).astype(int) + 3
        x0, y0 = max(0, lo[0]), max(0, lo[1])
        x1, y1 = min(width, hi[0]), min(height, hi[1])
        if x1 <= x0 or y1 <= y0:  # the crop lies wholly outside the image
            return np.zeros((self.size, self.size, 3), np.float32)
        region = (image[y0:y1, x0:x1] / 255.0).astype(np.float32)
        maps = (where - np.array([x0, y0])).astype(np.float32)
        return cv2.remap(region, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip


@dataclass(frozen=True)
class FrameSpec:
    """How Faceptor framed the faces of one group of dense heads (module table)."""

    name: str
    box_scale: float = 0.0  # box frames: `box_crop`'s scale
    warp: float = 0.0

    def frame(self, points5: np.ndarray, size: int) -> Frame:
        """This framing of the face with 5 points `points5` (5×2 image pixels) at side `size`."""
        points5 = np.asarray(points5, np.float64)
        if self.name == "celeba-hq":
            return Frame(celeba_hq_matrix(points5, size), size)
        if self.name == "lapa":
            template = (_LAPA_STD + 1) * (size - 1) / 2
            return Frame(similarity_matrix(points5, template), size, self.warp)
        return Frame(box_crop_matrix(box_from_points(points5), size, self.box_scale), size)


FRAMES = {spec.name: spec for spec in (FrameSpec("box0.8", box_scale=0.8), FrameSpec("box1.0", box_scale=1.0),
                                       FrameSpec("celeba-hq"), FrameSpec("lapa", warp=0.8))}  # fmt: skip
# Official dense task name -> the framing Faceptor was trained and evaluated on (SPEC §6.2).
HEAD_FRAMES = {
    "align_300w": FRAMES["box0.8"],
    "align_cofw": FRAMES["box0.8"],
    "align_wflw": FRAMES["box0.8"],
    "align_aflw": FRAMES["box1.0"],
    "parsing_celebam": FRAMES["celeba-hq"],
    "parsing_lapa": FRAMES["lapa"],
}


def head_frame(task_name: str) -> FrameSpec:
    """The framing of a dense head; `UserError` for a head Faceptor has no dense framing for."""
    if task_name not in HEAD_FRAMES:
        raise UserError(f"no Faceptor dense framing for head {task_name!r}; known: {', '.join(HEAD_FRAMES)}")
    return HEAD_FRAMES[task_name]


def celeba_hq_matrix(points5: np.ndarray, size: int) -> np.ndarray:
    """M of the CelebA-HQ alignment at side `size` (module table; 512 for CelebAMask-HQ).

    Karras et al. choose an oriented square from the eye centres and mouth corners: x points
    along the eyes (corrected by the eyes→mouth direction turned 90°), with half-side
    max(2·‖eye→eye‖, 1.8·‖eyes→mouth‖); y is x turned 90°; the centre c sits 0.1 of the way
    from the eyes' midpoint to the mouth's. The square's corners c−x−y (top left) … c+x+y
    (bottom right) become the 1024 image's outer edges; CelebAMask-HQ resized that image to
    512, so the corners land on the crop's outer pixel edges (−0.5 and size − 0.5). Their
    pixel convention (PIL: pixel centres at +0.5) shifts the points and the output alike, so
    it cancels here.
    """
    eye_left, eye_right, _, mouth_left, mouth_right = np.asarray(points5, np.float64)
    eye_avg, mouth_avg = (eye_left + eye_right) / 2, (mouth_left + mouth_right) / 2
    eye_to_eye, eye_to_mouth = eye_right - eye_left, mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])  # eye_to_eye − rot90(eye_to_mouth)
    x = x / np.hypot(*x) * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])  # rot90(x)
    centre = eye_avg + 0.1 * eye_to_mouth
    corners = np.float32([centre - x - y, centre - x + y, centre + x - y])  # top left, bottom left, top right
    edges = np.float32([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, -0.5]])
    return np.vstack([cv2.getAffineTransform(corners.astype(np.float32), edges).astype(np.float64), [0, 0, 1]])


def sampling_grid(source: Frame, target: Frame, grid: int) -> np.ndarray:
    """Where each cell of a grid×grid map over `target` lies in `source`'s crop, as
    `torch.nn.functional.grid_sample` coordinates (align_corners=False: −1 and 1 are the
    crop's outer edges, whatever the resolution of the source's map).

    Returns:
        grid×grid×2 float32 (x, y); cells outside [−1, 1] are outside the source crop.
    """
    centres = (np.arange(grid) + 0.5) * target.size / grid - 0.5  # target crop pixels
    cells = np.stack(np.meshgrid(centres, centres), -1).reshape(-1, 2)  # (u, v) rows, row-major
    inside_source = source.image_to_crop(target.crop_to_image(cells))
    return ((inside_source + 0.5) / source.size * 2 - 1).reshape(grid, grid, 2).astype(np.float32)


def carry_points(normalised: np.ndarray, source: Frame, target: Frame) -> np.ndarray:
    """N×2 points normalised to `source`'s crop ((x̂ + 0.5)/size, SPEC §4.5) -> the same points
    normalised to `target`'s crop."""
    pixels = np.asarray(normalised, np.float64) * source.size - 0.5
    return (target.image_to_crop(source.crop_to_image(pixels)) + 0.5) / target.size


def _affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def _tanh_warp(points: np.ndarray, size: int, warp: float, *, inverse: bool) -> np.ndarray:
    """The blueprint's tanh warp of crop pixels (SPEC §6.2-6.3), per axis: with n = p/size·2 − 1,
    beyond |n| > 1 − w the forward map is n ← tanh((|n| − (1 − w))/w)·w + (1 − w) (sign kept);
    `inverse` applies atanh (its argument clipped at 0.999, as the blueprint does)."""
    n = points / size * 2 - 1
    inner = 1.0 - warp
    excess = (np.abs(n) - inner) / warp
    if inverse:
        bent = np.arctanh(np.clip(excess, -_ATANH_CLIP, _ATANH_CLIP)) * warp + inner
    else:
        bent = np.tanh(excess) * warp + inner
    n = np.where(np.abs(n) > inner, np.sign(n) * bent, n)
    return (n + 1) / 2 * size
