"""Distillation losses, one per head type, each matching how that head is decoded.

| head | loss |
|---|---|
| age | KL between sigmoid-then-L1-normalised bin distributions + expected-age L1 (per decade) |
| expression | KL of temperature-softened softmaxes, scaled by T² |
| attributes | BCE against the teacher's sigmoid probabilities |
| parsing | per-pixel KL of the class softmaxes |
| landmarks | BCE of sigmoid heatmaps + L1 of normalised coordinates (in % of the crop) |
| recognition | (1 − cosine) + MSE between in-batch cosine-similarity matrices (relational) |
| features (optional) | MSE between a 1×1 projection of student tokens and teacher layer-11 tokens |
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from faceptor_edge.tasks import TaskSpec, heatmap_key


@dataclass(frozen=True)
class LossWeights:
    """Weight per head type (documented defaults; `--loss-weight TYPE=W` overrides)."""

    recognition: float = 1.0
    age: float = 1.0
    attributes: float = 1.0
    expression: float = 1.0
    parsing: float = 1.0
    landmarks: float = 1.0
    features: float = 0.0
    temperature: float = 2.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def age_distribution(logits: torch.Tensor) -> torch.Tensor:
    """B×101 logits -> sigmoid, L1-normalised (SPEC §5)."""
    p = torch.sigmoid(logits)
    return p / p.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def _age_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    p_s, p_t = age_distribution(student), age_distribution(teacher)
    kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - torch.log(p_s.clamp_min(1e-12)))).sum(-1).mean()
    bins = torch.arange(p_s.shape[-1], dtype=p_s.dtype, device=p_s.device)
    return kl + F.l1_loss(p_s @ bins, p_t @ bins) / 10.0


def _softmax_kl(student: torch.Tensor, teacher: torch.Tensor, dim: int, temperature: float = 1.0) -> torch.Tensor:
    log_s = F.log_softmax(student / temperature, dim=dim)
    log_t = F.log_softmax(teacher / temperature, dim=dim)
    return (log_t.exp() * (log_t - log_s)).sum(dim=dim).mean() * temperature**2


def _landmark_loss(student_points, student_heatmap, teacher_points, teacher_heatmap) -> torch.Tensor:
    size = teacher_heatmap.shape[-1]
    pooled = F.interpolate(student_heatmap, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    heat = F.binary_cross_entropy_with_logits(pooled, torch.sigmoid(teacher_heatmap))
    return heat + 100.0 * F.l1_loss(student_points, teacher_points)


def _embedding_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    cosine = 1.0 - (s * t).sum(-1).mean()
    return cosine + F.mse_loss(s @ s.T, t @ t.T)


def head_loss(task: TaskSpec, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], temperature: float) -> torch.Tensor:
    """Loss of one head. Teacher parsing logits are B×C×M×M (channels first)."""
    s, t = student[task.name], teacher[task.name]
    if task.task_type == "recognition":
        return _embedding_loss(s, t)
    if task.task_type == "age":
        return _age_loss(s, t)
    if task.task_type == "attributes":
        return F.binary_cross_entropy_with_logits(s, torch.sigmoid(t))
    if task.task_type == "expression":
        return _softmax_kl(s, t, dim=-1, temperature=temperature)
    if task.task_type == "parsing":
        return _softmax_kl(s.permute(0, 3, 1, 2), t, dim=1)
    return _landmark_loss(s, student[heatmap_key(task.name)], t, teacher[heatmap_key(task.name)])


def distillation_loss(
    tasks: tuple[TaskSpec, ...],
    student: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor],
    weights: LossWeights,
    *,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum over heads (and optional feature term); also returns each term's value."""
    terms = {task.name: getattr(weights, task.task_type) * head_loss(task, student, teacher, weights.temperature)
             for task in tasks}  # fmt: skip
    if features is not None and weights.features > 0:
        terms["features"] = weights.features * F.mse_loss(*features)
    total = torch.stack(list(terms.values())).sum()
    return total, {name: float(value.detach()) for name, value in terms.items()}
