"""The distillation loop: AdamW, warmup + cosine, clipping, DDP, checkpoints, exact resume."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from faceptor_edge.distill.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from faceptor_edge.distill.crops import collate_inputs
from faceptor_edge.distill.dataset import CachedFaces, OnlineFaces, StepBatches, collate_tensors
from faceptor_edge.distill.devices import AutocastDtype, autocast
from faceptor_edge.distill.keys import STUDENT_IMAGE_KEY
from faceptor_edge.distill.losses import (
    FEATURE_KEYS,
    LossWeights,
    baseline_scales,
    distillation_loss,
    head_temperatures,
    mean_student,
    value_spread,
)
from faceptor_edge.files import atomic_write_bytes
from faceptor_edge.student.inputs import normalise_tensor, student_recipe
from faceptor_edge.student.model import FaceptorStudent
from faceptor_edge.tasks import heatmap_key


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 50
    clip: float = 1.0
    checkpoint_every: int = 100
    log_every: int = 10  # steps between the host's reads of the losses (its only waits on the device)
    seed: int = 0
    precision: AutocastDtype = "fp32"
    workers: int = 2  # data-loader processes (0: load in the training process)


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to 5 % of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class DistillModel(nn.Module):
    """The student plus optional feature adapters: per teacher token map (`FEATURE_KEYS`), a
    1×1 convolution from the student's stride-16 map, average-pooled to that map's grid.
    Only training uses them; the saved student has none."""

    def __init__(self, student: FaceptorStudent, feature_shapes: dict[str, tuple[int, ...]] | None = None) -> None:
        super().__init__()
        self.student = student
        self.feature_keys = [key for key in FEATURE_KEYS if key in (feature_shapes or {})]
        self.grids = [feature_shapes[key][-1] for key in self.feature_keys]
        channels = student.config.widths[3]
        self.adapters = nn.ModuleList(nn.Conv2d(channels, feature_shapes[key][0], 1) for key in self.feature_keys)
        self._tokens: list[torch.Tensor] = []
        if self.feature_keys:  # the stride-16 map the decoder's tokens come from
            student.token_proj.register_forward_pre_hook(lambda _m, args: self._tokens.append(args[0]))

    def forward(self, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        self._tokens.clear()
        raw = self.student(image)
        if not self.feature_keys:
            return raw, {}
        tokens = self._tokens.pop()
        projected = {key: adapter(F.adaptive_avg_pool2d(tokens, grid))
                     for key, grid, adapter in zip(self.feature_keys, self.grids, self.adapters)}  # fmt: skip
        return raw, projected


@torch.no_grad()
def start_at_teacher_mean(student: FaceptorStudent, teacher: dict[str, torch.Tensor]) -> None:
    """Start exactly at the constant baseline: zero the last layer of every head and set
    value and embedding biases to the teacher's mean outputs over a sample of faces. Every
    normalised head loss then starts near 1, and training only has to learn how the teacher
    varies; value readouts learn it in units of the teacher's spread (`value_spread`)."""
    mean = mean_student(student.config.tasks, teacher)
    for layer in (student.mask_embed[-1], student.embedding_head[-1], *student.value_heads.values()):
        layer.weight.zero_()
        layer.bias.zero_()
    _start_maps_at_teacher_mean(student, mean)
    for task in (t for t in student.config.tasks if t.name in mean):  # uncovered heads stay at zero
        target = mean[task.name][0]
        if task.kind == "embedding":
            student.embedding_head[-1].bias.copy_(target)
        elif task.kind == "value":
            student.value_heads[task.name].bias.copy_(target)
            student.value_heads[task.name].scale.fill_(value_spread(task, teacher))


def _start_maps_at_teacher_mean(student: FaceptorStudent, mean: dict[str, torch.Tensor]) -> None:
    """Map outputs start at a rank-P factorisation of the teacher's mean maps: query offsets
    × position embedding, with the image features gated off (last FPN BatchNorm γ = 0)."""
    size = student.config.map_size
    rows = []
    for task in (t for t in student.config.tasks if t.kind == "map"):
        if task.name not in mean:  # a head the teacher does not cover: zero maps
            rows.append(torch.zeros(task.num_queries, size, size))
            continue
        value = mean[heatmap_key(task.name)][0] if task.head.is_points else mean[task.name][0].permute(2, 0, 1)
        rows.append(F.interpolate(value[None], size=(size, size), mode="bilinear", align_corners=False)[0])
    maps = torch.cat(rows).flatten(1)  # Qm×M²
    rank = student.config.pixel_dim
    u, s, vh = torch.linalg.svd(maps, full_matrices=False)
    root = s[:rank].sqrt()
    student.map_query_bias.copy_(u[:, :rank] * root)
    student.pixel_decoder.position.copy_((root[:, None] * vh[:rank]).reshape(1, rank, size, size))
    student.pixel_decoder.smooth[-1][1].weight.zero_()  # BatchNorm γ of the last FPN conv
    student.pixel_decoder.smooth[-1][1].bias.zero_()


# Parameters that start at the teacher's mean outputs (the constant part of each head)
# learn at a tenth of the rate: where the teacher barely varies (the stand-in's age and
# parsing), full-rate Adam steps on them would move outputs further than the teacher ever
# does. Value readouts' weights learn at the full rate in units of the teacher's spread
# (`value_spread`). At a tenth of the rate in raw logits, as they once did, the age
# readout of the specialists' students never left the mean (held-out MAE 9.52 years
# against the constant's 9.52) and `Male` barely did.
PRIOR_LR_SCALE = 0.1


def _param_groups(model: DistillModel) -> list[dict]:
    student = model.student
    prior = [student.map_query_bias, student.pixel_decoder.position, *(h.bias for h in student.value_heads.values())]
    slow = {id(p) for p in prior}
    return [
        {"params": [p for p in model.parameters() if id(p) not in slow], "lr_scale": 1.0},
        {"params": prior, "lr_scale": PRIOR_LR_SCALE},
    ]


# Online labelling: a collated batch of `OnlineFaces` items -> teacher outputs on the device,
# in the cache's keys and layouts.
Labeller = Callable[[dict], dict[str, torch.Tensor]]


def _statistics(data: CachedFaces | OnlineFaces, labeller: Labeller | None) -> dict[str, torch.Tensor]:
    """Teacher outputs of (at most) the first STATISTICS_FACES faces, unaugmented, for the loss
    scales, temperatures and the start at the teacher's mean (CPU float32)."""
    if labeller is None:
        arrays = data.sample(STATISTICS_FACES)
        return {k: torch.from_numpy(v.astype(np.float32)) for k, v in arrays.items() if k != STUDENT_IMAGE_KEY}
    labels = labeller(data.inputs(range(min(STATISTICS_FACES, len(data)))))
    return {k: v.float().cpu() for k, v in labels.items() if k != STUDENT_IMAGE_KEY}


STATISTICS_FACES = 256


def train(
    model: DistillModel,
    data: CachedFaces | OnlineFaces,
    config: TrainConfig,
    weights: LossWeights,
    out: Path,
    *,
    identity: dict,
    resume: bool,
    device: torch.device,
    labeller: Labeller | None = None,
) -> list[dict]:
    """Train on streamed teacher outputs: cached (`CachedFaces`) or, with `labeller`, computed
    for every batch of augmented samples (`OnlineFaces`). Returns the JSONL log records (rank 0).

    Batches are a pure function of the step (`StepBatches`), augmentation of (seed, step, item):
    a resumed run continues exactly where the checkpoint left off.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    torch.manual_seed(config.seed)
    objective = _objective(model, data, weights, labeller)
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is None:
        start_at_teacher_mean(model.student, objective.sample)
    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model), lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16" and device.type == "cuda")
    start = load_checkpoint(checkpoint, model, optimizer, identity, scaler=scaler) if checkpoint else 0
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model  # fmt: skip
    loader = _loader(data, config, start, rank, world, device, online=labeller is not None)
    normalise_tensor(torch.zeros((1, 1, 1, 3), dtype=torch.uint8, device=device), student_recipe(model.student.config))
    # ^ its lookup table reaches the device before the first step, which then copies nothing from the host
    log_path = out / "train_log.jsonl"
    log = _Log(_read_log(log_path, upto=start) if rank == 0 else [])
    bar = tqdm(total=config.steps, initial=start, desc="distil", unit="step", disable=rank != 0, dynamic_ncols=True)
    model.train()
    try:
        tick = time.perf_counter()
        for step, batch in zip(range(start, config.steps), loader):
            if labeller is not None:
                batch = labeller(batch)
            loss, terms, grad_norm = _step(net, model, optimizer, scaler, objective, batch, step, config, device)
            if rank != 0:
                continue
            seconds, tick = time.perf_counter() - tick, time.perf_counter()  # the step, data wait included
            log.add(step + 1, lr_at(step, config), seconds, {"loss": loss, "grad_norm": grad_norm, **terms})
            bar.update(1)
            checkpoint_now = (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps
            if checkpoint_now or (step + 1) % config.log_every == 0:
                bar.set_postfix(loss=f"{log.flush()[-1]['loss']:.3f}")
            if checkpoint_now:
                _write_log(log_path, log.records)
                save_checkpoint(out, step + 1, model, optimizer, identity, scaler=scaler)
    except KeyboardInterrupt:
        records = log.flush()
        if rank == 0 and records and records[-1]["step"] > start:
            _write_log(log_path, records)
            save_checkpoint(out, records[-1]["step"], model, optimizer, identity, scaler=scaler)
        raise
    finally:
        bar.close()
    model.cpu()
    return log.flush()


class _Log:
    """The JSONL log records. Each step's losses stay on the device until `flush`, which reads
    every pending step's in one transfer: the host waits on the device once per flush, not per
    step."""

    def __init__(self, records: list[dict]) -> None:
        self.records, self._pending = records, []

    def add(self, step: int, lr: float, seconds: float, values: dict[str, torch.Tensor]) -> None:
        self._pending.append(({"step": step, "lr": lr, "seconds": round(seconds, 4)}, values))

    def flush(self) -> list[dict]:
        if self._pending:
            names = list(self._pending[0][1])
            table = torch.stack([torch.stack([v[n].detach().float() for n in names]) for _, v in self._pending])
            for (record, _), row in zip(self._pending, table.tolist()):
                self.records.append({**record, **dict(zip(names, row))})
            self._pending = []
        return self.records


@dataclass(frozen=True)
class Objective:
    """What the loss needs besides the batch: the heads, the loss weights, and the scales and
    temperatures fitted on a sample of the teacher's outputs (`sample`)."""

    tasks: tuple
    weights: LossWeights
    sample: dict[str, torch.Tensor]
    scales: dict[str, float]
    temperatures: dict[str, float]


def _objective(model: DistillModel, data, weights: LossWeights, labeller: Labeller | None) -> Objective:
    tasks = model.student.config.tasks
    sample = _statistics(data, labeller)
    temperatures = head_temperatures(tasks, sample, weights.temperature)
    return Objective(tasks, weights, sample, baseline_scales(tasks, sample, temperatures), temperatures)


def _loader(data, config: TrainConfig, start: int, rank: int, world: int, device: torch.device, *, online: bool):
    """This rank's batches from step `start` on, loaded in `config.workers` processes."""
    batches = StepBatches(start=start, steps=config.steps, batch_size=config.batch_size, num_items=len(data),
                          seed=config.seed, rank=rank, world=world)  # fmt: skip
    return DataLoader(
        data, batch_sampler=batches, num_workers=config.workers, pin_memory=device.type == "cuda",
        collate_fn=collate_inputs if online else collate_tensors,
        generator=torch.Generator().manual_seed(config.seed),  # leaves the global RNG (saved in checkpoints) alone
        prefetch_factor=(2 if online else 4) if config.workers else None,  # online items hold photo patches
    )  # fmt: skip


def _step(net, model: DistillModel, optimizer, scaler, objective: Objective, batch: dict[str, torch.Tensor],
          step: int, config: TrainConfig, device: torch.device):  # fmt: skip
    """One optimiser step on a batch: (loss, per-head terms, gradient norm)."""
    recipe = student_recipe(model.student.config)
    images = normalise_tensor(batch[STUDENT_IMAGE_KEY].to(device, non_blocking=True), recipe)
    teacher = {k: v.to(device, non_blocking=True).float() for k, v in batch.items() if k != STUDENT_IMAGE_KEY}
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, config) * group["lr_scale"]
    with autocast(device, config.precision):
        raw, projected = net(images)
    loss, terms = distillation_loss(
        objective.tasks, _float(raw), teacher, objective.weights, scales=objective.scales,
        temperatures=objective.temperatures, features=_float(projected),
    )  # fmt: skip
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), config.clip)
    scaler.step(optimizer)
    scaler.update()
    return loss, terms, grad_norm


def _float(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Autocast outputs in float32: the losses (softmaxes, KLs, cosines) run in full precision."""
    return {k: v.float() for k, v in outputs.items()}


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= upto]


def _write_log(path: Path, records: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())
