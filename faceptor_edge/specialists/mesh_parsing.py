"""A LaPa-class parsing map drawn from MediaPipe's 478-point face mesh.

MediaPipe FaceLandmarker gives no parsing, but its mesh outlines the face oval, brows,
eyes, nose and lips. Filling those regions (convex hulls of each region's mesh points,
in a fixed drawing order) gives a coarse map in LaPa's classes for every class but hair,
which the mesh does not reach. Decisions:

- LaPa's "l"/"r" are image sides (the image-left brow is `lb`), as Faceptor's renamed
  CelebAMask-HQ classes are (SPEC §1.3: the file `l_brow` is `rb`).
- The lips split into upper and lower along the line between the mouth corners; the
  inner-mouth hull is drawn last, so a closed mouth leaves no `im` pixels.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from faceptor_edge.tasks import LAPA_CLASSES

LAPA = {name: index for index, name in enumerate(LAPA_CLASSES)}


@cache
def _regions() -> dict[str, tuple[tuple[int, ...], ...]]:
    """Mesh point indices of each region, from MediaPipe's own connection lists; the lips
    split into their two connected loops (outer, inner)."""
    from mediapipe.tasks.python.vision.face_landmarker import FaceLandmarksConnections as C

    def points(connections) -> tuple[int, ...]:
        return tuple(sorted({i for c in connections for i in (c.start, c.end)}))

    return {
        "oval": (points(C.FACE_LANDMARKS_FACE_OVAL),),
        "brows": (points(C.FACE_LANDMARKS_LEFT_EYEBROW), points(C.FACE_LANDMARKS_RIGHT_EYEBROW)),
        "eyes": (points(C.FACE_LANDMARKS_LEFT_EYE), points(C.FACE_LANDMARKS_RIGHT_EYE)),
        "nose": (points(C.FACE_LANDMARKS_NOSE),),
        "lips": _loops(C.FACE_LANDMARKS_LIPS),
    }


def _loops(connections) -> tuple[tuple[int, ...], ...]:
    """Connected components of an edge list, largest first by vertex count."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            i = parent[i]
        return i

    for c in connections:
        parent[root(c.start)] = root(c.end)
    groups: dict[int, list[int]] = {}
    for i in list(parent):
        groups.setdefault(root(i), []).append(i)
    return tuple(sorted((tuple(sorted(g)) for g in groups.values()), key=len, reverse=True))


def _fill(labels: np.ndarray, points: np.ndarray, value: int, where: np.ndarray | None = None) -> None:
    hull = cv2.convexHull(np.round(points * 4).astype(np.int32))  # 2 fractional bits
    region = np.zeros(labels.shape, np.uint8)
    cv2.fillConvexPoly(region, hull, 1, lineType=cv2.LINE_8, shift=2)
    mask = region.astype(bool) if where is None else region.astype(bool) & where
    labels[mask] = value


def _by_image_side(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (a, b) if a[:, 0].mean() <= b[:, 0].mean() else (b, a)


def lapa_labels(mesh: np.ndarray, size: int) -> np.ndarray:
    """Draw the LaPa label map of one face.

    Args:
        mesh: 478×2 (or 468×2) mesh points (x, y) in pixels of a size×size image.
        size: Side of the label map.

    Returns:
        size×size uint8 LaPa labels (0 background ... 9 lower lip; never 10, hair).
    """
    regions = _regions()
    labels = np.zeros((size, size), np.uint8)
    _fill(labels, mesh[list(regions["oval"][0])], LAPA["face_lr_rr"])
    _fill(labels, mesh[list(regions["nose"][0])], LAPA["nose"])
    left, right = _by_image_side(*(mesh[list(r)] for r in regions["brows"]))
    _fill(labels, left, LAPA["lb"])
    _fill(labels, right, LAPA["rb"])
    left, right = _by_image_side(*(mesh[list(r)] for r in regions["eyes"]))
    _fill(labels, left, LAPA["le"])
    _fill(labels, right, LAPA["re"])
    outer, inner = (mesh[list(r)] for r in regions["lips"][:2])
    corner_a, corner_b = outer[outer[:, 0].argmin()], outer[outer[:, 0].argmax()]
    ys, xs = np.mgrid[:size, :size] + 0.5
    # Signed side of the corner-to-corner line (image y grows downward): < 0 is above.
    side = (corner_b[0] - corner_a[0]) * (ys - corner_a[1]) - (corner_b[1] - corner_a[1]) * (xs - corner_a[0])
    _fill(labels, outer, LAPA["ul"], where=side < 0)
    _fill(labels, outer, LAPA["ll"], where=side >= 0)
    _fill(labels, inner, LAPA["im"])
    return labels


def soft_logits(labels: np.ndarray, grid: int, classes: int, floor: float = 0.02) -> np.ndarray:
    """Class logits on a coarser grid: the area fraction of each class per cell, mixed with
    a uniform `floor` so logs stay finite.

    Args:
        labels: S×S uint8 labels (S a multiple of `grid`).
        grid: Side of the output grid.
        classes: Number of classes C.
        floor: Weight of the uniform distribution in the mix.

    Returns:
        grid×grid×C float32 log-probabilities (channels last, as every model's parsing logits).
    """
    k = labels.shape[0] // grid
    one_hot = np.eye(classes, dtype=np.float32)[labels]  # S×S×C
    fractions = one_hot.reshape(grid, k, grid, k, classes).mean(axis=(1, 3))  # grid×grid×C
    probabilities = (1.0 - floor) * fractions + floor / classes
    return np.log(np.maximum(probabilities, 1e-12)).astype(np.float32)
