"""Decoding raw head outputs into predictions (SPEC §5), shared by every backend.

The batched functions take numpy arrays (or torch tensors) in the raw layouts of
`TaskSpec` and follow the official evaluators exactly. `decode` turns a whole raw
output dict into one dict of small prediction objects per face.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceptor_edge.preprocess import Crop, points_to_image
from faceptor_edge.tasks import AGE, ATTRIBUTES, EXPRESSION, PARSING, RECOGNITION, TaskSpec, heatmap_key

# Crop side assumed for landmarks when neither a dense crop nor a heatmap says otherwise:
# the official dense input size.
DEFAULT_DENSE_SIZE = 512
# The landmark heatmap is 4S×4S for an S×S patch grid of 16-px patches: crop = 4 × side.
_HEATMAP_TO_CROP = 4


@dataclass(frozen=True)
class AgePrediction:
    """Estimated age: the expectation over the 101 age bins."""

    years: float

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"years": self.years}


@dataclass(frozen=True)
class ExpressionPrediction:
    """Most likely expression (argmax of the logits) and softmax probabilities."""

    label: str
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"label": self.label, "probabilities": dict(self.probabilities)}


@dataclass(frozen=True)
class AttributesPrediction:
    """Sigmoid probability and presence (probability > 0.5) of each attribute."""

    probabilities: dict[str, float]
    present: dict[str, bool]

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"probabilities": dict(self.probabilities), "present": dict(self.present)}


@dataclass(frozen=True, eq=False)
class ParsingPrediction:
    """Per-pixel class indices over the dense crop (H×W uint8) and the class names."""

    labels: np.ndarray
    class_names: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form; `labels` as nested row lists."""
        return {"class_names": list(self.class_names), "labels": self.labels.tolist()}


@dataclass(frozen=True, eq=False)
class LandmarksPrediction:
    """Landmarks as N×2 (x, y) dense-crop pixels and, given the crop, image pixels."""

    crop_points: np.ndarray
    image_points: np.ndarray | None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        image = None if self.image_points is None else self.image_points.tolist()
        return {"crop_points": self.crop_points.tolist(), "image_points": image}


@dataclass(frozen=True, eq=False)
class EmbeddingPrediction:
    """Unit-norm D-dim float32 identity embedding (compare with a dot product)."""

    vector: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"vector": self.vector.tolist()}


Prediction = (
    AgePrediction
    | ExpressionPrediction
    | AttributesPrediction
    | ParsingPrediction
    | LandmarksPrediction
    | EmbeddingPrediction
)


def as_numpy(values: Any) -> np.ndarray:
    """Turns a numpy array, torch tensor or nested sequence into a numpy array."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu()
    return np.asarray(values)


def sigmoid(logits: Any) -> np.ndarray:
    """Overflow-free logistic function, in the input's float precision."""
    x = as_numpy(logits)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype)


def age_years(logits: Any) -> np.ndarray:
    """Ages from B×101 logits: sigmoid, L1-normalise (denominator ≥ 1e-12), expectation.

    Returns:
        B float64 ages in years.
    """
    x = _batched(logits, 2, "age logits").astype(np.float64)
    p = sigmoid(x)
    p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    return p @ np.arange(x.shape[1], dtype=np.float64)


def expression(logits: Any) -> tuple[np.ndarray, np.ndarray]:
    """Expressions from B×7 logits (AffectNet order).

    Returns:
        B×7 float64 softmax probabilities, and B int64 labels (argmax of the logits,
        first index on ties).
    """
    x = _batched(logits, 2, "expression logits").astype(np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), np.argmax(x, axis=1)


def attributes(logits: Any) -> tuple[np.ndarray, np.ndarray]:
    """Binary attributes from B×40 logits.

    The sigmoid is taken in float32 like the official evaluator and an attribute is
    present iff it is strictly above 0.5 (`round` sends an exact 0.5 to 0).

    Returns:
        B×40 float32 probabilities and B×40 bool presence.
    """
    p = sigmoid(_batched(logits, 2, "attribute logits").astype(np.float32))
    return p, p > 0.5


def parsing_labels(logits: Any) -> np.ndarray:
    """Label maps from channels-last B×H×W×C logits: argmax over C, as B×H×W uint8."""
    x = _batched(logits, 4, "parsing logits")
    if x.shape[-1] > 256:
        raise ValueError(f"parsing logits have {x.shape[-1]} classes; uint8 labels allow 256")
    return np.argmax(x, axis=-1).astype(np.uint8)


def landmarks_to_crop_pixels(normalized: Any, crop_size: float | Sequence[float]) -> np.ndarray:
    """Normalised (x, y) in [0, 1] over the crop to crop pixels: u = size·x − 0.5.

    Args:
        normalized: B×N×2 landmarks.
        crop_size: Crop side, one for all faces or B per-face sides.

    Returns:
        B×N×2 float64 (u, v) crop pixels.
    """
    x = _batched(normalized, 3, "landmarks").astype(np.float64)
    if x.shape[-1] != 2:
        raise ValueError(f"landmarks must be B×N×2, got shape {x.shape}")
    size = np.asarray(crop_size, dtype=np.float64)
    if size.ndim == 1:
        size = size[:, None, None]  # B -> B×1×1
    return size * x - 0.5


def l2_normalize(embeddings: Any) -> np.ndarray:
    """B×D embeddings divided by their L2 norm (at least 1e-12), as float64."""
    x = _batched(embeddings, 2, "embeddings").astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def decode(
    raw: Mapping[str, Any],
    tasks: Sequence[TaskSpec],
    *,
    dense_crops: Sequence[Crop] | None = None,
) -> list[dict[str, Prediction]]:
    """Decodes raw outputs of a batch of faces, task by task.

    Args:
        raw: Raw outputs keyed by task name in the `TaskSpec` layouts: B×D embeddings,
            B×Q value logits, B×H×W×C parsing logits, B×N×2 normalised landmarks.
            Extra keys (e.g. `"<task>/heatmap"`) are ignored.
        tasks: The tasks to decode; each must have its key in `raw`.
        dense_crops: The B dense crops the parsing/landmark inputs were cut from. They
            give the landmark crop size and the image-frame landmarks; without them the
            size comes from the landmark heatmap if present, else DEFAULT_DENSE_SIZE,
            and `image_points` is None.

    Returns:
        One dict per face mapping task name to its prediction.
    """
    outputs = {task.name: _checked_output(raw, task) for task in tasks}
    sizes = {len(out) for out in outputs.values()}
    if len(sizes) > 1:
        batch_sizes = {name: len(out) for name, out in outputs.items()}
        raise ValueError(f"raw outputs disagree on the batch size: {batch_sizes}")
    batch = sizes.pop() if sizes else 0
    if dense_crops is not None and len(dense_crops) != batch:
        raise ValueError(f"got {len(dense_crops)} dense crops for a batch of {batch} faces")
    faces: list[dict[str, Prediction]] = [{} for _ in range(batch)]
    for task in tasks:
        output = outputs[task.name]
        if task.head.is_points:
            sizes_px = _landmark_crop_sizes(raw, task, batch, dense_crops)
            predictions = _landmarks(output, sizes_px, dense_crops)
        else:
            predictions = _decode_head(task, output)
        for face, prediction in zip(faces, predictions):
            face[task.name] = prediction
    return faces


def _decode_head(task: TaskSpec, output: np.ndarray) -> list[Prediction]:
    """Per-face predictions of every head type but landmarks."""
    head = task.head
    if head is RECOGNITION:
        return [EmbeddingPrediction(_frozen(v.astype(np.float32))) for v in l2_normalize(output)]
    if head is AGE:
        return [AgePrediction(float(years)) for years in age_years(output)]
    if head is EXPRESSION:
        probabilities, labels = expression(output)
        return [
            ExpressionPrediction(task.labels[label], _named(task.labels, p, float))
            for p, label in zip(probabilities, labels)
        ]
    if head is ATTRIBUTES:
        probabilities, present = attributes(output)
        return [
            AttributesPrediction(_named(task.labels, p, float), _named(task.labels, q, bool))
            for p, q in zip(probabilities, present)
        ]
    if head is PARSING:
        return [ParsingPrediction(_frozen(m), task.labels) for m in parsing_labels(output)]
    raise ValueError(f"task {task.name!r}: no decoder for {task.task_type!r} heads")


def _landmarks(output: np.ndarray, crop_sizes: list[int], dense_crops: Sequence[Crop] | None) -> list[Prediction]:
    """Per-face landmarks in crop pixels and, with the crops, image pixels."""
    crop_points = landmarks_to_crop_pixels(output, crop_sizes)
    if dense_crops is None:
        return [LandmarksPrediction(_frozen(points), None) for points in crop_points]
    return [
        LandmarksPrediction(_frozen(points), _frozen(points_to_image(points, crop.matrix)))
        for points, crop in zip(crop_points, dense_crops)
    ]


def _landmark_crop_sizes(
    raw: Mapping[str, Any], task: TaskSpec, batch: int, dense_crops: Sequence[Crop] | None
) -> list[int]:
    """Side of each face's dense crop, which the normalised landmarks span."""
    if dense_crops is not None:
        return [crop.size for crop in dense_crops]
    key = heatmap_key(task.name)
    size = DEFAULT_DENSE_SIZE
    if key in raw:
        size = _HEATMAP_TO_CROP * int(as_numpy(raw[key]).shape[-1])
    return [size] * batch


def _checked_output(raw: Mapping[str, Any], task: TaskSpec) -> np.ndarray:
    """The task's raw output, checked against the layout its spec promises."""
    if task.name not in raw:
        raise KeyError(f"raw outputs have no {task.name!r}; keys: {sorted(raw)}")
    output = as_numpy(raw[task.name])
    want = (None, *task.raw_pattern)  # B×…
    fits = output.ndim == len(want) and all(w in (None, s) for w, s in zip(want, output.shape))
    if not fits:
        layout = "×".join(["B", *("?" if w is None else str(w) for w in want[1:])])
        raise ValueError(f"raw {task.name!r} has shape {output.shape}; expected {layout}")
    return output


def _batched(values: Any, ndim: int, what: str) -> np.ndarray:
    """A numpy array with exactly `ndim` dimensions, the first being the batch."""
    x = as_numpy(values)
    if x.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions (batch first), got shape {x.shape}")
    return x


def _named(names: Sequence[str], values: np.ndarray, kind: type) -> dict[str, Any]:
    """Maps label names to plain Python values."""
    return {name: kind(value) for name, value in zip(names, values, strict=True)}


def _frozen(array: np.ndarray) -> np.ndarray:
    """Marks an array owned by a prediction read-only."""
    array = np.ascontiguousarray(array)
    array.setflags(write=False)
    return array
