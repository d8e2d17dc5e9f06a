"""Readers of the 112-group test sets: age, expression and attributes (SPEC §5, §6.1, §7).

Labels become the heads' orders here: every expression head speaks AffectNet's order
(0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger), so RAF-DB's 1..7 and
FER+'s vote columns are mapped to it; CelebA's −1/1 become 0/1 in `CELEBA_ATTRIBUTES` order.

Framing: RAF-DB's aligned images, FER+'s 48² faces and UTKFace's aligned-and-cropped
faces are the datasets' own crops, fed whole; AffectNet gives a face box, CelebA its
aligned 5 points; MORPH II gives neither, so RetinaFace finds its faces.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

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
from faceptor_edge.tasks import CELEBA_ATTRIBUTES

RAFDB_TO_HEAD = {1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 0}  # Surprise, Fear, Disgust, Happy, Sad, Anger, Neutral
FERPLUS_VOTES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF")
FERPLUS_TO_HEAD = (0, 1, 3, 2, 6, 5, 4)  # FER+ order 0..6 -> AffectNet order; contempt (7) is not a head class
UTK_NAME = re.compile(r"^(\d+)_")  # age_gender_race_date.jpg(.chip.jpg)
AFFECTNET_CLASSES = 7  # AffectNet keeps labels < 7 (contempt and the non-faces dropped)


def csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line, fields) of a comma- or whitespace-separated list, blank lines skipped."""
    with open(path, newline="") as file:
        for line, text in enumerate(file, start=1):
            if text.strip():
                yield line, next(csv.reader([text])) if "," in text else text.split()


def _image_root(candidates: Sequence[Path], first: str) -> Path:
    """The first candidate folder that holds the list's first image (else the first candidate)."""
    return next((folder for folder in candidates if (folder / first).is_file()), candidates[0])


def _age_rows(path: Path, root: Path, name_column: int = 0, age_column: int = 1) -> list[Sample]:
    """Samples of an '<image> <age>' list; a header row (a non-number age) is skipped."""
    rows = list(csv_rows(path))
    if rows and len(rows[0][1]) > age_column and not _number(rows[0][1][age_column]):
        header = [field.strip().lower() for field in rows[0][1]]
        age_column = header.index("age") if "age" in header else age_column
        rows = rows[1:]
    if not rows:
        raise UserError(f"{path}: no images listed")
    folder = _image_root([root, root / "images", root / "UTKFace", path.parent, path.parent.parent],
                         rows[0][1][name_column])  # fmt: skip
    samples = []
    for line, fields in rows:
        if len(fields) <= max(name_column, age_column):
            raise UserError(f"{path} line {line}: expected an image name and an age, got {' '.join(fields)!r}")
        age = float(numbers(fields[age_column : age_column + 1], path, line, "age")[0])
        image = existing(folder / fields[name_column], path, line)
        samples.append(Sample(fields[name_column], image, age))
    return samples


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_morph2(root: Path) -> SampleSet:
    """MORPH II's test list ('<image> <age>' lines; `root` is the list or a folder with RANDOM_80_20/test.txt)."""
    path = root if root.is_file() else find_file(root, ("RANDOM_80_20/test.txt", "test.txt"), "MORPH II test list")
    base = root if root.is_dir() else path.parent
    return SampleSet(_age_rows(path, base), "detect", f"MORPH II {path.name}")


def read_utkface(root: Path) -> SampleSet:
    """UTKFace: the `label/test.csv` list if there is one, else every `age_gender_race_date.jpg` in the folder."""
    listed = root / "label" / "test.csv"
    if root.is_file() or listed.is_file():
        path = root if root.is_file() else listed
        return SampleSet(_age_rows(path, root if root.is_dir() else path.parent), "whole", f"UTKFace {path.name}")
    folder = root / "UTKFace" if (root / "UTKFace").is_dir() else root
    samples = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png")):
        match = UTK_NAME.match(image.name)
        if match is None:
            raise UserError(f"{image}: not a UTKFace name (age_gender_race_date.jpg); give a label/test.csv list")
        samples.append(Sample(image.name, image, float(match.group(1))))
    if not samples:
        raise UserError(f"{folder}: no UTKFace images and no label/test.csv")
    notes = (f"UTKFace: no label/test.csv, so every image of {folder.name}/ is scored (not the paper's split).",)
    return SampleSet(samples, "whole", "UTKFace file names", notes)


def read_rafdb(root: Path) -> SampleSet:
    """RAF-DB basic's test faces: `list_patition_label.txt` lines `test_*`, images `Image/aligned/*_aligned.jpg`."""
    labels = find_file(root, ("EmoLabel/list_patition_label.txt", "basic/EmoLabel/list_patition_label.txt",
                              "list_patition_label.txt"), "RAF-DB list_patition_label.txt")  # fmt: skip
    images = find_file(root, ("Image/aligned", "basic/Image/aligned", "aligned"), "RAF-DB Image/aligned folder")
    samples = []
    for line, fields in text_lines(labels):
        if len(fields) != 2:
            raise UserError(f"{labels} line {line}: expected '<image> <label>', got {' '.join(fields)!r}")
        if not fields[0].startswith("test_"):
            continue
        raw = integer(fields[1], labels, line, "label")
        if raw not in RAFDB_TO_HEAD:
            raise UserError(f"{labels} line {line}: label {raw} is not one of RAF-DB's 1..7")
        image = existing(images / f"{Path(fields[0]).stem}_aligned.jpg", labels, line)
        samples.append(Sample(fields[0], image, RAFDB_TO_HEAD[raw]))
    if not samples:
        raise UserError(f"{labels}: no test_* lines")
    return SampleSet(samples, "whole", "RAF-DB basic")


def _ferplus_label(votes: np.ndarray) -> int | None:
    """The head-order class of one face's 10 vote counts, or None when the majority is not one
    of the 7 head classes (contempt, unknown, not a face) or is tied."""
    top = np.flatnonzero(votes == votes.max())
    if votes.max() <= 0 or len(top) > 1 or top[0] >= len(FERPLUS_TO_HEAD):
        return None
    return FERPLUS_TO_HEAD[top[0]]


def read_ferplus(root: Path) -> SampleSet:
    """FER+'s test faces (`fer2013new.csv` rows with Usage PrivateTest, images in FER2013Test/)."""
    table = find_file(root, ("fer2013new.csv", "data/fer2013new.csv"), "FER+ fer2013new.csv")
    images = find_file(root, ("FER2013Test", "data/FER2013Test"), "FER+ FER2013Test image folder")
    rows = list(csv_rows(table))
    header = rows[0][1] if rows else []
    if header[:2] != ["Usage", "Image name"] or len(header) < 12:
        raise UserError(f"{table} line 1: expected the header 'Usage,Image name,{','.join(FERPLUS_VOTES)}'")
    samples, dropped = [], 0
    for line, fields in rows[1:]:
        if fields[0] != "PrivateTest":
            continue
        if len(fields) < 12:
            raise UserError(f"{table} line {line}: {len(fields)} columns, expected 12")
        label = _ferplus_label(numbers(fields[2:12], table, line, "votes"))
        if not fields[1].strip() or label is None:
            dropped += 1
            continue
        samples.append(Sample(fields[1], existing(images / fields[1], table, line), label))
    notes = ((f"FER+ majority label (most votes, no tie, not contempt/unknown/not-a-face): {dropped} test rows "
             "without one are left out."),)  # fmt: skip
    return SampleSet(samples, "whole", "FER+ fer2013new.csv", notes)


def read_affectnet(root: Path) -> SampleSet:
    """AffectNet's validation faces (its test set): the CSV's face boxes, expressions 0..6."""
    table = root if root.is_file() else find_file(
        root, ("validation.csv", "Manually_Annotated_file_lists/validation.csv"), "AffectNet validation.csv")  # fmt: skip
    rows = [(line, fields) for line, fields in csv_rows(table) if fields[0] != "subDirectory_filePath"]
    base = root if root.is_dir() else table.parent
    folder = _image_root([base / "Manually_Annotated_Images", base / "Manually_Annotated" / "Manually_Annotated_Images",
                          base, table.parent.parent / "Manually_Annotated_Images"], rows[0][1][0] if rows else "")  # fmt: skip
    samples = []
    for line, fields in rows:
        if len(fields) < 7:
            raise UserError(f"{table} line {line}: {len(fields)} columns, expected subDirectory_filePath, face_x, "
                            "face_y, face_width, face_height, facial_landmarks, expression[, valence, arousal]")  # fmt: skip
        label = integer(fields[6], table, line, "expression")
        if not 0 <= label < AFFECTNET_CLASSES:
            continue
        x, y, width, height = numbers(fields[1:5], table, line, "face box")
        if width <= 0 or height <= 0:
            raise UserError(f"{table} line {line}: the face box {width}×{height} is empty")
        image = existing(folder / fields[0], table, line)
        samples.append(Sample(fields[0], image, label, box=(x, y, x + width, y + height)))
    return SampleSet(samples, "box", f"AffectNet {table.name}")


def _celeba_table(path: Path, width: int) -> dict[str, tuple[int, list[str]]]:
    """Name -> (line, values) of a CelebA list (a count line, a header line, then '<image> <width values>')."""
    rows = {}
    for line, fields in text_lines(path):
        if line <= 2 and len(fields) != width + 1:
            continue  # the count and the header
        if len(fields) != width + 1:
            raise UserError(f"{path} line {line}: {len(fields)} fields, expected the image name and {width} values")
        rows[fields[0]] = (line, fields[1:])
    return rows


def read_celeba(root: Path) -> SampleSet:
    """CelebA's 19,962 test faces (partition 2): 40 attributes, framed on the aligned 5 points."""
    find = lambda name, what: find_file(root, (name, f"Anno/{name}", f"Eval/{name}"), what)
    attributes = find("list_attr_celeba.txt", "CelebA list_attr_celeba.txt")
    partition = find("list_eval_partition.txt", "CelebA list_eval_partition.txt")
    landmarks = find("list_landmarks_align_celeba.txt", "CelebA list_landmarks_align_celeba.txt")
    images = find_file(root, ("img_align_celeba", "Img/img_align_celeba"), "CelebA img_align_celeba folder")
    header = next((fields for line, fields in text_lines(attributes) if line == 2), [])
    if sorted(header) != sorted(CELEBA_ATTRIBUTES):
        raise UserError(f"{attributes} line 2: expected the 40 CelebA attribute names")
    order = [header.index(name) for name in CELEBA_ATTRIBUTES]
    labels, points = _celeba_table(attributes, 40), _celeba_table(landmarks, 10)
    samples = []
    for line, fields in text_lines(partition):
        if len(fields) != 2 or integer(fields[1], partition, line, "partition") != 2:
            continue
        name = fields[0]
        if name not in labels or name not in points:
            raise UserError(f"{partition} line {line}: {name} has no row in "
                            f"{attributes.name if name not in labels else landmarks.name}")  # fmt: skip
        label_line, values = labels[name]
        signs = numbers(values, attributes, label_line, "attributes")[order]
        if not np.all(np.isin(signs, (-1, 1))):
            raise UserError(f"{attributes} line {label_line}: attribute values must be -1 or 1")
        five = numbers(points[name][1], landmarks, points[name][0], "landmarks").reshape(5, 2)
        image = existing(images / name, partition, line)
        samples.append(Sample(name, image, (signs > 0).astype(np.uint8), points5=five))
    if not samples:
        raise UserError(f"{partition}: no test (partition 2) images")
    return SampleSet(samples, "points", "CelebA aligned")
