"""RetinaFace's input and output in numpy: the one definition every runtime shares.

The PyTorch detector (`detection.detector.RetinaFaceDetector`) and the exported detectors
(`detection.artifact`: OpenVINO, ExecuTorch) run only the network; this module makes its
input (`detector_input`: resize, BGR minus the mean, optional square pad) and turns its raw
outputs into faces (`faces_from_outputs`: scores, anchors, boxes, 5 points, NMS, back to
the photo's pixels). It imports numpy and OpenCV only, so a deployed bundle needs no torch.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.images import check_image

SCORE_THRESHOLD = 0.6  # biubug6's demo threshold
NMS_THRESHOLD = 0.4
MAX_SIDE = 1024  # longer side the PyTorch detector shrinks larger photos to


@dataclass(frozen=True)
class RetinaFaceConfig:
    """Architecture and pre/post-processing of the MobileNet0.25 checkpoint.

    Attributes:
        min_sizes: Anchor sides in input pixels, per FPN level (2 anchors per cell).
        steps: Stride of each FPN level in input pixels.
        variances: Box-offset scales (centre, log-size), as in SSD.
        pixel_mean_bgr: Subtracted from 0–255 BGR pixels; no division by a std.
        channels: FPN / SSH / head width.
        leaky: LeakyReLU slope everywhere.
    """

    min_sizes: tuple[tuple[int, int], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variances: tuple[float, float] = (0.1, 0.2)
    pixel_mean_bgr: tuple[float, float, float] = (104.0, 117.0, 123.0)
    channels: int = 64
    leaky: float = 0.1

    def to_json(self) -> dict[str, Any]:
        """The record stored in a detector artifact's metadata."""
        return asdict(self)

    @classmethod
    def from_json(cls, record: Any, where: str) -> RetinaFaceConfig:
        """The config of a stored record; `UserError` naming `where` when it is malformed."""
        try:
            return cls(min_sizes=tuple(tuple(int(s) for s in level) for level in record["min_sizes"]),
                       steps=tuple(int(s) for s in record["steps"]),
                       variances=tuple(float(v) for v in record["variances"]),  # type: ignore[arg-type]
                       pixel_mean_bgr=tuple(float(v) for v in record["pixel_mean_bgr"]),  # type: ignore[arg-type]
                       channels=int(record["channels"]), leaky=float(record["leaky"]))  # fmt: skip
        except (KeyError, TypeError, ValueError) as error:
            raise UserError(f"{where}: malformed RetinaFace config ({error!r})") from error


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


@dataclass(frozen=True)
class DetectorInput:
    """The network input made from one photo.

    Attributes:
        x: 1×3×H×W float32, BGR 0–255 minus the config's mean (zero, the mean, in any pad).
        to_original: (sx, sy) from input pixels to the photo's pixels.
    """

    x: np.ndarray
    to_original: tuple[float, float]


def detector_input(
    image: np.ndarray, config: RetinaFaceConfig, *, max_side: int = MAX_SIDE, side: int | None = None
) -> DetectorInput:
    """A photo as RetinaFace's input.

    Args:
        image: H×W×3 uint8 RGB.
        config: Supplies the pixel mean.
        max_side: Larger photos are shrunk (INTER_AREA) so their longer side is at most
            this; smaller ones are used as they are.
        side: A fixed square input (exported detectors have static shapes): the photo is
            shrunk to fit `min(side, max_side)` and padded at the bottom and right to side×side.
    """
    image = check_image(image)
    height, width = image.shape[:2]
    limit = max_side if side is None else min(side, max_side)
    scale = min(1.0, limit / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    in_h, in_w = image.shape[:2]
    x = np.zeros((1, 3, side or in_h, side or in_w), np.float32)  # the pad: 0, the mean pixel
    for channel, mean in enumerate(config.pixel_mean_bgr):  # RGB H×W×3 -> BGR 1×3×H×W, one pass per channel
        np.subtract(image[:, :, 2 - channel], np.float32(mean), out=x[0, channel, :in_h, :in_w], dtype=np.float32)
    return DetectorInput(x, (width / in_w, height / in_h))


def anchors(config: RetinaFaceConfig, height: int, width: int) -> np.ndarray:
    """Anchor boxes of an H×W input, in the network's output order.

    Returns:
        N×4 float32 (centre x, centre y, width, height) in input pixels.
    """
    rows = []
    for step, sizes in zip(config.steps, config.min_sizes):
        ys, xs = np.meshgrid(np.arange(-(-height // step)), np.arange(-(-width // step)), indexing="ij")
        centres = (np.stack([xs, ys], axis=-1).reshape(-1, 1, 2) + 0.5) * step  # (H·W)×1×2
        side = np.broadcast_to(np.asarray(sizes, np.float64)[None, :, None], (centres.shape[0], len(sizes), 2))
        rows.append(np.concatenate(np.broadcast_arrays(centres, side), axis=-1).reshape(-1, 4))
    return np.concatenate(rows).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _cached_anchors(config: RetinaFaceConfig, height: int, width: int) -> np.ndarray:
    """`anchors`, computed once per input size (an exported detector has one), read-only."""
    priors = anchors(config, height, width)
    priors.setflags(write=False)
    return priors


def anchor_count(config: RetinaFaceConfig, height: int, width: int) -> int:
    """N, the number of anchors (network outputs) of an H×W input."""
    return sum(
        len(sizes) * -(-height // step) * -(-width // step) for step, sizes in zip(config.steps, config.min_sizes)
    )


def decode(
    config: RetinaFaceConfig, priors: np.ndarray, offsets: np.ndarray, landmarks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Turns raw offsets of one image into boxes and points.

    Args:
        config: Supplies the variances.
        priors: N×4 anchors from `anchors`.
        offsets: N×4 box offsets.
        landmarks: N×10 point offsets.

    Returns:
        boxes: N×4 (x1, y1, x2, y2) input pixels.
        points: N×5×2 (x, y) input pixels, in the checkpoint's point order.
    """
    centre_var, size_var = config.variances
    centre, size = priors[:, None, :2], priors[:, None, 2:]  # N×1×2
    box_centre = centre[:, 0] + offsets[:, :2] * centre_var * size[:, 0]
    box_size = size[:, 0] * np.exp(offsets[:, 2:] * size_var)
    boxes = np.concatenate([box_centre - box_size / 2, box_centre + box_size / 2], axis=1)
    points = centre + landmarks.reshape(-1, 5, 2) * centre_var * size
    return boxes, points


def face_scores(logits: np.ndarray) -> np.ndarray:
    """N×2 (background, face) logits -> N face probabilities (the softmax's face column)."""
    logits = np.asarray(logits, np.float32)
    return (1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))).astype(np.float32)


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


def faces_from_outputs(
    config: RetinaFaceConfig,
    outputs: tuple[np.ndarray, np.ndarray, np.ndarray],
    prepared: DetectorInput,
    *,
    score_threshold: float = SCORE_THRESHOLD,
    nms_threshold: float = NMS_THRESHOLD,
) -> list[DetectedFace]:
    """The faces in one photo from the network's raw outputs.

    Args:
        config: The detector's config (anchors, variances).
        outputs: (offsets N×4, logits N×2, landmarks N×10) of one image, batch dropped.
        prepared: The input they came from (its size fixes the anchors).
        score_threshold: Faces scoring below this are dropped.
        nms_threshold: Overlapping boxes above this IoU are suppressed.

    Returns:
        Faces in the photo's pixels, highest score first.
    """
    offsets, logits, landmarks = (np.asarray(out, np.float32) for out in outputs)
    in_h, in_w = prepared.x.shape[2:]
    if len(offsets) != anchor_count(config, in_h, in_w):
        raise UserError(f"detector gave {len(offsets)} anchors for a {in_w}×{in_h} input, "
                        f"expected {anchor_count(config, in_h, in_w)}")  # fmt: skip
    scores = face_scores(logits)
    keep = np.flatnonzero(scores >= score_threshold)
    scores, priors = scores[keep], _cached_anchors(config, in_h, in_w)[keep]
    boxes, points = decode(config, priors, offsets[keep], landmarks[keep])
    order = keep_after_nms(boxes, scores, nms_threshold)
    to_original = np.asarray(prepared.to_original)
    boxes = (boxes.reshape(-1, 2, 2) * to_original).reshape(-1, 4)  # N×4, original pixels
    points = points.astype(np.float64) * to_original  # N×5×2
    return [DetectedFace(tuple(boxes[i].tolist()), points[i], float(scores[i])) for i in order]


def check_thresholds(score_threshold: float, nms_threshold: float) -> None:
    """Raise `UserError` unless the score threshold is in [0, 1] and the NMS IoU in (0, 1]."""
    if not 0.0 <= score_threshold <= 1.0:
        raise UserError(f"score_threshold must be in [0, 1], got {score_threshold}")
    if not 0.0 < nms_threshold <= 1.0:
        raise UserError(f"nms_threshold must be in (0, 1], got {nms_threshold}")
