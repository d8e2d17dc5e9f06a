"""What a paper-set reader hands the runner: an index of samples, images still on disk.

A reader turns a user's copy of a dataset into a `SampleSet`: one small `Sample` per test
face (where its image is, how the dataset frames it, its ground truth), checked against
the files before any model runs. Images are decoded one at a time by `load_pixels` while
the runner streams, so a test set of tens of thousands of photos never sits in memory.
The text helpers here give every malformed label file the same kind of error: one
`UserError` naming the file and the line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.images import ImageError, check_image, load_image
from faceptor_edge.preprocess import Box

# How the paper framed a dataset's faces: its own box, its own 5 points, the whole image
# (an already cropped face), or nothing given, so RetinaFace finds the face.
Framing = Literal["box", "points", "whole", "detect"]
ImageSource = Path | bytes | np.ndarray


@dataclass(frozen=True, eq=False)
class Sample:
    """One test face.

    Attributes:
        key: The image's name in reports (a path relative to the dataset, or `<file>#<i>`).
        image: Where its pixels are: a file, encoded bytes (a `.bin` pair file) or an
            H×W(×3) uint8 array (a `.mat` file).
        truth: The ground truth, in the layout the set's score expects (N×2 points,
            a class index, a 0/1 attribute vector, an age, an identity, or a zero-argument
            callable returning an H×W uint8 label map).
        box: The dataset's face box (x1, y1, x2, y2) in image pixels, if it gives one.
        points5: The dataset's 5 points (eyes, nose tip, mouth corners; image-left first).
        tags: The test subsets the face belongs to (e.g. `common`, `pose`).
        norm: Per-face normalisation lengths a protocol takes from the dataset (AFLW-19's box size).
        resize: Side to resize the image to before anything else (CelebA-HQ's 1024 → 512).
    """

    key: str
    image: ImageSource
    truth: Any
    box: Box | None = None
    points5: np.ndarray | None = None
    tags: tuple[str, ...] = ()
    norm: dict[str, float] = field(default_factory=dict)
    resize: int | None = None


@dataclass(frozen=True)
class SampleSet:
    """A dataset's test faces and how they are framed.

    Attributes:
        samples: The faces, in the dataset's own order (verification: pairs as 2i, 2i+1).
        framing: How the paper framed them (`Framing`).
        layout: Which layout was read (for the report), e.g. `300W folders`.
        notes: Sentences the report prints about this reading (assumptions, fallbacks).
    """

    samples: list[Sample]
    framing: Framing
    layout: str
    notes: tuple[str, ...] = ()


def load_pixels(sample: Sample) -> np.ndarray:
    """The sample's image as H×W×3 uint8 RGB (grey repeated to 3 channels, as the official COFW
    loader does), resized to `sample.resize` with `cv2.INTER_LINEAR` when it asks.

    Raises:
        ImageError: The image is missing, corrupt or not an image; the runner counts these.
    """
    if isinstance(sample.image, Path):
        image = load_image(sample.image, convert=True)
    elif isinstance(sample.image, bytes):
        decoded = cv2.imdecode(np.frombuffer(sample.image, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise ImageError(f"{sample.key}: the encoded image does not decode")
        image = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    else:
        image = check_image(np.asarray(sample.image), convert=True, source=sample.key)
    if sample.resize is not None and image.shape[:2] != (sample.resize, sample.resize):
        image = cv2.resize(image, (sample.resize, sample.resize), interpolation=cv2.INTER_LINEAR)
    return image


def find_file(root: Path, candidates: Sequence[str], what: str) -> Path:
    """The first of `candidates` (paths relative to `root`) that exists.

    Raises:
        UserError: None does; the message lists where it looked.
    """
    for candidate in candidates:
        if (root / candidate).exists():
            return root / candidate
    raise UserError(f"{root}: no {what} (looked for {', '.join(candidates)})")


def text_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(1-based line number, whitespace-split fields) of every non-blank line of a text file."""
    try:
        text = path.read_text(errors="strict")
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not a text file ({error.reason} at byte {error.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.split()


def numbers(fields: Sequence[str], path: Path, line: int, what: str) -> np.ndarray:
    """`fields` as float64; a non-number or non-finite value is a `UserError` naming the line."""
    try:
        values = np.array([float(value) for value in fields], dtype=np.float64)
    except ValueError:
        bad = next(value for value in fields if not _is_float(value))
        raise UserError(f"{path} line {line}: {what}: {bad!r} is not a number") from None
    if not np.all(np.isfinite(values)):
        raise UserError(f"{path} line {line}: {what} holds a non-finite value")
    return values


def integer(text: str, path: Path, line: int, what: str) -> int:
    """`text` as an int; otherwise a `UserError` naming the line."""
    try:
        return int(text)
    except ValueError:
        raise UserError(f"{path} line {line}: {what} {text!r} is not a whole number") from None


def existing(path: Path, label_file: Path, line: int | None = None) -> Path:
    """`path` if it is a file, else a `UserError` saying which label file (and line) names it."""
    if not path.is_file():
        where = f"{label_file} line {line}" if line is not None else str(label_file)
        raise UserError(f"{where}: names {path}, which does not exist (the label file does not match the images)")
    return path


def square_box(points: np.ndarray) -> Box:
    """The square (side = the longer side) centred on the bounding box of N×2 points."""
    low, high = points.min(axis=0), points.max(axis=0)
    centre, half = (low + high) / 2, float((high - low).max()) / 2
    return (float(centre[0] - half), float(centre[1] - half), float(centre[0] + half), float(centre[1] + half))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
