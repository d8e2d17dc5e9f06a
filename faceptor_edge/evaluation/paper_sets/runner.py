"""One model on one paper set: stream the faces, crop them as the paper did, score them.

Each face goes image → crop (the dataset's own box or points, else the whole image, else
RetinaFace) → `Backend.run` → the shared decoding (`faceptor_edge.decode`; parsing maps
back to the image with `label_maps.labels_in_image`) → the set's streaming score.
One image is decoded at a time. A corrupt image, a face the detector misses and a
non-finite model output are counted and named in the result, never silently dropped.

`crops="detector"` frames every face with RetinaFace instead, as `predict` does in the
wild (the detection overlapping the dataset's face most); detections are found once per
image and shared by every model of a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from faceptor_edge import decode
from faceptor_edge.backends import Backend
from faceptor_edge.detection import DetectedFace, FaceDetector
from faceptor_edge.evaluation.evaluate import choose_face
from faceptor_edge.evaluation.paper_sets.registry import PAPER_SETS, PaperSet
from faceptor_edge.evaluation.paper_sets.samples import Sample, SampleSet, load_pixels
from faceptor_edge.images import ImageError
from faceptor_edge.label_maps import labels_in_image
from faceptor_edge.preprocess import Box
from faceptor_edge.recipe import InputRecipe
from faceptor_edge.tasks import AGE, ATTRIBUTES, EXPRESSION, RECOGNITION, TaskSpec

Crops = Literal["paper", "detector"]
LISTED_FILES = 20  # corrupt or missed images named in a result


class FaceFinder:
    """RetinaFace detections, found once per image (file, or set and key) and border, for
    every model and every face of a run."""

    def __init__(self, detector: FaceDetector | None = None) -> None:
        self._detector = detector
        self._found: dict[tuple[str, ...], list[DetectedFace]] = {}

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            from faceptor_edge.detection import RetinaFaceDetector

            self._detector = RetinaFaceDetector.from_package()
        return self._detector

    def find(self, name: str, sample: Sample, image: np.ndarray, pad: int = 0) -> DetectedFace | None:
        """The detection standing for the sample's face in `image` (already given `pad` px of
        border): the one overlapping `reference_box` most, else the most confident; None if missed."""
        where = (str(sample.image.resolve()),) if isinstance(sample.image, Path) else (name, sample.key)
        key = (*where, str(pad))
        if key not in self._found:
            self._found[key] = self.detector.detect(image)
        box = reference_box(sample)
        if box is not None and pad:
            box = tuple(value + pad for value in box)
        return choose_face(self._found[key], box)


def reference_box(sample: Sample) -> Box | None:
    """The box a detection must overlap: the true points' bounding box, else the dataset's box."""
    truth = sample.truth
    if isinstance(truth, np.ndarray) and truth.ndim == 2 and truth.shape[1] == 2:
        (x1, y1), (x2, y2) = truth.min(axis=0), truth.max(axis=0)
        return float(x1), float(y1), float(x2), float(y2)
    return sample.box


def mirrored(inputs: dict[str, np.ndarray], recipe: InputRecipe) -> dict[str, np.ndarray]:
    """The same faces flipped left-right: N×3×S×S (or N×S×S×3 uint8) images, crop-pixel boxes mirrored."""
    out = {}
    for key, value in inputs.items():
        if key == "box":
            side = recipe.size
            out[key] = np.stack([side - value[:, 2], value[:, 1], side - value[:, 0], value[:, 3]], axis=1)
        else:
            out[key] = np.ascontiguousarray(value[:, :, ::-1] if recipe.pixels == "uint8" else value[..., ::-1])
    return out


def _output(task: TaskSpec, raw: dict[str, np.ndarray], crop: Any, image: np.ndarray) -> Any:
    """What the set's score takes from one face's raw outputs, through the shared decoding."""
    if task.head.is_channels_last:
        return labels_in_image(raw[task.name][0], crop.matrix, crop.size, image.shape[:2])
    prediction = decode.decode(raw, [task], dense_crops=[crop])[0][task.name]
    if task.head.is_points:
        return np.asarray(prediction.image_points)
    if task.head is AGE:
        return prediction.years
    if task.head is EXPRESSION:
        return task.labels.index(prediction.label)
    if task.head is ATTRIBUTES:
        return np.array([prediction.present[name] for name in task.labels])
    return prediction.vector


def predict(backend: Backend, recipe: InputRecipe, task: TaskSpec, image: np.ndarray,
            box: Box | None, points5: np.ndarray | None, *, flip: bool) -> Any | None:  # fmt: skip
    """One face's decoded output for the score, or None when the model's output is not finite.

    Args:
        recipe: The backend's recipe, or it with the set's crop scale.
        flip: Recognition: embed the crop and its mirror, sum, then L2-normalise (SPEC §5).
    """
    inputs, crop = recipe.prepare(image, box=box, points5=points5)
    raw = backend.run(inputs)
    if task.head is RECOGNITION:
        vector = raw[task.name].astype(np.float64)
        if flip:
            vector = vector + backend.run(mirrored(inputs, recipe))[task.name]
        return decode.l2_normalize(vector)[0] if np.isfinite(vector).all() else None
    if not np.isfinite(raw[task.name]).all():
        return None
    return _output(task, raw, crop, image)


@dataclasses.dataclass
class Tally:
    """Faces not scored, by reason, with their names (the first `LISTED_FILES`)."""

    counts: dict[str, int] = dataclasses.field(default_factory=lambda: {"corrupt": 0, "missed": 0, "nonfinite": 0})
    files: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: {"corrupt": [], "missed": [], "nonfinite": []}
    )

    def add(self, reason: str, key: str) -> None:
        self.counts[reason] += 1
        if len(self.files[reason]) < LISTED_FILES:
            self.files[reason].append(key)


def _framed(name: str, paper_set: PaperSet, data: SampleSet, sample: Sample, crops: Crops, faces: FaceFinder,
            recipe: InputRecipe) -> tuple[np.ndarray, Box | None, np.ndarray | None] | None:  # fmt: skip
    """The (image, box, points5) to crop the face from, or None when the detector misses it.

    Under the paper's crops a Faceptor teacher gets the dataset's own framing (its box, its
    points, or the whole image); any other model is framed on 5 points as it was trained,
    RetinaFace's inside a landmark set's box (`paper_framing`).

    Raises:
        ImageError: The image is corrupt.
    """
    image = load_pixels(sample)
    if crops == "paper" and paper_framing(data, recipe):
        box = sample.box if data.framing == "box" else None
        return image, box, (sample.points5 if data.framing == "points" else None)
    pad = paper_set.pad
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    face = faces.find(name, sample, image, pad)
    return None if face is None else (image, None, face.points5)


def paper_framing(data: SampleSet, recipe: InputRecipe) -> bool:
    """Whether a model with `recipe` is framed by the dataset itself under the paper's crops: a
    Faceptor teacher always (the paper's protocol); any other model by the dataset's 5 points or
    its whole aligned image, but never by a landmark set's box, whose tightness differs from
    the frame it learnt on: there RetinaFace's points inside the box frame it."""
    return data.framing != "detect" and (recipe.face112 or data.framing != "box")


def paper_recipe(backend: Backend, name: str, crops: Crops) -> InputRecipe:
    """The backend's recipe; a Faceptor teacher's with the set's landmark crop scale under
    the paper's crops."""
    scale = PAPER_SETS[name].crop_scale
    if crops == "paper" and scale is not None and backend.recipe.face112:
        return dataclasses.replace(backend.recipe, crop_scale=scale)
    return backend.recipe


def predictions(
    backend: Backend, name: str, data: SampleSet, *, crops: Crops = "paper", faces: FaceFinder | None = None,
    flip: bool | None = None, progress: str | None = None,
) -> Iterator[tuple[int, Sample, Any, str]]:  # fmt: skip
    """Streams one model's decoded outputs over a paper set's faces, one image in memory at a time.

    Args:
        name: Key in `PAPER_SETS` (its head, crop scale, flip and border).
        crops: `paper` (the dataset's framing) or `detector` (RetinaFace for every face).
        faces: Detections shared between models (default: a new finder).
        flip: Override the set's flip (verification: orig + mirror).
        progress: The progress bar's label (None: no bar).

    Yields:
        (index, sample, output, "") per scored face, or (index, sample, None, reason) with
        reason `corrupt`, `missed` or `nonfinite`.
    """
    paper_set, faces = PAPER_SETS[name], faces or FaceFinder()
    task = next(t for t in backend.tasks if t.name == paper_set.head)
    recipe, flip = paper_recipe(backend, name, crops), paper_set.flip if flip is None else flip
    for index, sample in enumerate(tqdm(data.samples, desc=progress, unit="face", disable=progress is None)):
        try:
            framed = _framed(name, paper_set, data, sample, crops, faces, recipe)
        except ImageError:
            yield index, sample, None, "corrupt"
            continue
        if framed is None:
            yield index, sample, None, "missed"
            continue
        output = predict(backend, recipe, task, *framed, flip=flip)
        yield index, sample, output, "" if output is not None else "nonfinite"


def run_paper_set(
    model: str, backend: Backend, name: str, data: SampleSet, *, crops: Crops = "paper",
    faces: FaceFinder | None = None, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Scores one model on one paper set's test faces.

    Args:
        model: Display name. name: Key in `PAPER_SETS`. data: Its faces (`PaperSet.read`).
        crops: `paper` (the dataset's framing) or `detector` (RetinaFace for every face).
        faces: Detections shared between models (default: a new finder).

    Returns:
        {"metrics": {metric: value or None}, "reasons": {metric: why None}, "faces": scored,
        "listed": faces in the set, "corrupt"/"missed"/"nonfinite": counts, "files": the
        first names per reason}.
    """
    score, tally, scored = PAPER_SETS[name].score(), Tally(), 0
    label = f"{model} {name}" if progress else None
    for index, sample, output, reason in predictions(backend, name, data, crops=crops, faces=faces, progress=label):
        if reason:
            tally.add(reason, sample.key)
            continue
        score.add(index, sample, output)
        scored += 1
    metrics = score.result()
    return {"metrics": metrics, "reasons": dict(score.reasons), "faces": scored, "listed": len(data.samples),
            **tally.counts, "files": {k: v for k, v in tally.files.items() if v}}  # fmt: skip
