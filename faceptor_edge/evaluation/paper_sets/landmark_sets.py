"""Readers of the four landmark test sets, in the layouts people download (SPEC §6.2, §7).

Points are (x, y) image pixels with pixel centres at integers, the package's convention:
the 1-based MATLAB-style files (`.pts`, COFW's `.mat`) lose 1; WFLW's text and the AFLW-19
CSV are read as written. Every face is framed by the dataset itself, never by a detector:

| dataset | box | crop scale |
|---|---|---|
| 300W | the square around the 68 true points' bounding box | 0.8 |
| COFW | the square around the true points, floor/ceil as the official loader | 0.8 |
| WFLW | the square around the 98 true points' bounding box | 0.8 |
| AFLW-19 | the CSV's square of half-size 100·scale about (center_w, center_h) | 1.0 |
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.evaluation.paper_sets.matfile import read_cofw_mat
from faceptor_edge.evaluation.paper_sets.samples import (
    Sample,
    SampleSet,
    existing,
    find_file,
    numbers,
    square_box,
    text_lines,
)

IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")
SPLITS_300W = {"common": ("helen/testset", "lfpw/testset"), "challenge": ("ibug",)}
LAYOUT_300W = "afw/ helen/{trainset,testset} lfpw/{trainset,testset} ibug/, each image with its .pts"
WFLW_ANNOTATION = "list_98pt_rect_attr_test.txt"
WFLW_SUBSETS = ("pose", "expression", "illumination", "makeup", "occlusion", "blur")  # the 6 flags' order
AFLW_FULL, AFLW_FRONTAL = "face_landmarks_aflw_test.csv", "face_landmarks_aflw_test_frontal.csv"
AFLW_POINTS = 19


def read_pts(path: Path, count: int) -> np.ndarray:
    """The `count`×2 points of an iBUG `.pts` file, 0-based (the file counts from 1).

    Raises:
        UserError: A malformed file, naming the line.
    """
    rows, declared, inside = [], None, False
    for line, fields in text_lines(path):
        if fields[0] == "n_points:" and len(fields) == 2:
            declared = int(numbers(fields[1:], path, line, "n_points")[0])
        elif fields == ["{"]:
            inside = True
        elif fields == ["}"]:
            inside = False
        elif inside:
            if len(fields) != 2:
                raise UserError(f"{path} line {line}: expected 'x y', got {' '.join(fields)!r}")
            rows.append(numbers(fields, path, line, "point"))
    if len(rows) != count or declared not in (None, count):
        raise UserError(f"{path}: holds {len(rows)} points (n_points {declared}), expected {count}")
    return np.array(rows) - 1.0


def _image_beside(label: Path) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if label.with_suffix(suffix).is_file():
            return label.with_suffix(suffix)
    raise UserError(f"{label}: no image beside it ({', '.join(label.stem + s for s in IMAGE_SUFFIXES[:2])})")


def read_300w(root: Path) -> SampleSet:
    """300W's test faces: helen/testset + lfpw/testset (common) and ibug (challenge); full is both."""
    samples = []
    for split, folders in SPLITS_300W.items():
        for folder in folders:
            if not (root / folder).is_dir():
                raise UserError(f"{root}: not the 300W layout: no {folder}/ (expected {LAYOUT_300W})")
            for label in sorted((root / folder).glob("*.pts")):
                points = read_pts(label, 68)
                key = str(label.relative_to(root).with_suffix(""))
                samples.append(Sample(key, _image_beside(label), points, box=square_box(points), tags=(split, "full")))
    if not samples:
        raise UserError(f"{root}: no .pts files in {', '.join(f for fs in SPLITS_300W.values() for f in fs)}")
    notes = (("300W points are read from the .pts files 0-based (file value − 1); the official loader shifts "
             "HRNet's CSV points by −2.0 px, one pixel more."),)  # fmt: skip
    return SampleSet(samples, "box", "300W folders with .pts", notes)


def cofw_box(points: np.ndarray) -> tuple[float, float, float, float]:
    """The official COFW test box: centre ((floor(xmin) + ceil(xmax))/2, same for y), half-size
    max(ceil(xmax) − floor(xmin), ceil(ymax) − floor(ymin))/2."""
    low, high = np.floor(points.min(axis=0)), np.ceil(points.max(axis=0))
    centre, half = (low + high) / 2, float((high - low).max()) / 2
    return (float(centre[0] - half), float(centre[1] - half), float(centre[0] + half), float(centre[1] + half))


def read_cofw(root: Path) -> SampleSet:
    """COFW's 507 test faces from `COFW_test_color.mat` (`root` is the file or its folder)."""
    path = root if root.is_file() else find_file(root, ("COFW_test_color.mat", "COFW_test.mat"), "COFW test .mat")
    images, phis = read_cofw_mat(path)
    samples = []
    for index, (image, phi) in enumerate(zip(images, phis)):
        points = np.stack([phi[:29], phi[29:58]], axis=1) - 1.0  # 29 x then 29 y, MATLAB 1-based
        if not np.all(np.isfinite(points)):
            raise UserError(f"{path}: phisT row {index + 1} holds a non-finite point")
        samples.append(Sample(f"{path.name}#{index + 1}", image, points, box=cofw_box(points), tags=("test",)))
    return SampleSet(samples, "box", f"COFW {path.name}", ("COFW points are phisT − 1 (0-based).",))


def read_wflw(root: Path) -> SampleSet:
    """WFLW's 2,500 test faces; subsets from the 6 attribute flags."""
    annotation = root if root.is_file() else find_file(
        root, (WFLW_ANNOTATION, f"WFLW_annotations/list_98pt_rect_attr_train_test/{WFLW_ANNOTATION}",
               f"list_98pt_rect_attr_train_test/{WFLW_ANNOTATION}"), "WFLW test annotation")  # fmt: skip
    base = annotation.parent
    images = next((d for d in (base / "WFLW_images", base.parent.parent / "WFLW_images", base.parent / "WFLW_images",
                               root / "WFLW_images") if d.is_dir()), root)  # fmt: skip
    samples = []
    for line, fields in text_lines(annotation):
        if len(fields) != 207:
            raise UserError(f"{annotation} line {line}: {len(fields)} fields, expected 207 "
                            "(196 coordinates, 4 box values, 6 attribute flags, image name)")  # fmt: skip
        values = numbers(fields[:206], annotation, line, "points, box and attribute flags")
        points, flags = values[:196].reshape(98, 2), values[200:206]
        tags = ("test", *(name for name, flag in zip(WFLW_SUBSETS, flags) if flag == 1))
        image = existing(images / fields[206], annotation, line)
        samples.append(Sample(f"{fields[206]}#{line}", image, points, box=square_box(points), tags=tags))
    return SampleSet(samples, "box", f"WFLW {annotation.name}")


def _aflw_rows(path: Path) -> list[tuple[int, list[str]]]:
    """(line, fields) of a HRNet-style AFLW CSV, header dropped."""
    with open(path, newline="") as file:
        rows = [(line, row) for line, row in enumerate(csv.reader(file), start=1) if row]
    if rows and not _is_number(rows[0][1][1] if len(rows[0][1]) > 1 else ""):
        rows = rows[1:]  # the header
    return rows


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _aflw_sample(path: Path, line: int, row: list[str], images: Path) -> Sample:
    """One CSV row: name, scale, [box_size,] center_w, center_h, 19 x,y."""
    if len(row) not in (4 + 2 * AFLW_POINTS, 5 + 2 * AFLW_POINTS):
        raise UserError(f"{path} line {line}: {len(row)} columns, expected 42 (name, scale, center_w, center_h, "
                        "19 x,y) or 43 (with box_size after scale)")  # fmt: skip
    values = numbers(row[1:], path, line, "values")
    scale, rest = values[0], values[1:]
    box_size = None
    if len(row) == 5 + 2 * AFLW_POINTS:
        box_size, rest = rest[0], rest[1:]
    (cx, cy), points = rest[:2], rest[2:].reshape(AFLW_POINTS, 2)
    half = 100.0 * scale
    box = (cx - half, cy - half, cx + half, cy + half)
    norm = {"box": float(box_size if box_size is not None else 2 * half)}
    image = existing(images / row[0], path, line)
    return Sample(f"{row[0]}#{line}", image, points, box=tuple(map(float, box)), norm=norm, tags=("full",))


def read_aflw19(root: Path) -> SampleSet:
    """AFLW-19's test faces from the HRNet-style CSVs: full, and frontal where its CSV is there."""
    full = root if root.is_file() else find_file(root, (AFLW_FULL, f"aflw/{AFLW_FULL}"), "AFLW-19 test CSV")
    rows = _aflw_rows(full)
    images = next((d for d in (full.parent / "images", full.parent) if rows and (d / rows[0][1][0]).is_file()),
                  full.parent)  # fmt: skip
    samples = [_aflw_sample(full, line, row, images) for line, row in rows]
    notes = []
    if any(len(row) == 4 + 2 * AFLW_POINTS for _, row in rows):
        notes.append("The AFLW-19 CSV has no box_size column: the box NME divides by the crop box side (200·scale).")
    frontal = full.parent / AFLW_FRONTAL
    if frontal.is_file():
        index = {(row[0], *np.round(numbers(row[-2 * AFLW_POINTS - 2 : -2 * AFLW_POINTS], full, line, "centre"), 3)):
                 i for i, (line, row) in enumerate(rows)}  # fmt: skip
        for line, row in _aflw_rows(frontal):
            centre = np.round(numbers(row[-2 * AFLW_POINTS - 2 : -2 * AFLW_POINTS], frontal, line, "centre"), 3)
            at = index.get((row[0], *centre))
            if at is None:
                raise UserError(f"{frontal} line {line}: {row[0]} is not in {full.name}")
            old = samples[at]
            samples[at] = Sample(old.key, old.image, old.truth, box=old.box, norm=old.norm, tags=("full", "frontal"))
    else:
        notes.append(f"No {AFLW_FRONTAL} beside {full.name}: the frontal subset is not scored.")
    return SampleSet(samples, "box", f"AFLW-19 {full.name}", tuple(notes))
