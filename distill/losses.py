"""Distillation losses, one per head type, each matching how that head is decoded.

| head | loss |
|---|---|
| age | KL between sigmoid-then-L1-normalised bin distributions + expected-age L1 (per decade) |
| expression | KL of temperature-softened softmaxes, scaled by T²; T in units of the teacher's spread |
| attributes | BCE against the teacher's sigmoid probabilities, less their entropy (a Bernoulli KL) |
| parsing | per-pixel KL of the class softmaxes |
| landmarks | per-pixel Bernoulli KL of sigmoid heatmaps + L1 of normalised coordinates (% of crop) |
| recognition | (1 − cosine) + MSE between in-batch cosine-similarity matrices (relational) |
| features (optional) | per teacher group, MSE between a 1×1 projection of student tokens and its layer-11 tokens |

Every head's loss is zero at the teacher. A teacher that covers only some heads or faces
(the specialists) leaves uncovered heads out and marks unlabelled faces in `mask_key` masks;
losses average over what is labelled. Heads differ by orders of magnitude in scale
(a teacher whose expressions barely move gives tiny KLs), so each head's loss is divided
by the loss of the trivial student that always outputs the teacher's mean (`baseline_scales`):
1 means "no better than a constant", for every head. The weights then set priorities.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from faceptor_edge.distill.keys import FEATURE_KEYS, FEATURE_MASK_KEY, coverage_key, mask_key
from faceptor_edge.tasks import AGE, ATTRIBUTES, EXPRESSION, PARSING, RECOGNITION, TaskSpec, heatmap_key

# Teacher tokens the optional feature hints match: layer 11 of the dense group, which feeds
# parsing and landmarks, and of the 112 group, which feeds every value head.


@dataclass(frozen=True)
class LossWeights:
    """Weight per head type (documented defaults; `--loss-weight TYPE=W` overrides)."""

    recognition: float = 1.0
    age: float = 1.0
    attributes: float = 1.0
    expression: float = 3.0  # argmax agreement hinges on small logit differences
    parsing: float = 4.0  # shares the pixel decoder with four landmark heads, which otherwise dominate it
    landmarks: float = 1.0
    features: float = 1.0  # Faceptor teachers only: the specialists have no encoder, so they skip it
    temperature: float = 1.0  # expression softmax temperature, in units of each head's spread (`head_temperatures`)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def age_distribution(logits: torch.Tensor) -> torch.Tensor:
    """B×101 logits -> sigmoid, L1-normalised (SPEC §5)."""
    p = torch.sigmoid(logits)
    return p / p.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def _age_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """B: distribution KL + expected-age L1 per decade."""
    p_s, p_t = age_distribution(student), age_distribution(teacher)
    kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - torch.log(p_s.clamp_min(1e-12)))).sum(-1)
    bins = torch.arange(p_s.shape[-1], dtype=p_s.dtype, device=p_s.device)
    return kl + (p_s @ bins - p_t @ bins).abs() / 10.0


def _softmax_kl(student: torch.Tensor, teacher: torch.Tensor, dim: int, temperature: float = 1.0) -> torch.Tensor:
    """KL of the temperature softmaxes over `dim` (B×K -> B; B×M×M×C -> B×M×M)."""
    log_s = F.log_softmax(student / temperature, dim=dim)
    log_t = F.log_softmax(teacher / temperature, dim=dim)
    return (log_t.exp() * (log_t - log_s)).sum(dim=dim) * temperature**2


def _covered_mean(values: torch.Tensor, coverage: torch.Tensor | None) -> torch.Tensor:
    """B×M×M -> B: each face's mean over the cells its teacher framing covered (all when None)."""
    if coverage is None:
        return values.flatten(1).mean(1)
    coverage = coverage.to(values.dtype)
    return (values * coverage).flatten(1).sum(1) / coverage.flatten(1).sum(1).clamp_min(1.0)


def _bernoulli_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(teacher ‖ student) of independent sigmoids: BCE less the targets' entropy."""
    p = torch.sigmoid(teacher_logits)
    entropy = F.binary_cross_entropy_with_logits(teacher_logits, p, reduction="none")
    return F.binary_cross_entropy_with_logits(student_logits, p, reduction="none") - entropy


def _landmark_loss(student_points, student_heatmap, teacher_points, teacher_heatmap) -> torch.Tensor:
    """B: heatmap Bernoulli KL (when the teacher has heatmaps) + L1 of coordinates in % of the crop."""
    loss = 100.0 * (student_points - teacher_points).abs().flatten(1).mean(1)
    if teacher_heatmap is not None:
        pooled = F.adaptive_avg_pool2d(student_heatmap, teacher_heatmap.shape[-2:])
        loss = loss + _bernoulli_kl(pooled, teacher_heatmap).flatten(1).mean(1)
    return loss


def _embedding_loss(student: torch.Tensor, teacher: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """B: (1 − cosine) + each face's row of the squared similarity-matrix error over valid faces."""
    s, t = F.normalize(student, dim=-1), F.normalize(teacher, dim=-1)
    cosine = 1.0 - (s * t).sum(-1)
    pairs = valid[:, None] * valid[None, :]  # B×B
    relational = (((s @ s.T - t @ t.T) ** 2) * pairs).sum(1) / pairs.sum(1).clamp_min(1.0)
    return cosine + relational


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype).expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def covered(task: TaskSpec, teacher: dict[str, torch.Tensor]) -> bool:
    """Whether the teacher labels this head at all (specialists leave some out)."""
    return task.name in teacher


def head_loss(
    task: TaskSpec, student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor], temperature: float
) -> torch.Tensor:
    """Loss of one head, averaged over the faces (and outputs) the teacher's mask marks valid.
    Parsing logits are B×M×M×C (channels last) on both sides."""
    s, t = student[task.name], teacher[task.name]
    mask = teacher.get(mask_key(task.name))
    head = task.head
    if head is ATTRIBUTES:
        return _masked_mean(_bernoulli_kl(s, t), mask if mask is None or mask.dim() == 2 else mask[:, None])
    if head is RECOGNITION:
        valid = torch.ones(len(s), dtype=s.dtype, device=s.device) if mask is None else mask.to(s.dtype)
        return _masked_mean(_embedding_loss(s, t, valid), mask)
    if head is AGE:
        per_face = _age_loss(s, t)
    elif head is EXPRESSION:
        per_face = _softmax_kl(s, t, dim=-1, temperature=temperature)
    elif head is PARSING:
        kl = _softmax_kl(s, t, dim=-1)  # B×M×M
        per_face = _covered_mean(kl, teacher.get(coverage_key(task.name)))
    else:
        per_face = _landmark_loss(s, student[heatmap_key(task.name)], t, teacher.get(heatmap_key(task.name)))
    return _masked_mean(per_face, mask)


def value_spread(task: TaskSpec, teacher: dict[str, torch.Tensor]) -> float:
    """How far a value head's teacher logits move between (valid) faces: per output, the
    standard deviation over the faces that output is labelled on, averaged over outputs.
    Expression logits are centred over the classes first (a softmax ignores a shift shared
    by every class). 1 when they do not move at all."""
    values = teacher[task.name].double()
    mask = teacher.get(mask_key(task.name))
    if task.head is EXPRESSION:
        values = values - values.mean(dim=1, keepdim=True)
    valid = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()
    valid = valid[:, None].expand_as(values) if valid.dim() == 1 else valid
    spreads = [values[valid[:, j], j].std() for j in range(values.shape[1]) if valid[:, j].sum() > 1]
    spread = float(torch.stack(spreads).mean()) if spreads else 0.0
    return spread if spread > 1e-6 else 1.0


def head_temperatures(
    tasks: tuple[TaskSpec, ...], teacher: dict[str, torch.Tensor], relative: float
) -> dict[str, float]:
    """Softmax temperature of each covered expression head: `relative` × its teacher's spread.
    A fixed T means nothing across teachers: fer's logits move by about 1.5 between faces, the
    stand-in's by hundredths, where T = 2 flattens every softmax and the KL weighs all classes
    alike instead of the few that compete for the top."""
    return {t.name: relative * value_spread(t, teacher)
            for t in tasks if t.head is EXPRESSION and covered(t, teacher)}  # fmt: skip


def _valid_mean(value: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the batch of the faces a B mask marks valid (all when there is no mask)."""
    if mask is None or mask.dim() != 1 or mask.sum() == 0:
        return value.mean(dim=0, keepdim=True)
    weights = mask.to(value.dtype).reshape(-1, *([1] * (value.dim() - 1)))
    return (value * weights).sum(0, keepdim=True) / weights.sum()


def mean_student(tasks: tuple[TaskSpec, ...], teacher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Raw outputs of a constant student that always predicts the teacher's mean over valid faces
    (covered heads only)."""
    out = {}
    for task in (t for t in tasks if covered(t, teacher)):
        mask = teacher.get(mask_key(task.name))
        keys = [task.name] + ([heatmap_key(task.name)] if heatmap_key(task.name) in teacher else [])
        for key in keys:
            out[key] = _valid_mean(teacher[key], mask).expand_as(teacher[key])
    return out


@torch.no_grad()
def baseline_scales(
    tasks: tuple[TaskSpec, ...], teacher: dict[str, torch.Tensor], temperatures: dict[str, float]
) -> dict[str, float]:
    """Each covered head's loss for the mean-output student: the unit its loss is measured in."""
    constant = mean_student(tasks, teacher)
    scales = {task.name: max(float(head_loss(task, constant, teacher, temperatures.get(task.name, 1.0))), 1e-8)
              for task in tasks if covered(task, teacher)}  # fmt: skip
    for key in (k for k in FEATURE_KEYS if k in teacher):
        features = teacher[key]
        scales[key] = max(float(F.mse_loss(features.mean(0, keepdim=True).expand_as(features), features)), 1e-8)
    return scales


def distillation_loss(
    tasks: tuple[TaskSpec, ...],
    student: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor],
    weights: LossWeights,
    *,
    scales: dict[str, float] | None = None,
    temperatures: dict[str, float] | None = None,
    features: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the losses of the heads the teacher covers, each divided by its scale
    (default 1), plus the optional feature hints (student projections keyed like the teacher
    tokens they match); also returns each weighted term's value. Expression heads use
    `temperatures` (`head_temperatures`; default T = 1)."""
    terms = {
        task.name: getattr(weights, task.task_type)
        * head_loss(task, student, teacher, (temperatures or {}).get(task.name, 1.0))
        / (scales[task.name] if scales else 1.0)
        for task in tasks
        if covered(task, teacher)
    }
    if features and weights.features > 0:
        mask = teacher.get(FEATURE_MASK_KEY)  # faces whose tokens still hold (see FEATURE_MASK_KEY)
        for key, projected in features.items():
            per_face = (projected - teacher[key]).square().flatten(1).mean(1)
            terms[key] = weights.features * _masked_mean(per_face, mask) / (scales[key] if scales else 1.0)
    total = torch.stack(list(terms.values())).sum()
    return total, {name: value.detach() for name, value in terms.items()}
