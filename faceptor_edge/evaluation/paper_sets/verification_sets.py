"""Readers of the face-verification sets: InsightFace `.bin` pair files and LFW's `pairs.txt`.

A `.bin` file (lfw, cfp_fp, agedb_30, calfw, cplfw) is a pickle of (list of encoded
112×112 aligned face images, list of bools), pair i being images 2i and 2i+1. Pickles can
run code when loaded, so it is read with `SafeUnpickler`, which builds only lists, tuples,
bytes, strings, numbers and bools (plus numpy bool arrays, which some copies hold) and
refuses every other global. Its faces are the dataset's own aligned crops, fed whole.

LFW's own layout is `pairs.txt` (an optional 'folds pairs-per-fold' line, then
'name n1 n2' for a same-person pair and 'name1 n1 name2 n2' for a different one) beside
the person folders (`<name>/<name>_<n:04d>.jpg`); those photos are not aligned, so
RetinaFace finds each face (the most confident one).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.evaluation.paper_sets.samples import Sample, SampleSet, integer, text_lines

# The only globals a pair file may name: numpy's array rebuilders (checked to be bool
# arrays afterwards) and the codec protocol-2 pickles of bytes go through.
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
MAX_BIN_BYTES = 4 << 30  # a pair file larger than this is not one


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global outside `ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a pair file holds only images and bools")
        return super().find_class(module, name)


def _same_flags(flags: Any, path: Path) -> list[bool]:
    if isinstance(flags, np.ndarray):
        if flags.dtype != np.bool_ or flags.ndim != 1:
            raise UserError(f"{path}: the pair flags are a {flags.dtype} array of shape {flags.shape}, not bools")
        return flags.tolist()
    if not isinstance(flags, list | tuple) or not all(isinstance(flag, bool | np.bool_) for flag in flags):
        raise UserError(f"{path}: the second item must be a list of bools (same person or not)")
    return [bool(flag) for flag in flags]


def read_bin(path: Path) -> tuple[list[bytes], list[bool]]:
    """The encoded images and same-person flags of an InsightFace `.bin` pair file.

    Raises:
        UserError: Not such a pickle (or one that names anything else), or the counts disagree.
    """
    if path.stat().st_size > MAX_BIN_BYTES:
        raise UserError(f"{path}: {path.stat().st_size / 1e9:.1f} GB is too large for a pair file")
    try:
        with open(path, "rb") as file:
            loaded = SafeUnpickler(io.BufferedReader(file), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise UserError(f"{path}: not an InsightFace pair file ({error})") from None
    if not isinstance(loaded, list | tuple) or len(loaded) != 2:
        raise UserError(f"{path}: expected a pickle of (images, flags), got a {type(loaded).__name__}")
    images, flags = loaded
    if not isinstance(images, list | tuple) or not all(isinstance(image, bytes) for image in images):
        raise UserError(f"{path}: the first item must be a list of encoded images (bytes)")
    same = _same_flags(flags, path)
    if len(images) != 2 * len(same):
        raise UserError(f"{path}: {len(images)} images for {len(same)} pairs (expected {2 * len(same)})")
    return list(images), same


def bin_set(path: Path) -> SampleSet:
    """The pairs of a `.bin` file as samples 2i, 2i+1; each truth is the pair's same-person flag."""
    images, same = read_bin(path)
    samples = [Sample(f"{path.name}#{i}", image, same[i // 2]) for i, image in enumerate(images)]
    return SampleSet(samples, "whole", f"InsightFace {path.name}")


def _lfw_image(root: Path, name: str, number: int, pairs: Path, line: int) -> Path:
    for folder in (root, root / "lfw", root / "lfw_funneled", root / "lfw-deepfunneled"):
        candidate = folder / name / f"{name}_{number:04d}.jpg"
        if candidate.is_file():
            return candidate
    raise UserError(f"{pairs} line {line}: no image {name}/{name}_{number:04d}.jpg under {root} "
                    "(the label file does not match the images)")  # fmt: skip


def pairs_set(root: Path) -> SampleSet:
    """LFW-style `pairs.txt` plus person folders, as samples 2i, 2i+1 (detected faces)."""
    pairs = root / "pairs.txt"
    samples = []
    for line, fields in text_lines(pairs):
        if line == 1 and len(fields) == 2 and all(field.isdigit() for field in fields):
            continue  # folds and pairs per fold
        if len(fields) == 3:
            (a, na), (b, nb) = (fields[0], fields[1]), (fields[0], fields[2])
        elif len(fields) == 4:
            (a, na), (b, nb) = (fields[0], fields[1]), (fields[2], fields[3])
        else:
            raise UserError(
                f"{pairs} line {line}: expected 'name n1 n2' or 'name1 n1 name2 n2', got {' '.join(fields)!r}"
            )
        first = _lfw_image(root, a, integer(na, pairs, line, "image number"), pairs, line)
        second = _lfw_image(root, b, integer(nb, pairs, line, "image number"), pairs, line)
        same = len(fields) == 3
        samples += [Sample(f"{a}/{first.name}", first, same), Sample(f"{b}/{second.name}", second, same)]
    if not samples:
        raise UserError(f"{pairs}: no pairs")
    return SampleSet(samples, "detect", "LFW pairs.txt")


def read_verification(root: Path, name: str) -> SampleSet:
    """A verification set: `root` is a `.bin` file, a folder holding `<name>.bin`, or a folder with `pairs.txt`."""
    if root.is_file():
        if root.suffix != ".bin":
            raise UserError(f"{root}: not a .bin pair file or a folder with pairs.txt")
        return bin_set(root)
    if (root / f"{name}.bin").is_file():
        return bin_set(root / f"{name}.bin")
    if (root / "pairs.txt").is_file():
        return pairs_set(root)
    raise UserError(f"{root}: no {name}.bin and no pairs.txt: unknown verification layout")
