"""Overlay pictures of `FacePredictor` results: parsing colours with a legend, landmarks,
boxes and text labels, drawn onto the photo."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from faceptor_edge.decode import LandmarksPrediction
from faceptor_edge.images import write_png
from faceptor_edge.predictor import FacePredictor, FaceResult

# Fixed colours per class name (RGB), shared by LaPa and CelebAMask-HQ names where they mean the same.
CLASS_COLOURS = {
    "background": (0, 0, 0), "face_lr_rr": (230, 180, 140), "face": (230, 180, 140), "neck": (180, 140, 110),
    "cloth": (90, 90, 160), "lb": (150, 75, 20), "rb": (200, 110, 40), "le": (0, 110, 255), "re": (0, 200, 255),
    "nose": (240, 40, 40), "ul": (255, 80, 170), "im": (110, 0, 30), "ll": (190, 0, 110), "ulip": (255, 80, 170),
    "imouth": (110, 0, 30), "llip": (190, 0, 110), "hair": (70, 50, 30), "rr": (120, 200, 80), "lr": (80, 160, 60),
    "glass": (60, 220, 220), "hat": (160, 60, 200), "earr": (250, 220, 0), "neckl": (250, 150, 0),
}  # fmt: skip
# Preference order of the heads to draw (the first one the model was trained on wins).
PARSING_ORDER = ("parsing_lapa", "parsing_celebam")
LANDMARK_ORDER = ("align_300w", "align_wflw", "align_cofw", "align_aflw")


def _first_trained(result: FaceResult, order: Sequence[str]) -> str | None:
    return next((name for name in order if name in result.heads and name not in result.untrained), None)


def draw(image: np.ndarray, results: Sequence[FaceResult], *, title: str = "", alpha: float = 0.45) -> np.ndarray:
    """The photo with every face's parsing map, landmarks, box and labels, plus a legend.

    Args:
        image: H×W×3 uint8 RGB, the photo the results came from.
        results: Faces from `FacePredictor.predict`.
        title: A line drawn at the top (e.g. which model).
        alpha: Opacity of the parsing colours.

    Returns:
        H'×W×3 uint8 RGB (the photo plus a legend strip below it).
    """
    canvas = image.astype(np.float32)
    scale = max(1.0, max(image.shape[:2]) / 800.0)
    used: dict[str, tuple[int, int, int]] = {}
    for result in results:
        name = _first_trained(result, PARSING_ORDER)
        if name is None:
            continue
        label_map = result.parsing[name]
        labels, window = label_map.region, canvas[label_map.window]  # the face's footprint only
        classes = result.heads[name].class_names
        colours = np.array([CLASS_COLOURS.get(c, (255, 255, 255)) for c in classes], np.float32)
        mask = labels > 0
        window[mask] = (1 - alpha) * window[mask] + alpha * colours[labels[mask]]
        used.update({classes[k]: CLASS_COLOURS.get(classes[k], (255, 255, 255)) for k in np.unique(labels) if k})
    out = np.clip(canvas, 0, 255).astype(np.uint8)
    for result in results:
        _draw_face(out, result, scale)
    for result in results:  # after every box, so no face's box crosses another face's labels
        x1, _, _, y2 = (round(v) for v in result.face.box)
        _label_panel(out, result.summary(), (x1, y2), 0.8 * scale)
    if title:
        _label_panel(out, [title], (int(4 * scale), int(4 * scale)), scale)
    return np.concatenate([out, _legend(used, out.shape[1], scale)]) if used else out


def _draw_face(out: np.ndarray, result: FaceResult, scale: float) -> None:
    x1, y1, x2, y2 = (round(v) for v in result.face.box)
    thick = max(1, round(2 * scale))
    cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), thick, cv2.LINE_AA)
    name = _first_trained(result, LANDMARK_ORDER)
    if name is not None:
        prediction: LandmarksPrediction = result.heads[name]
        for x, y in prediction.image_points:
            cv2.circle(out, (round(x), round(y)), max(1, round(1.5 * scale)), (0, 255, 0), -1, cv2.LINE_AA)


def _label_panel(out: np.ndarray, lines: Sequence[str], corner: tuple[int, int], scale: float) -> None:
    """Text lines from `corner` (top left) down, white on a darkened panel that keeps them readable on any photo."""
    if not lines:
        return
    size, thick, step = 0.5 * scale, max(1, round(scale)), int(15 * scale / 0.8)
    width = max(cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, size, thick)[0][0] for line in lines)
    x, y = corner
    x2, y2 = min(out.shape[1], x + width + 6), min(out.shape[0], y + 4 + step * len(lines))
    panel = out[max(0, y) : y2, max(0, x) : x2]
    panel[:] = (panel * 0.35).astype(np.uint8)
    for row, line in enumerate(lines):  # one stroke width: Hershey glyphs widen with it, outlines drift
        cv2.putText(out, line, (x + 3, y + step * (row + 1)), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), thick,
                    cv2.LINE_AA)  # fmt: skip


def _legend(used: dict[str, tuple[int, int, int]], width: int, scale: float) -> np.ndarray:
    """A strip of colour swatches and class names, wrapped to the image width."""
    cell_w, cell_h = int(110 * scale), int(22 * scale)
    per_row = max(1, width // cell_w)
    rows = (len(used) + per_row - 1) // per_row
    strip = np.full((rows * cell_h + 4, width, 3), 30, np.uint8)
    for i, (name, colour) in enumerate(used.items()):
        x, y = (i % per_row) * cell_w + 4, (i // per_row) * cell_h + 4
        cv2.rectangle(strip, (x, y), (x + int(14 * scale), y + int(14 * scale)), colour, -1)
        cv2.putText(strip, name, (x + int(18 * scale), y + int(12 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.42 * scale, (235, 235, 235), max(1, int(scale)), cv2.LINE_AA)  # fmt: skip
    return strip


def write_overlay(predictor: FacePredictor, photo: Path, out: Path, *, title: str = "") -> list[FaceResult]:
    """Predict every face of `photo` and write the overlay PNG to `out` atomically."""
    from faceptor_edge.images import load_image

    image = load_image(photo, convert=True)
    results = predictor.predict(image)
    write_png(out, draw(image, results, title=title), rgb=True)
    return results
