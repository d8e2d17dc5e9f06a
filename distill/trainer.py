"""The distillation loop: AdamW, warmup + cosine, clipping, DDP, checkpoints, exact resume."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from faceptor_edge.distill.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from faceptor_edge.distill.keys import STUDENT_IMAGE_KEY
from faceptor_edge.distill.losses import (
    FEATURE_KEYS,
    LossWeights,
    baseline_scales,
    distillation_loss,
    expression_spread,
    head_temperatures,
    mean_student,
)
from faceptor_edge.files import atomic_write_bytes
from faceptor_edge.student.inputs import normalise, student_recipe
from faceptor_edge.student.model import FaceptorStudent
from faceptor_edge.tasks import EXPRESSION, heatmap_key


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 50
    clip: float = 1.0
    checkpoint_every: int = 100
    seed: int = 0


def lr_at(step: int, config: TrainConfig) -> float:
    """Linear warmup, then cosine decay to 5 % of the peak."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def batch_indices(step: int, config: TrainConfig, num_items: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """This rank's share of the global batch at `step`: a pure function of the step, for exact resume."""
    start = step * config.batch_size
    epochs = range(start // num_items, (start + config.batch_size - 1) // num_items + 1)
    stream = np.concatenate([np.random.default_rng([config.seed, e]).permutation(num_items) for e in epochs])
    offset = start - epochs[0] * num_items
    return stream[offset : offset + config.batch_size][rank::world]


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
        if self.feature_keys:
            student.encoder.stages[2].register_forward_hook(lambda _m, _i, out: self._tokens.append(out))

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
    varies; expression readouts learn it in units of the teacher's spread (`expression_spread`)."""
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
            if task.head is EXPRESSION:
                student.value_heads[task.name].scale.fill_(expression_spread(task, teacher))


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


# Parameters that start at the teacher's mean outputs (the constant part of each head),
# and the age and attribute readouts, learn at a tenth of the rate. Where the teacher
# barely varies (the stand-in's age and parsing), full-rate Adam steps on them alone would
# move outputs further than the teacher ever does. Expression readouts instead learn in
# units of the teacher's spread (`expression_spread`).
PRIOR_LR_SCALE = 0.1


def _param_groups(model: DistillModel) -> list[dict]:
    student = model.student
    expression = {t.name for t in student.config.tasks if t.head is EXPRESSION}
    readouts = [p for name, head in student.value_heads.items()
                for p in ([head.bias] if name in expression else head.parameters())]  # fmt: skip
    prior = [student.map_query_bias, student.pixel_decoder.position, *readouts]
    slow = {id(p) for p in prior}
    return [
        {"params": [p for p in model.parameters() if id(p) not in slow], "lr_scale": 1.0},
        {"params": prior, "lr_scale": PRIOR_LR_SCALE},
    ]


def _to_torch(cache: dict[str, np.ndarray], indices: np.ndarray) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v[indices].astype(np.float32)) for k, v in cache.items() if k != STUDENT_IMAGE_KEY}


def train(
    model: DistillModel,
    cache: dict[str, np.ndarray],
    config: TrainConfig,
    weights: LossWeights,
    out: Path,
    *,
    identity: dict,
    resume: bool,
) -> list[dict]:
    """Train on cached teacher outputs; returns the JSONL log records (rank 0)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    torch.manual_seed(config.seed)
    tasks = model.student.config.tasks
    recipe = student_recipe(model.student.config)
    num_items = len(cache[STUDENT_IMAGE_KEY])
    sample = _to_torch(cache, np.arange(min(num_items, 256)))
    temperatures = head_temperatures(tasks, sample, weights.temperature)
    scales = baseline_scales(tasks, sample, temperatures)
    optimizer = torch.optim.AdamW(_param_groups(model), lr=config.lr, weight_decay=config.weight_decay)
    checkpoint = latest_checkpoint(out) if resume else None
    if checkpoint is not None:
        start = load_checkpoint(checkpoint, model, optimizer, identity)
    else:
        start = 0
        start_at_teacher_mean(model.student, sample)
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    log_path = out / "train_log.jsonl"
    records = _read_log(log_path, upto=start) if rank == 0 else []
    bar = tqdm(total=config.steps, initial=start, desc="distil", unit="step", disable=rank != 0, dynamic_ncols=True)
    step = start
    model.train()
    try:
        for step in range(start, config.steps):
            indices = batch_indices(step, config, num_items, rank, world)
            teacher = _to_torch(cache, indices)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config) * group["lr_scale"]
            raw, projected = net(normalise(cache[STUDENT_IMAGE_KEY][indices], recipe))
            loss, terms = distillation_loss(
                tasks, raw, teacher, weights, scales=scales, temperatures=temperatures, features=projected
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.clip))
            optimizer.step()
            if rank == 0:
                records.append(
                    {"step": step + 1, "lr": lr_at(step, config), "loss": loss.item(), "grad_norm": grad_norm, **terms}
                )
                bar.set_postfix(loss=f"{loss.item():.3f}")
                bar.update(1)
                if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                    _write_log(log_path, records)
                    save_checkpoint(out, step + 1, model, optimizer, identity)
    except KeyboardInterrupt:
        if rank == 0 and records and records[-1]["step"] > start:
            _write_log(log_path, records)
            save_checkpoint(out, records[-1]["step"], model, optimizer, identity)
        raise
    finally:
        bar.close()
    return records


def _read_log(path: Path, upto: int) -> list[dict]:
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= upto]


def _write_log(path: Path, records: list[dict]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


@torch.inference_mode()
def predict(student: FaceptorStudent, images: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Student raw outputs (numpy) for B×S×S×3 uint8 crops, in eval mode."""
    student.eval()
    recipe = student_recipe(student.config)
    parts = [student(normalise(images[i : i + batch_size], recipe)) for i in range(0, len(images), batch_size)]
    return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}


def parsing_channels_last(cache: dict[str, np.ndarray], tasks) -> dict[str, np.ndarray]:
    """Cached teacher outputs in the shared raw layout (parsing B×M×M×C float32)."""
    out = {}
    for task in tasks:
        value = cache[task.name].astype(np.float32)
        out[task.name] = value.transpose(0, 2, 3, 1) if task.head.is_channels_last else value
    return out
