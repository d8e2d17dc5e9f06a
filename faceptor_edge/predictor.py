"""`FacePredictor`: photo in, every head's prediction per face in original-image pixels out.

photo → faces (a `FaceDetector`) → each face's input by the backend's own recipe (the
crop it was distilled on, framed on the 5 points) → `Backend.run` → shared decoding →
back to image pixels. One class for every backend `faceptor_edge.backends.load_backend`
returns: the teacher (a checkpoint, or `demo`), the specialists, a student folder, or an
exported artifact (`.pte`, OpenVINO `.xml`, `.mlpackage` on macOS).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceptor_edge import decode
from faceptor_edge.backends import Backend
from faceptor_edge.detection import DetectedFace, FaceDetector, RetinaFaceDetector
from faceptor_edge.errors import UserError
from faceptor_edge.images import check_image
from faceptor_edge.label_maps import LabelMap, face_labels
from faceptor_edge.tasks import RECOGNITION

STAGES = ("detect", "crop", "model", "decode")  # what `FacePredictor.seconds` times
SHOWN_ATTRIBUTES = ("Male", "Smiling", "Eyeglasses", "Young", "Wearing_Hat", "No_Beard")  # of `FaceResult.summary`


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

    def summary(self) -> list[str]:
        """The face in a few words for people (predict's terminal lines, the overlay's labels):
        age, expression and a few attributes, from trained heads only."""
        trained = {name: p for name, p in self.heads.items() if name not in self.untrained}

        def first(kind: type) -> tuple[str, Any]:
            return next(((name, p) for name, p in trained.items() if isinstance(p, kind)), ("", None))

        lines = []
        _, age = first(decode.AgePrediction)
        if age is not None:
            lines.append(f"age {age.years:.0f}")
        _, expression = first(decode.ExpressionPrediction)
        if expression is not None:
            lines.append(f"{expression.label} {expression.probabilities[expression.label]:.0%}")
        name, attributes = first(decode.AttributesPrediction)
        if attributes is not None:
            covered = self.covered_labels.get(name, SHOWN_ATTRIBUTES)
            shown = [a for a in SHOWN_ATTRIBUTES if a in covered]
            lines.extend(f"{a.replace('_', ' ').lower()} {attributes.probabilities[a]:.0%}" for a in shown)
        return lines

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

    Attributes:
        seconds: Time per stage (`STAGES`) of the last `predict` call, summed over its faces
            (`predict_face` alone adds to it): what `faceptor-edge bench` reports for a photo.
    """

    def __init__(self, backend: Backend, detector: FaceDetector | None = None) -> None:
        if not backend.runnable:
            raise UserError(f"{backend.name}: {'; '.join(backend.facts.get('notes', [])) or 'cannot run here'}")
        self.backend = backend
        self._detector = detector
        self.seconds = dict.fromkeys(STAGES, 0.0)

    def __enter__(self) -> FacePredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend's native resources (needed for `specialists`)."""
        self.backend.close()

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:  # a bundle's own detector, else RetinaFace in PyTorch
            self._detector = self.backend.detector or RetinaFaceDetector.from_package()
        return self._detector

    def predict(self, image: Any, *, max_faces: int | None = None) -> list[FaceResult]:
        """All faces of one image (H×W×3 uint8 RGB numpy array or PIL image), highest score
        first; raises `NoFaceFound` when there is none."""
        image = check_image(np.asarray(image.convert("RGB")) if hasattr(image, "convert") else image)
        self.seconds = dict.fromkeys(STAGES, 0.0)
        start = time.perf_counter()
        faces = self.detector.detect(image)[:max_faces]
        self.seconds["detect"] = time.perf_counter() - start
        if not faces:
            raise NoFaceFound("no face found")
        return [self.predict_face(image, face) for face in faces]

    def predict_face(self, image: np.ndarray, face: DetectedFace) -> FaceResult:
        """One face, given its detection."""
        marks = [time.perf_counter()]
        inputs, crop = self.backend.prepare(image, points5=face.points5)
        marks.append(time.perf_counter())
        raw = self.backend.run(inputs)
        marks.append(time.perf_counter())
        broken = [name for name, value in raw.items() if not np.isfinite(value).all()]
        if broken:
            raise NonFiniteOutput(f"{self.backend.name}: non-finite (NaN or infinite) outputs from head(s) "
                                  f"{', '.join(broken)} for the face at {np.round(face.box).astype(int).tolist()}; "
                                  "the model or artifact is broken")  # fmt: skip
        heads = decode.decode(raw, self.backend.tasks, dense_crops=[crop])[0]
        parsing = {}
        for task in (t for t in self.backend.tasks if t.head.is_channels_last):
            parsing[task.name] = face_labels(raw[task.name][0], crop.matrix, crop.size, image.shape[:2])
        marks.append(time.perf_counter())
        for stage, start, stop in zip(("crop", "model", "decode"), marks, marks[1:]):
            self.seconds[stage] += stop - start
        return FaceResult(face, heads, parsing, self.backend.untrained, self.backend.covered_labels)

    def embed(self, image: Any) -> np.ndarray:
        """The unit-norm identity embedding of the most confident face."""
        result = self.predict(image, max_faces=1)[0]
        name = next(t.name for t in self.backend.tasks if t.head is RECOGNITION)
        return result.heads[name].vector
