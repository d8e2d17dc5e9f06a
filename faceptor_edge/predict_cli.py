"""`faceptor-edge predict` and `faceptor-edge compare`: photos in, results out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge.backends import load_backend
from faceptor_edge.errors import UserError
from faceptor_edge.images import load_photo, write_png
from faceptor_edge.overlay import draw
from faceptor_edge.predictor import FacePredictor, FaceResult, NoFaceFound
from faceptor_edge.release import RELEASE, release_missing, release_summary


def _predictor(args: argparse.Namespace) -> FacePredictor:
    from faceptor_edge.detection import GivenFaces

    if args.model is None:  # the default: the release student, said on stderr so stdout stays the results
        reason = release_missing()
        if reason:
            raise UserError(f"no --model given, and {reason}")
        args.model = RELEASE
        print(f"model: {release_summary()}; --model to choose another", file=sys.stderr)
    detector = GivenFaces.from_json(args.faces) if getattr(args, "faces", None) else None
    return FacePredictor(load_backend(args.model, threads=getattr(args, "threads", None)), detector)


def _maps(result: FaceResult, json_path: Path, name: str, index: int) -> dict[str, str]:
    folder = json_path.with_name(f"{json_path.stem}-maps")
    files = {}
    for head, labels in result.parsing.items():
        path = folder / f"{name}-face{index}-{head}.png"
        write_png(path, np.asarray(labels))  # one whole map at a time
        files[head] = str(path)
    return files


def output_names(paths: list[Path]) -> list[str]:
    """A distinct file-name stem per photo for its overlay and label maps: the photo's own
    stem, with -2, -3, ... added for later photos whose stem is taken (a/face.jpg and
    b/face.jpg become face and face-2)."""
    taken: set[str] = set()
    names = []
    for path in paths:
        name, k = path.stem, 1
        while name in taken:
            k += 1
            name = f"{path.stem}-{k}"
        taken.add(name)
        names.append(name)
    return names


def run_predict(args: argparse.Namespace) -> int:
    """Predict every face of every photo; a bad photo is reported and the rest go on."""
    with _predictor(args) as predictor:
        return _predict_all(args, predictor)


def _predict_all(args: argparse.Namespace, predictor: FacePredictor) -> int:

    backend = predictor.backend
    if backend.notice:
        print(f"note: {backend.notice}")
    records: list[dict[str, Any]] = []
    for path, name in zip(args.images, output_names(args.images)):
        record: dict[str, Any] = {"image": str(path), "name": name, "error": None, "faces": []}
        records.append(record)
        try:
            photo = load_photo(path, convert=args.convert_images, max_pixels=args.max_pixels)
            results = predictor.predict(photo.pixels)
        except UserError as error:  # a bad photo, no face, a broken output: this photo only
            record["error"] = str(error)
            print(f"{path}: {error}")
            continue
        record.update(photo.to_json())
        shrunk = f"; analysed at {photo.scale:.0%} of its size" if photo.scale < 1 else ""
        print(f"{path}: {len(results)} face(s){shrunk}")
        for k, result in enumerate(results, 1):
            print(f"  face {k}: " + ", ".join([f"score {result.face.score:.2f}", *result.summary()]))
            maps = _maps(result, args.json, name, k) if args.json else None
            record["faces"].append(result.to_json(maps, scale=photo.scale))
        if args.draw:
            overlay = args.draw / f"{name}.png"
            write_png(overlay, draw(photo.pixels, results, title=backend.name), rgb=True)
            record["overlay"] = str(overlay)
    if args.json:
        from faceptor_edge.files import atomic_write_json

        atomic_write_json(args.json, {"model": backend.name, "notice": backend.notice, "images": records}, indent=1)
        print(f"wrote {args.json}")
    if args.draw:
        print(f"overlays in {args.draw}")
    return 0 if any(record["faces"] for record in records) else 1


def run_compare(args: argparse.Namespace) -> int:
    """Cosine similarity of the most confident face's embedding in each photo."""
    with _predictor(args) as predictor:
        if "recog_ms1mv3" in predictor.backend.untrained:
            raise UserError(f"{args.model}: its recognition head was not trained")
        a, b = (_embed(predictor, path, args) for path in (args.image_a, args.image_b))
    similarity = float(a @ b)
    verdict = ""
    if args.threshold is not None:
        verdict = (
            f" → {'same person' if similarity > args.threshold else 'different people'} (threshold {args.threshold:g})"
        )
    print(f"cosine similarity {similarity:.4f}{verdict}")
    return 0


def _embed(predictor: FacePredictor, path: Path, args: argparse.Namespace) -> np.ndarray:
    try:
        return predictor.embed(load_photo(path, convert=args.convert_images, max_pixels=args.max_pixels).pixels)
    except NoFaceFound as error:
        raise NoFaceFound(f"{path}: {error}") from error
