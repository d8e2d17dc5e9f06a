"""A face's parsing labels over the photo it came from.

`face_labels` warps a crop's parsing logits back onto the photo (`preprocess.map_to_image`,
the inverse of the crop's affine) and takes the argmax there, over the crop's footprint
only; `LabelMap` holds that footprint, so a group photo's maps take memory per face, not
per photo. `predict`, the overlays and the paper sets' parsing scores all read parsing this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from faceptor_edge import decode
from faceptor_edge.preprocess import crop_footprint, map_to_image

MAX_FOOTPRINT_SIDE = 1024  # px; see `face_labels`


@dataclass(frozen=True)
class LabelMap:
    """One face's H×W parsing label map, stored as its crop's footprint only (the rest is
    background, 0), so a group photo's maps take memory per face, not per photo.
    `np.asarray(label_map)` gives the whole H×W uint8 map.

    Attributes:
        region: h×w uint8 labels of the footprint.
        origin: (x0, y0), the footprint's top-left pixel in the image.
        shape: (H, W) of the image.
    """

    region: np.ndarray
    origin: tuple[int, int]
    shape: tuple[int, int]

    @property
    def window(self) -> tuple[slice, slice]:
        """The footprint's rows and columns in the image."""
        (x0, y0), (h, w) = self.origin, self.region.shape
        return slice(y0, y0 + h), slice(x0, x0 + w)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        full = np.zeros(self.shape, np.uint8)
        full[self.window] = self.region
        return full if dtype is None else full.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self)[key]

    def counts(self, classes: int) -> np.ndarray:
        """Pixels per class over the whole image."""
        counts = np.bincount(self.region.ravel(), minlength=classes)
        counts[0] += self.shape[0] * self.shape[1] - self.region.size
        return counts


def face_labels(logits: np.ndarray, matrix: np.ndarray, crop_size: int, image_hw: tuple[int, int]) -> LabelMap:
    """A crop's M×M×C parsing logits as image labels: warped (`map_to_image`) over the crop's
    footprint only, so memory scales with the face, not the photo; background (0) elsewhere,
    which is what a whole-image warp gives there (all-zero logits)."""
    x0, y0, x1, y1 = crop_footprint(matrix, crop_size, image_hw, cell=crop_size / logits.shape[1])
    if x1 <= x0 or y1 <= y0:
        return LabelMap(np.zeros((0, 0), np.uint8), (0, 0), tuple(image_hw))
    # A footprint wider than MAX_FOOTPRINT_SIDE is warped at that side and its labels
    # enlarged (nearest): the M×M logits hold no finer detail, and C float maps of a
    # face filling a 40 MP photo would take gigabytes.
    step = max(1.0, max(x1 - x0, y1 - y0) / MAX_FOOTPRINT_SIDE)
    side = (max(1, round((y1 - y0) / step)), max(1, round((x1 - x0) / step)))
    half = (step - 1) / 2  # region pixel centres on the centres of the image pixels they cover
    shift = np.array([[step, 0.0, x0 + half], [0.0, step, y0 + half], [0.0, 0.0, 1.0]])
    region = map_to_image(logits, np.asarray(matrix) @ shift, side, crop_size=crop_size)
    labels = decode.parsing_labels(region[None])[0].astype(np.uint8)
    if step > 1:
        labels = cv2.resize(labels, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    return LabelMap(labels, (x0, y0), tuple(image_hw))


def labels_in_image(logits: np.ndarray, matrix: np.ndarray, crop_size: int, image_hw: tuple[int, int]) -> np.ndarray:
    """`face_labels` as the whole H×W uint8 label map."""
    return np.asarray(face_labels(logits, matrix, crop_size, image_hw))
