"""`faceptor-edge predict` and `faceptor-edge compare`: photos in, results out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from faceptor_edge.backends import load_backend
from faceptor_edge.errors import UserError
from faceptor_edge.images import load_image
from faceptor_edge.overlay import draw, write_png
from faceptor_edge.predictor import FacePredictor, FaceResult, NoFaceFound


def _predictor(args: argparse.Namespace) -> FacePredictor:
    from faceptor_edge.detection import GivenFaces

    detector = GivenFaces.from_json(args.faces) if getattr(args, "faces", None) else None
    return FacePredictor(load_backend(args.model, threads=getattr(args, "threads", None)), detector)


def _summary(result: FaceResult) -> str:
    parts = [f"score {result.face.score:.2f}"]
    for name in ("age_utkface", "age_morph2"):
        if name in result.heads and name not in result.untrained:
            parts.append(f"age {result.heads[name].years:.0f}")
            break
    if "affect_affectnet" in result.heads and "affect_affectnet" not in result.untrained:
        expression = result.heads["affect_affectnet"]
        parts.append(f"{expression.label} {expression.probabilities[expression.label]:.0%}")
    if "biattr_celeba" in result.heads:
        parts.append(f"male {result.heads['biattr_celeba'].probabilities['Male']:.0%}")
    return ", ".join(parts)


def _maps(result: FaceResult, json_path: Path, image: Path, index: int) -> dict[str, str]:
    folder = json_path.with_name(f"{json_path.stem}-maps")
    files = {}
    for name, labels in result.parsing.items():
        path = folder / f"{image.stem}-face{index}-{name}.png"
        write_png(path, labels)
        files[name] = str(path)
    return files


def run_predict(args: argparse.Namespace) -> int:
    """Predict every face of every photo; a bad photo is reported and the rest go on."""
    with _predictor(args) as predictor:
        return _predict_all(args, predictor)


def _predict_all(args: argparse.Namespace, predictor: FacePredictor) -> int:

    backend = predictor.backend
    if backend.notice:
        print(f"note: {backend.notice}")
    records: list[dict[str, Any]] = []
    for path in args.images:
        record: dict[str, Any] = {"image": str(path), "error": None, "faces": []}
        records.append(record)
        try:
            image = load_image(path, convert=args.convert_images)
            results = predictor.predict(image)
        except (NoFaceFound, UserError) as error:
            record["error"] = str(error)
            print(f"{path}: {error}")
            continue
        print(f"{path}: {len(results)} face(s)")
        for k, result in enumerate(results, 1):
            print(f"  face {k}: {_summary(result)}")
            maps = _maps(result, args.json, path, k) if args.json else None
            record["faces"].append(result.to_json(maps))
        if args.draw:
            write_png(args.draw / f"{path.stem}.png", draw(image, results, title=backend.name), rgb=True)
    if args.json:
        from faceptor_edge.files import atomic_write_bytes

        report = {"model": backend.name, "notice": backend.notice, "images": records}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.json, json.dumps(report, indent=1).encode())
        print(f"wrote {args.json}")
    if args.draw:
        print(f"overlays in {args.draw}")
    return 0 if any(record["faces"] for record in records) else 1


def run_compare(args: argparse.Namespace) -> int:
    """Cosine similarity of the most confident face's embedding in each photo."""
    with _predictor(args) as predictor:
        if "recog_ms1mv3" in predictor.backend.untrained:
            raise UserError(f"{args.model}: its recognition head was not trained")
        a = predictor.embed(load_image(args.image_a, convert=args.convert_images))
        b = predictor.embed(load_image(args.image_b, convert=args.convert_images))
    similarity = float(a @ b)
    verdict = ""
    if args.threshold is not None:
        verdict = (
            f" → {'same person' if similarity > args.threshold else 'different people'} (threshold {args.threshold:g})"
        )
    print(f"cosine similarity {similarity:.4f}{verdict}")
    return 0
