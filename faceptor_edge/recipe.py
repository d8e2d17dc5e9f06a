"""The input recipe that travels with a model's weights (as timm's `PretrainedCfg` does).

An `InputRecipe` says how a face becomes the model's input: the crop's side, the crop
scale about the face box, the normalisation, and how the faces the model learnt from
were framed. The student card and every artifact's metadata store it; every consumer
(`predict`, `bench`, parity, calibration, the teacher checks) reads it from there, so
nothing hard-codes or guesses a framing or a mean.

Framing, how the faces a model learnt from were found (`faceptor_edge.detection.photos`):
- `detected`: every face of every photo or generated portrait, by RetinaFace (or a face
  file in `predict --json`'s layout), framed on its 5 points, whatever the teacher;
- `given`: folders of aligned crops, one face each, whose 5 points the alignment fixes.
Either way, on a photo every backend frames a face the same way: the square 300W-tight box
fitted to its 5 points, scaled by `crop_scale`, exactly the crop the model was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    LANDMARK_CROP_SCALE,
    Box,
    Crop,
    box_crop,
    box_from_points,
    box_to_crop,
    crop_112,
    normalise_pixels,
    to_tensor_input,
    whole_image_crop,
)

Framing = Literal["given", "detected"]
Pixels = Literal["normalised", "uint8"]
FRAMINGS: tuple[Framing, ...] = ("given", "detected")
MAX_SIZE = 1024  # no model input here is larger; a bigger stored size is a corrupt record
# The student's frame: the 300W-tight box of a face's 5 points ×0.8 (docs/distillation.md,
# "The student's frame"), the frame of Faceptor's 300W, COFW and WFLW heads.
STUDENT_SCALE = LANDMARK_CROP_SCALE


def _is_number(value: Any) -> bool:
    """A finite JSON number (bools are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class InputRecipe:
    """How one face becomes a model input.

    Attributes:
        size: Side of the square dense crop, in pixels.
        mean, std: Per-channel RGB normalisation of [0, 1] pixels.
        crop_scale: `scale` of the dense `preprocess.box_crop` about the face box (SPEC §6.2).
        framing: How the model's training faces were framed (module doc).
        pixels: `normalised` (N×3×S×S float32) or `uint8` (N×S×S×3 crops plus the face
            box in crop pixels; the specialist models take those).
        face112: Also the 112-px 5-point-aligned group (the Faceptor teacher).
    """

    size: int
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    crop_scale: float = LANDMARK_CROP_SCALE
    framing: Framing = "given"
    pixels: Pixels = "normalised"
    face112: bool = False

    def to_json(self) -> dict[str, Any]:
        """The record stored in student cards and artifact metadata."""
        record = asdict(self)
        record["mean"], record["std"] = list(self.mean), list(self.std)
        return record

    @classmethod
    def from_json(cls, record: Any, where: str) -> InputRecipe:
        """The recipe of a stored record; `UserError` naming `where` when it is malformed."""
        if not isinstance(record, dict):
            raise UserError(f"{where}: no input recipe (expected a JSON object, got {type(record).__name__})")
        missing = [key for key in ("size", "mean", "std", "crop_scale", "framing") if key not in record]
        if missing:
            raise UserError(f"{where}: input recipe lacks {', '.join(missing)}")
        problems = []
        size, crop_scale = record["size"], record["crop_scale"]
        if not _is_number(size) or size != int(size):
            problems.append(f"size {size!r} is not a whole number")
        if not _is_number(crop_scale):
            problems.append(f"crop_scale {crop_scale!r} is not a finite number")
        for key in ("mean", "std"):
            if not isinstance(record[key], list) or not all(_is_number(v) for v in record[key]):
                problems.append(f"{key} {record[key]!r} is not a list of finite numbers")
        if not isinstance(record.get("face112", False), bool):
            problems.append(f"face112 {record['face112']!r} is not true or false")
        if problems:
            raise UserError(f"{where}: malformed input recipe: " + "; ".join(problems))
        recipe = cls(size=int(size), mean=tuple(map(float, record["mean"])), std=tuple(map(float, record["std"])),
                     crop_scale=float(crop_scale), framing=record["framing"],
                     pixels=record.get("pixels", "normalised"), face112=record.get("face112", False))  # fmt: skip
        recipe.check(where)
        return recipe

    def check(self, where: str = "input recipe") -> None:
        """Raise `UserError` unless every field is in range."""
        problems = []
        if not 16 <= self.size <= MAX_SIZE or self.size % 16:
            problems.append(f"size {self.size} is not a multiple of 16 in [16, {MAX_SIZE}]")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std, default=0) <= 0:
            problems.append("mean and std need 3 values each, std > 0")
        if not 0 < self.crop_scale <= 2:
            problems.append(f"crop_scale {self.crop_scale} is outside (0, 2]")
        if not isinstance(self.framing, str) or self.framing not in FRAMINGS:
            problems.append(f"framing {self.framing!r} is not one of {', '.join(FRAMINGS)}")
        if not isinstance(self.pixels, str) or self.pixels not in ("normalised", "uint8"):
            problems.append(f"pixels {self.pixels!r} is not 'normalised' or 'uint8'")
        if problems:
            raise UserError(f"{where}: " + "; ".join(problems))

    @cached_property
    def table(self) -> np.ndarray:
        """256×3 float32: `normalise_pixels` of every uint8 level, per channel."""
        return normalise_pixels(np.arange(256, dtype=np.float32)[:, None] / 255.0, self.mean, self.std)

    def normalise_channels_last(self, crops: np.ndarray) -> np.ndarray:
        """N×S×S×3 uint8 crops -> N×S×S×3 float32 with this recipe's mean and std.

        A per-channel lookup of `table`: the same float32 values as normalising each
        pixel, in one pass (a third of the time on a batch of 32 crops).
        """
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
            raise UserError(f"expected N×S×S×3 uint8 crops, got {crops.shape} {crops.dtype}")
        out = np.empty(crops.shape, np.float32)
        for channel in range(3):
            np.take(self.table[:, channel], crops[..., channel], out=out[..., channel])
        return out

    def normalise(self, crops: np.ndarray) -> np.ndarray:
        """N×S×S×3 uint8 crops -> N×3×S×S float32 (contiguous, as runtimes take it)."""
        return np.ascontiguousarray(self.normalise_channels_last(crops).transpose(0, 3, 1, 2))

    def crop(self, image: np.ndarray, *, box: Box | None = None, points5: np.ndarray | None = None) -> Crop:
        """The dense crop of one face: `box`, else the box fitted to `points5`, scaled by
        `crop_scale`; the whole image (a pre-cropped face) when neither is given."""
        if box is None and points5 is not None:
            box = box_from_points(points5)
        if box is None:
            return whole_image_crop(image, self.size)
        return box_crop(image, box, size=self.size, scale=self.crop_scale)  # only this crop: no 112 group

    def prepare(
        self, image: np.ndarray, *, box: Box | None = None, points5: np.ndarray | None = None
    ) -> tuple[dict[str, np.ndarray], Crop]:
        """One face's model inputs (batch of 1, keyed as `Backend.run` takes them) and its dense crop.

        Keys: `image` (1×3×S×S float32, or 1×S×S×3 uint8 for `pixels="uint8"`), `box`
        (1×4 face box in crop pixels, uint8 recipes), `face112` (1×3×112×112, `face112`).
        """
        face112 = crop_112(image, box=box, points5=points5) if self.face112 else None
        if box is None and points5 is not None:
            box = box_from_points(points5)
        crop = self.crop(image, box=box)
        if face112 is not None:  # the Faceptor teacher: float pixels, as its official pipeline feeds them
            dense = normalise_pixels(crop.pixels.astype(np.float32), self.mean, self.std).transpose(2, 0, 1)
            dense = np.ascontiguousarray(dense)[None]
            return {"face112": to_tensor_input(face112, "face112")[None], "image": dense}, crop
        if self.pixels == "uint8":
            inside = box_to_crop(box, crop.matrix) if box is not None else self.central_box()
            return {"image": crop.uint8()[None], "box": np.asarray([inside], np.float32)}, crop
        return {"image": self.normalise(crop.uint8()[None])}, crop

    def central_box(self) -> Box:
        """The face box, in crop pixels, that a whole pre-cropped image implies: the crop's
        centre at `crop_scale`."""
        margin = 0.5 * self.size * (1.0 - self.crop_scale)
        return (margin, margin, self.size - margin, self.size - margin)

    def prepare_many(
        self, image_faces: Sequence[tuple[np.ndarray, Box | None, np.ndarray | None]]
    ) -> tuple[dict[str, np.ndarray], list[Crop]]:
        """`prepare` for several (image, box, points5) faces, stacked along the batch."""
        parts = [self.prepare(image, box=box, points5=points5) for image, box, points5 in image_faces]
        if not parts:
            raise UserError("no faces to prepare")
        arrays = {key: np.concatenate([inputs[key] for inputs, _ in parts]) for key in parts[0][0]}
        return arrays, [crop for _, crop in parts]
