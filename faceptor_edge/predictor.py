"""`FacePredictor`: photo in, every head's prediction per face in original-image pixels out.

photo → faces (a `FaceDetector`) → each face's input by the backend's own recipe (the
crop it was distilled on, framed on the 5 points) → `Backend.run` → shared decoding →
back to image pixels. One class for every backend `faceptor_edge.backends.load_backend`
returns: the teacher (a checkpoint, or `demo`), the specialists, a student folder, or an
exported artifact (`.pte`, OpenVINO `.xml`, `.mlpackage` on macOS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from faceptor_edge import decode
from faceptor_edge.backends import Backend
from faceptor_edge.detection import DetectedFace, FaceDetector, RetinaFaceDetector
from faceptor_edge.errors import UserError
from faceptor_edge.images import check_image
from faceptor_edge.preprocess import crop_footprint, map_to_image
from faceptor_edge.tasks import RECOGNITION

MAX_FOOTPRINT_SIDE = 1024  # px; see `labels_in_image`


class NoFaceFound(UserError):
    """The detector found no face in an image."""


class NonFiniteOutput(UserError):
    """A model gave NaN or infinite outputs for a face: a broken model or artifact."""


@dataclass(frozen=True, eq=False)
class FaceResult:
    """Everything predicted for one face, in original-image pixels.

    Attributes:
        face: The detection (box, 5 points, score).
        heads: Decoded prediction per head (`faceptor_edge.decode` types; landmarks carry
            `image_points`).
        parsing: Per parsing head, the face's label map over the whole image (`LabelMap`;
            background outside the face's crop).
        untrained: Heads whose teacher did not cover them: their outputs mean nothing.
        covered_labels: Heads whose teacher covered only some outputs (name -> labels).
    """

    face: DetectedFace
    heads: dict[str, Any]
    parsing: dict[str, LabelMap] = field(default_factory=dict)
    untrained: frozenset[str] = frozenset()
    covered_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self, parsing_files: dict[str, str] | None = None, *, scale: float = 1.0) -> dict[str, Any]:
        """The documented JSON record of one face (see `faceptor-edge predict --help`);
        coordinates are divided by `scale`, a downscaled photo's size over its original's."""
        out: dict[str, Any] = {
            "box": [round(v / scale, 2) for v in self.face.box],
            "score": round(self.face.score, 4),
            "points5": np.round(np.asarray(self.face.points5) / scale, 2).tolist(),
            "untrained_heads": sorted(self.untrained),
            "covered_labels": {name: list(labels) for name, labels in self.covered_labels.items()},
        }
        for name, prediction in self.heads.items():
            if isinstance(prediction, decode.LandmarksPrediction):
                out[name] = {"points": np.round(prediction.image_points / scale, 2).tolist()}
            elif isinstance(prediction, decode.ParsingPrediction):
                labels = self.parsing[name]
                counts = labels.counts(len(prediction.class_names))
                out[name] = {"class_names": list(prediction.class_names),
                             "pixels": {c: int(n) for c, n in zip(prediction.class_names, counts) if n},
                             "label_map": (parsing_files or {}).get(name)}  # fmt: skip
            else:
                out[name] = prediction.to_json()
        return out


class FacePredictor:
    """Finds the faces in a photo and runs every head of one model on each.

    Example:
        predictor = FacePredictor(backends.load_backend("runs/distill/artifacts/student-int8.xml"))
        for face in predictor.predict(load_image("group.jpg")):
            print(face.heads["age_utkface"].years)
    """

    def __init__(self, backend: Backend, detector: FaceDetector | None = None) -> None:
        if not backend.runnable:
            raise UserError(f"{backend.name}: {'; '.join(backend.facts.get('notes', [])) or 'cannot run here'}")
        self.backend = backend
        self._detector = detector

    def __enter__(self) -> FacePredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend's native resources (needed for `specialists`)."""
        self.backend.close()

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = RetinaFaceDetector.from_package()
        return self._detector

    def predict(self, image: Any, *, max_faces: int | None = None) -> list[FaceResult]:
        """All faces of one image (H×W×3 uint8 RGB numpy array or PIL image), highest score
        first; raises `NoFaceFound` when there is none."""
        image = check_image(np.asarray(image.convert("RGB")) if hasattr(image, "convert") else image)
        faces = self.detector.detect(image)[:max_faces]
        if not faces:
            raise NoFaceFound("no face found")
        return [self.predict_face(image, face) for face in faces]

    def predict_face(self, image: np.ndarray, face: DetectedFace) -> FaceResult:
        """One face, given its detection."""
        inputs, crop = self.backend.prepare(image, points5=face.points5)
        raw = self.backend.run(inputs)
        broken = [name for name, value in raw.items() if not np.isfinite(value).all()]
        if broken:
            raise NonFiniteOutput(f"{self.backend.name}: non-finite (NaN or infinite) outputs from head(s) "
                                  f"{', '.join(broken)} for the face at {np.round(face.box).astype(int).tolist()}; "
                                  "the model or artifact is broken")  # fmt: skip
        heads = decode.decode(raw, self.backend.tasks, dense_crops=[crop])[0]
        parsing = {}
        for task in (t for t in self.backend.tasks if t.head.is_channels_last):
            parsing[task.name] = face_labels(raw[task.name][0], crop.matrix, crop.size, image.shape[:2])
        return FaceResult(face, heads, parsing, self.backend.untrained, self.backend.covered_labels)

    def embed(self, image: Any) -> np.ndarray:
        """The unit-norm identity embedding of the most confident face."""
        result = self.predict(image, max_faces=1)[0]
        name = next(t.name for t in self.backend.tasks if t.head is RECOGNITION)
        return result.heads[name].vector


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
