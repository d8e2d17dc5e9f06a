"""Distillation losses, one per head type, each matching how that head is decoded.

| head | loss |
|---|---|
| age | KL between sigmoid-then-L1-normalised bin distributions + expected-age L1 (per decade) |
| expression | KL of temperature-softened softmaxes, scaled by T² |
| attributes | BCE against the teacher's sigmoid probabilities, less their entropy (a Bernoulli KL) |
| parsing | per-pixel KL of the class softmaxes |
| landmarks | per-pixel Bernoulli KL of sigmoid heatmaps + L1 of normalised coordinates (% of crop) |
| recognition | (1 − cosine) + MSE between in-batch cosine-similarity matrices (relational) |
| features (optional) | MSE between a 1×1 projection of student tokens and teacher layer-11 tokens |

Every head's loss is zero at the teacher. Heads differ by orders of magnitude in scale
(a teacher whose expressions barely move gives tiny KLs), so each head's loss is divided
by the loss of the trivial student that always outputs the teacher's mean (`baseline_scales`):
1 means "no better than a constant", for every head. The weights then set priorities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from faceptor_edge.tasks import TaskSpec, heatmap_key

FEATURE_KEY = "encoder/face512/layer11"  # teacher tokens the optional feature term matches


@dataclass(frozen=True)
class LossWeights:
    """Weight per head type (documented defaults; `--loss-weight TYPE=W` overrides)."""

    recognition: float = 1.0
    age: float = 1.0
    attributes: float = 1.0
    expression: float = 2.0  # argmax agreement hinges on small logit differences
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


def _bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(teacher ‖ student) of independent sigmoids: BCE less the targets' entropy."""
    p = torch.sigmoid(teacher_logits)
    entropy = F.binary_cross_entropy_with_logits(teacher_logits, p)
    return F.binary_cross_entropy_with_logits(student_logits, p) - entropy


def _landmark_loss(student_points, student_heatmap, teacher_points, teacher_heatmap) -> torch.Tensor:
    pooled = F.adaptive_avg_pool2d(student_heatmap, teacher_heatmap.shape[-2:])
    return _bernoulli_kl(pooled, teacher_heatmap) + 100.0 * F.l1_loss(student_points, teacher_points)


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
        return _bernoulli_kl(s, t)
    if task.task_type == "expression":
        return _softmax_kl(s, t, dim=-1, temperature=temperature)
    if task.task_type == "parsing":
        return _softmax_kl(s.permute(0, 3, 1, 2), t, dim=1)
    return _landmark_loss(s, student[heatmap_key(task.name)], t, teacher[heatmap_key(task.name)])


def mean_student(tasks: tuple[TaskSpec, ...], teacher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Raw outputs of a constant student that always predicts the teacher's batch mean."""
    out = {}
    for task in tasks:
        keys = [task.name] + ([heatmap_key(task.name)] if task.task_type == "landmarks" else [])
        for key in keys:
            mean = teacher[key].mean(dim=0, keepdim=True).expand_as(teacher[key])
            out[key] = mean.permute(0, 2, 3, 1) if task.task_type == "parsing" and key == task.name else mean
    return out


@torch.no_grad()
def baseline_scales(tasks: tuple[TaskSpec, ...], teacher: dict[str, torch.Tensor], temperature: float) -> dict[str, float]:
    """Each head's loss for the mean-output student: the unit its loss is measured in."""
    constant = mean_student(tasks, teacher)
    scales = {task.name: max(float(head_loss(task, constant, teacher, temperature)), 1e-8) for task in tasks}
    if FEATURE_KEY in teacher:
        features = teacher[FEATURE_KEY]
        scales["features"] = max(float(F.mse_loss(features.mean(0, keepdim=True).expand_as(features), features)), 1e-8)
    return scales


def distillation_loss(
    tasks: tuple[TaskSpec, ...],
    student: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor],
    weights: LossWeights,
    *,
    scales: dict[str, float] | None = None,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of per-head losses, each divided by its scale (default 1), plus the
    optional feature term; also returns each weighted term's value."""
    terms = {
        task.name: getattr(weights, task.task_type)
        * head_loss(task, student, teacher, weights.temperature)
        / (scales[task.name] if scales else 1.0)
        for task in tasks
    }
    if features is not None and weights.features > 0:
        terms["features"] = weights.features * F.mse_loss(*features) / (scales["features"] if scales else 1.0)
    total = torch.stack(list(terms.values())).sum()
    return total, {name: float(value.detach()) for name, value in terms.items()}
