"""The teacher's side of distillation: its identity, its outputs, and the cache that keeps them.

`build_cache` labels every face of a source once into a `ShardCache`, shard by shard, so an
interrupted build resumes where it stopped. Ranks take alternate shards; within a rank a
CPU teacher labels in `workers` processes, each with its own copy of the models, and a GPU
teacher labels what `workers` loader processes cut from the photos (`distill.crops`).
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
from dataclasses import asdict

import numpy as np
import torch
from tqdm import tqdm

from faceptor_edge.backends import Backend, describe_teacher, load_backend
from faceptor_edge.data import FaceSample
from faceptor_edge.distill.cache import ShardCache, cache_key
from faceptor_edge.distill.crops import Plan, cache_arrays, collate_inputs, face_inputs, teacher_labels
from faceptor_edge.distill.devices import AutocastDtype, barrier
from faceptor_edge.distill.keys import FEATURE_KEYS
from faceptor_edge.distill.labels import TEACHER_BATCH, CropRecipe, specialist_outputs, teacher_outputs
from faceptor_edge.files import atomic_write_bytes


class Teacher:
    """The teacher's identity (cheap, `describe_teacher`) and its model, loaded through
    `faceptor_edge.backends` only when outputs must be computed.

    Args:
        spec: `--teacher` (auto, demo, specialists or a checkpoint path).
        dense_size: The Faceptor teacher's dense-group input side (None: its default).
        device: Where a Faceptor teacher runs (the specialists run on the CPU).
        precision: Its autocast precision.
        batch_size: Faces per Faceptor teacher forward.
    """

    def __init__(
        self,
        spec: str,
        dense_size: int | None,
        device: torch.device | None = None,
        precision: AutocastDtype = "fp32",
        *,
        batch_size: int = TEACHER_BATCH,
    ) -> None:
        self.info = describe_teacher(spec, dense_size=dense_size)
        self.identity, self.notice, self.tasks = self.info.identity, self.info.notice, self.info.tasks
        self.device, self.precision, self.batch_size = device or torch.device("cpu"), precision, batch_size
        self._backend: Backend | None = None

    @property
    def on_cpu(self) -> bool:
        return self.info.kind == "specialists" or self.device.type == "cpu"

    def outputs(self, samples: list[FaceSample], recipe: CropRecipe, *, features: bool) -> dict[str, np.ndarray]:
        """Teacher outputs of a batch of faces, as the cache stores them."""
        if self.info.kind == "specialists":
            if self._backend is None:
                self._backend = load_backend(self.info.source, dense_size=512)
            return specialist_outputs(self._backend.model, samples, recipe)
        return teacher_outputs(self._model(), samples, recipe, features=features, device=self.device,
                               precision=self.precision, batch_size=self.batch_size)  # fmt: skip

    def labels(self, batch: dict, recipe: CropRecipe, plan: Plan) -> dict[str, torch.Tensor]:
        """Teacher outputs of a collated batch of `crops.face_inputs`, as tensors on the device."""
        return teacher_labels(self._model(), batch, recipe, plan, precision=self.precision, batch_size=self.batch_size)

    def _model(self):
        if self._backend is None:
            self._backend = load_backend(self.info.source, dense_size=self.info.dense_size or 512)
        return self._backend.model.to(self.device)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


def build_cache(
    name: str,
    teacher: Teacher,
    source,
    recipe: CropRecipe,
    *,
    root,
    shard_size: int,
    features: bool,
    workers: int,
    rank: int,
    world: int,
) -> tuple[ShardCache, int]:
    """Teacher outputs for every face of `source`, computed once and shared by all ranks;
    also how many faces this rank labelled now (0: all from the cache).

    A folder's listing (path, size, mtime) is written beside the shards as `manifest.jsonl`;
    images unreadable when labelled are masked out of every head and listed in
    `unreadable.json` (`report_unreadable`).
    """
    identity = {**teacher.identity, "images": source.fingerprint(), "recipe": asdict(recipe),
                "features": list(FEATURE_KEYS) if features else False}  # fmt: skip
    cache = ShardCache(root, cache_key(**identity), num_items=len(source), shard_size=shard_size, identity=identity)
    manifest = getattr(_folder(source), "manifest", None)
    if manifest is not None and rank == 0 and not (cache.dir / "manifest.jsonl").exists():
        atomic_write_bytes(cache.dir / "manifest.jsonl", "".join(json.dumps(r) + "\n" for r in manifest).encode())
    todo = cache.missing([s for s in range(cache.num_shards) if s % world == rank], verify=False)
    faces = sum(len(cache.shard_items(s)) for s in todo)
    if todo:
        bar = tqdm(total=faces, desc=f"teacher → cache ({name})", unit="face", disable=rank != 0, dynamic_ncols=True)
        with bar:
            if not teacher.on_cpu:
                _build_on_device(cache, todo, teacher, source, recipe, features, workers, bar.update)
            elif workers > 1 and len(todo) > 1:
                _build_in_processes(cache, todo, teacher, source, recipe, features, workers, bar.update)
            else:
                cache.build(lambda items: _label(teacher, source, recipe, features, items), shards=todo,
                            progress=bar.update)  # fmt: skip
    elif rank == 0:
        print(f"teacher outputs ({name}): {len(source)} faces from cache {cache.dir}")
    barrier()
    return cache, faces


def _folder(source):
    """The folder under a (detected, subset) source, if any."""
    while hasattr(source, "source"):
        source = source.source
    return source


# One labelling process's state (`_start_worker`).
_WORKER: dict = {}


def _start_worker(spec: str, dense_size: int | None, threads: int, cache, source, recipe, features) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(teacher=Teacher(spec, dense_size), cache=cache, source=source, recipe=recipe, features=features)


def _label(teacher: Teacher, source, recipe: CropRecipe, features: bool, items: range):
    """A shard's teacher outputs, and the images found unreadable as header metadata."""
    samples = source.batch(list(items))
    unreadable = [[sample.name, sample.problem] for sample in samples if sample.problem is not None]
    return teacher.outputs(samples, recipe, features=features), {"unreadable": json.dumps(unreadable)}


def _label_shard(shard: int) -> int:
    work = _WORKER
    cache = work["cache"]
    cache.build(lambda items: _label(work["teacher"], work["source"], work["recipe"], work["features"], items),
                shards=[shard])  # fmt: skip
    return len(cache.shard_items(shard))


def _build_in_processes(cache, todo, teacher, source, recipe, features, workers, progress) -> None:
    """Label the shards `todo` in `workers` fresh processes (spawned: no inherited threads or
    models), each with its own teacher and a fair share of the CPU threads."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    init = (teacher.info.source, teacher.info.dense_size, threads, cache, source, recipe, features)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                                initargs=init) as pool:  # fmt: skip
        for done in pool.map(_label_shard, todo):
            progress(done)


class _ShardFaces(torch.utils.data.Dataset):
    """One face's `crops.face_inputs` (unaugmented) and, when its image could not be read, [name, why]."""

    def __init__(self, source, recipe: CropRecipe, plan: Plan) -> None:
        self.source, self.recipe, self.plan = source, recipe, plan

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        (sample,) = self.source.batch([index])
        unreadable = None if sample.problem is None else [sample.name, sample.problem]
        return face_inputs(sample, self.recipe, self.plan, None), unreadable


def _collate_shard(items):
    return collate_inputs([inputs for inputs, _ in items]), [entry for _, entry in items if entry is not None]


def _build_on_device(cache, todo, teacher: Teacher, source, recipe, features, workers, progress) -> None:
    """Label the shards `todo` with a teacher on a GPU: `workers` loader processes read the photos
    and cut each face's patches (`distill.crops`) while the device labels the shard before."""
    plan = Plan.of(teacher.tasks, recipe, features=features)
    loader = torch.utils.data.DataLoader(
        _ShardFaces(source, recipe, plan), batch_sampler=[list(cache.shard_items(s)) for s in todo],
        num_workers=workers, collate_fn=_collate_shard, pin_memory=teacher.device.type == "cuda",
    )  # fmt: skip
    shards = iter(loader)

    def label(_items: range):
        batch, unreadable = next(shards)
        return cache_arrays(teacher.labels(batch, recipe, plan)), {"unreadable": json.dumps(unreadable)}

    cache.build(label, shards=todo, progress=progress)


def unreadable_images(cache: ShardCache) -> list[list[str]]:
    """[relative path, why] of every image labelling found unreadable (masked out of every
    head), from the shards' headers."""
    return [entry for shard in range(cache.num_shards)
            for entry in json.loads(cache.metadata(shard).get("unreadable", "[]"))]  # fmt: skip
