"""Readers of the two face-parsing test sets (SPEC §5 class orders, §6.2 crops, §7 splits).

- CelebAMask-HQ: `CelebA-HQ-img/<idx>.jpg` (1024²) and the per-class masks
  `CelebAMask-HQ-mask-anno/<idx // 2000>/<idx:05d>_<class>.png` (512²). The test split is
  CelebA's partition 2 (`list_eval_partition.txt`) through `CelebA-HQ-to-CelebA-mapping.txt`.
  The image is resized to 512 (`cv2.INTER_LINEAR`) and fed whole, as the official dataset
  does; its 512² frame is the "original resolution" the masks live in. The truth is painted
  class by class in the head's order, later classes over earlier ones.
- LaPa: `test/images/<name>.jpg`, `test/labels/<name>.png` (class values 0..10) and
  `test/landmarks/<name>.txt` (106 points); the face is framed on the 5 points
  [104, 105, 54, 84, 90] (eye centres, nose tip, mouth corners).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.evaluation.paper_sets.samples import (
    Sample,
    SampleSet,
    existing,
    find_file,
    integer,
    numbers,
    text_lines,
)

CELEBA_HQ_SIDE = 512
# Mask file name of each CelebAMask-HQ class after background, in the head's order (tasks.CELEBAMASK_HQ_CLASSES).
CELEBAMASK_FILES = ("neck", "skin", "cloth", "l_ear", "r_ear", "l_brow", "r_brow", "l_eye", "r_eye", "nose",
                    "mouth", "l_lip", "u_lip", "hair", "eye_g", "hat", "ear_r", "neck_l")  # fmt: skip
LAPA_FIVE = (104, 105, 54, 84, 90)
LAPA_LANDMARKS = 106


def read_mask(path: Path) -> np.ndarray:
    """A ground-truth PNG as an H×W uint8 array (first channel of a colour file)."""
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise UserError(f"{path}: not a readable mask image")
    return mask if mask.ndim == 2 else mask[..., 0]


def celebamask_truth(paths: tuple[tuple[int, Path], ...]) -> Callable[[], np.ndarray]:
    """A loader of one face's 512×512 label map, painted from its (class, mask file) pairs in order."""

    def load() -> np.ndarray:
        labels = np.zeros((CELEBA_HQ_SIDE, CELEBA_HQ_SIDE), np.uint8)
        for label, path in paths:
            mask = read_mask(path)
            if mask.shape != labels.shape:
                mask = cv2.resize(mask, labels.shape[::-1], interpolation=cv2.INTER_NEAREST)
            labels[mask > 0] = label
        return labels

    return load


def _celeba_test_files(partition: Path) -> set[str]:
    test = set()
    for line, fields in text_lines(partition):
        if len(fields) != 2:
            raise UserError(f"{partition} line {line}: expected '<image> <partition>', got {' '.join(fields)!r}")
        if integer(fields[1], partition, line, "partition") == 2:
            test.add(fields[0])
    return test


def read_celebamask_hq(root: Path) -> SampleSet:
    """CelebAMask-HQ's test faces (the CelebA test partition's HQ images)."""
    mapping = find_file(root, ("CelebA-HQ-to-CelebA-mapping.txt",), "CelebA-HQ-to-CelebA-mapping.txt")
    partition = find_file(root, ("list_eval_partition.txt", "Eval/list_eval_partition.txt"),
                          "CelebA list_eval_partition.txt (put CelebA's file beside the mapping)")  # fmt: skip
    images, masks = root / "CelebA-HQ-img", root / "CelebAMask-HQ-mask-anno"
    for folder in (images, masks):
        if not folder.is_dir():
            raise UserError(f"{root}: not the CelebAMask-HQ layout: no {folder.name}/")
    test, samples = _celeba_test_files(partition), []
    for line, fields in text_lines(mapping):
        if fields[0] == "idx":
            continue  # the header: idx orig_idx orig_file
        if len(fields) != 3:
            raise UserError(f"{mapping} line {line}: expected 'idx orig_idx orig_file', got {' '.join(fields)!r}")
        if fields[2] not in test:
            continue
        index = integer(fields[0], mapping, line, "idx")
        image = existing(images / f"{index}.jpg", mapping, line)
        folder = masks / str(index // 2000)
        parts = tuple((label, folder / f"{index:05d}_{name}.png") for label, name in enumerate(CELEBAMASK_FILES, 1))
        truth = celebamask_truth(tuple((label, path) for label, path in parts if path.is_file()))
        samples.append(Sample(f"{index}.jpg", image, truth, resize=CELEBA_HQ_SIDE))
    if not samples:
        raise UserError(f"{mapping}: none of its images is in the test partition (2) of {partition}")
    return SampleSet(samples, "whole", "CelebAMask-HQ folders")


def read_lapa_landmarks(path: Path) -> np.ndarray:
    """A LaPa 106-point file: the count, then one 'x y' per line; returns 106×2."""
    lines = list(text_lines(path))
    if not lines or integer(lines[0][1][0], path, lines[0][0], "point count") != LAPA_LANDMARKS:
        raise UserError(f"{path} line 1: expected the point count {LAPA_LANDMARKS}")
    points = [numbers(fields, path, line, "point") for line, fields in lines[1:]]
    if len(points) != LAPA_LANDMARKS or any(len(p) != 2 for p in points):
        raise UserError(f"{path}: expected {LAPA_LANDMARKS} lines of 'x y' after the count")
    return np.array(points)


def read_lapa(root: Path) -> SampleSet:
    """LaPa's test faces (`root` is the LaPa folder or its `test/`)."""
    test = root / "test" if (root / "test").is_dir() else root
    folders = {name: test / name for name in ("images", "labels", "landmarks")}
    for folder in folders.values():
        if not folder.is_dir():
            raise UserError(f"{root}: not the LaPa layout: no {folder.relative_to(root.parent)}/ "
                            "(expected test/{images,labels,landmarks})")  # fmt: skip
    samples = []
    for image in sorted(folders["images"].glob("*.jpg")):
        label = existing(folders["labels"] / f"{image.stem}.png", image)
        points = read_lapa_landmarks(existing(folders["landmarks"] / f"{image.stem}.txt", image))
        samples.append(Sample(image.name, image, _png_loader(label), points5=points[list(LAPA_FIVE)]))
    if not samples:
        raise UserError(f"{folders['images']}: no .jpg images")
    notes = (
        (
            "LaPa faces are framed on their 5 landmarks by each model's own crop recipe, not the paper's "
            "tanh-warped alignment (warp factor 0.8): pixels outside a model's crop are predicted background."
        ),
    )
    return SampleSet(samples, "points", "LaPa test/", notes)


def _png_loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: read_mask(path)
