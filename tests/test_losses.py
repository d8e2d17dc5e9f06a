"""Each distillation loss is minimal when the student matches the teacher, and pulls towards it."""

import torch

from faceptor_edge.distill.losses import (
    FEATURE_KEYS,
    LossWeights,
    baseline_scales,
    distillation_loss,
    head_loss,
    head_temperatures,
)
from faceptor_edge.tasks import FULL_TASKS, heatmap_key


def _teacher_from(raw):
    out = {}
    for task in FULL_TASKS:
        value = raw[task.name].detach()
        out[task.name] = value
        if task.task_type == "landmarks":
            out[heatmap_key(task.name)] = torch.nn.functional.avg_pool2d(raw[heatmap_key(task.name)].detach(), 2)
    return out


def _raw(seed):
    g = torch.Generator().manual_seed(seed)
    raw = {}
    for task in FULL_TASKS:
        if task.task_type == "parsing":
            raw[task.name] = torch.randn(4, 8, 8, task.num_queries, generator=g)
        elif task.task_type == "landmarks":
            heat = torch.randn(4, task.num_queries, 8, 8, generator=g)
            raw[heatmap_key(task.name)] = heat
            raw[task.name] = torch.rand(4, task.num_queries, 2, generator=g)
        else:
            raw[task.name] = torch.randn(4, *task.raw_shape, generator=g)
    return raw


def test_each_head_loss_is_smaller_at_the_teacher_than_elsewhere():
    teacher = _teacher_from(_raw(0))
    match, other = _raw(0), _raw(1)
    for task in FULL_TASKS:
        at_teacher = head_loss(task, match, teacher, temperature=2.0)
        away = head_loss(task, other, teacher, temperature=2.0)
        assert at_teacher < away, task.name


def test_gradient_vanishes_at_the_teacher():
    raw = {k: v.requires_grad_() for k, v in _raw(0).items()}
    loss, terms = distillation_loss(FULL_TASKS, raw, _teacher_from(raw), LossWeights())
    loss.backward()
    for task in FULL_TASKS:
        if task.task_type in ("age", "expression", "attributes", "parsing"):
            assert raw[task.name].grad.abs().max() < 1e-5, task.name
    assert set(terms) == {t.name for t in FULL_TASKS}


def test_weights_scale_terms_and_features_are_optional():
    raw, teacher = _raw(1), _teacher_from(_raw(0))
    _, base = distillation_loss(FULL_TASKS, raw, teacher, LossWeights())
    _, doubled = distillation_loss(FULL_TASKS, raw, teacher, LossWeights(parsing=2 * LossWeights().parsing))
    assert abs(doubled["parsing_lapa"] - 2 * base["parsing_lapa"]) < 1e-4
    key = FEATURE_KEYS[1]
    teacher[key] = torch.ones(2, 4, 3, 3)
    feats = {key: torch.zeros(2, 4, 3, 3)}
    _, with_features = distillation_loss(FULL_TASKS, raw, teacher, LossWeights(features=0.5), features=feats)
    assert abs(with_features[key] - 0.5) < 1e-6


def test_expression_loss_is_measured_in_units_of_the_teachers_spread():
    """Shrinking every expression logit (student and teacher) 100-fold, as the stand-in's are,
    shrinks the temperatures alike and leaves the normalised loss unchanged."""
    expression = tuple(t for t in FULL_TASKS if t.task_type == "expression")
    student_raw, teacher_raw = _raw(1), _raw(0)
    results = []
    for shrink in (1.0, 0.01):
        student = {t.name: shrink * student_raw[t.name] for t in expression}
        teacher = {t.name: shrink * teacher_raw[t.name] for t in expression}
        temperatures = head_temperatures(expression, teacher, relative=1.0)
        scales = baseline_scales(expression, teacher, temperatures)
        loss, _ = distillation_loss(
            expression, student, teacher, LossWeights(), scales=scales, temperatures=temperatures
        )
        results.append((temperatures, float(loss)))
    (wide, wide_loss), (narrow, narrow_loss) = results
    assert all(abs(narrow[t.name] - 0.01 * wide[t.name]) < 1e-9 for t in expression)
    assert abs(wide_loss - narrow_loss) < 1e-4 * wide_loss
