"""Parity of an exported artifact: against the float student it came from, and against the teacher.

Against the float student, fp32 artifacts must agree numerically (max abs error) and int8
artifacts at task level, with the thresholds below. Against the teacher, the artifact's
fidelity is compared with the float student's and the drop is bounded by the same numbers:
each head type's `metric` and `int8_threshold` in `faceptor_edge.tasks.HEAD_TYPES`.

Only what the student's teacher trained is judged: heads it left out (`untrained_heads` in the
teacher record) are checked and shown but never fail a run, and heads it covered only in part
(`covered_labels`: the specialists' `Male` of the 40 attributes) are judged on those outputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from faceptor_edge.metrics import head_metrics
from faceptor_edge.tasks import TaskSpec

FP32_MAX_ABS_ERROR = 1e-3
# Decisions (argmax classes, attribute signs, parsing pixels) whose fp32 margin is below this
# many logits are near-ties: any int8 rounding flips them, and flipping them changes the
# probabilities by under 2.5 %. Agreement is checked on the decisive ones, and reported on all.
DECISIVE_MARGIN = 0.1
# With fewer decisive cases than this (a float student whose decisions are all near-ties, as
# one distilled from the stand-in teacher), agreement says nothing; the check is then on the
# probabilities: their mean total-variation distance must stay within 1 − threshold.
MIN_DECISIVE_FRACTION = 0.05


@dataclass(frozen=True)
class Check:
    """One head's parity check."""

    metric: str
    value: float
    threshold: float
    higher_is_better: bool
    extra: dict[str, float]
    judged: bool = True  # False for a head the student's teacher did not train: shown, never failing

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "threshold": self.threshold,
                "higher_is_better": self.higher_is_better, "passed": self.passed, "judged": self.judged,
                **self.extra}  # fmt: skip


@dataclass(frozen=True)
class Trained:
    """What a student's teacher trained (its card's teacher record): heads left out, and the
    labels of heads it covered only in part."""

    untrained: frozenset[str] = frozenset()
    covered_labels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_teacher(cls, teacher: Mapping[str, Any]) -> Trained:
        covered = {name: tuple(labels) for name, labels in teacher.get("covered_labels", {}).items()}
        return cls(frozenset(teacher.get("untrained_heads", ())), covered)

    def judged_outputs(self, task: TaskSpec, raw: np.ndarray) -> np.ndarray:
        """The outputs of `task` its teacher trained: for a partly covered head, its labels' columns."""
        labels = self.covered_labels.get(task.name)
        return raw[..., [task.labels.index(label) for label in labels]] if labels else raw

    def verdict(self, task: TaskSpec, check: Check) -> Check:
        """`check`, marked unjudged when the teacher did not train the head."""
        return replace(check, judged=task.name not in self.untrained)


def _margins(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Per decision: |logit| for multi-label heads (attributes), top-1 minus top-2 logit for
    classes and pixels."""
    if task.head.is_multilabel:
        return np.abs(logits)
    top = np.sort(logits, axis=-1)
    return top[..., -1] - top[..., -2]


def _decisions(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    return logits > 0 if task.head.is_multilabel else logits.argmax(-1)


def _probabilities(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    if task.head.is_multilabel:
        p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        return np.stack([p, 1.0 - p], axis=-1)
    shifted = np.exp(logits.astype(np.float64) - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def decision_check(task: TaskSpec, artifact: np.ndarray, student: np.ndarray, threshold: float, metric: str) -> Check:
    """Agreement on decisive cases (fp32 margin ≥ DECISIVE_MARGIN); when too few are decisive,
    the mean total-variation distance of the probabilities instead (≤ 1 − threshold)."""
    same = _decisions(task, artifact) == _decisions(task, student)
    decisive = _margins(task, student) >= DECISIVE_MARGIN
    tv = 0.5 * np.abs(_probabilities(task, artifact) - _probabilities(task, student)).sum(-1)
    extra = {metric: float(same.mean()), "decisive_fraction": float(decisive.mean()),
             "probability_tv": float(tv.mean())}  # fmt: skip
    if decisive.mean() >= MIN_DECISIVE_FRACTION:
        return Check(f"{metric} (decisive)", float(same[decisive].mean()), threshold, True, extra)
    return Check("probability_tv (near-ties)", float(tv.mean()), round(1.0 - threshold, 6), False, extra)


def _mean_tv(task: TaskSpec, a: np.ndarray, b: np.ndarray) -> float:
    return float(0.5 * np.abs(_probabilities(task, a) - _probabilities(task, b)).sum(-1).mean())


def _errors(artifact: np.ndarray, student: np.ndarray) -> dict[str, float]:
    diff = np.abs(artifact.astype(np.float64) - student.astype(np.float64))
    scale = np.abs(student).max()
    return {"max_abs_error": float(diff.max()), "max_rel_error": float(diff.max() / scale) if scale > 0 else 0.0}


def against_student(
    tasks: tuple[TaskSpec, ...],
    artifact: Mapping[str, np.ndarray],
    student: Mapping[str, np.ndarray],
    precision: str,
    trained: Trained = Trained(),
) -> dict[str, Check]:
    """Per head: fp32 → max abs error (≤ 1e-3); int8 → the head type's metric within its
    `int8_threshold`, for classifiers as agreement on decisive cases (see DECISIVE_MARGIN).
    Only what `trained` says the teacher trained is judged."""
    checks = {}
    for task in tasks:
        ours, theirs = (trained.judged_outputs(task, raw[task.name]) for raw in (artifact, student))
        errors = _errors(ours, theirs)
        if precision == "fp32":
            check = Check("max_abs_error", errors["max_abs_error"], FP32_MAX_ABS_ERROR, False, errors)
        elif task.head.is_classifier:
            metric, threshold = task.head.metric, task.head.int8_threshold
            check = decision_check(task, ours, theirs, threshold, metric)
            check = replace(check, extra={**check.extra, **errors})
        else:
            values = head_metrics(task, ours, theirs)
            metric, threshold, higher = task.head.metric, task.head.int8_threshold, task.head.higher_is_better
            check = Check(metric, values[metric], threshold, higher, {**values, **errors})
        checks[task.name] = trained.verdict(task, check)
    return checks


def all_passed(checks: Mapping[str, Check]) -> bool:
    """Whether every judged check passed (heads the teacher did not train never fail a run)."""
    return all(check.passed for check in checks.values() if check.judged)


def against_teacher(
    tasks: tuple[TaskSpec, ...],
    artifact: Mapping[str, np.ndarray],
    student: Mapping[str, np.ndarray],
    teacher: Mapping[str, np.ndarray],
    trained: Trained = Trained(),
) -> dict[str, dict[str, Any]]:
    """Per head: the distillation fidelity metric of the float student and of the artifact,
    and the artifact's drop, bounded by the int8 threshold's distance from perfect. Where the
    float student's decisions are near-ties, the drop is measured on the probabilities
    (growth of their total-variation distance to the teacher's), as in `against_student`.
    Partly covered heads are measured on the labels `trained` names."""
    rows = {}
    for task in tasks:
        metric, threshold, higher = task.head.metric, task.head.int8_threshold, task.head.higher_is_better
        ours_raw, theirs_raw, reference = (trained.judged_outputs(task, outputs[task.name])
                                           for outputs in (student, artifact, teacher))  # fmt: skip
        ours = head_metrics(task, ours_raw, reference)[metric]
        theirs = head_metrics(task, theirs_raw, reference)[metric]
        row = {"metric": metric, "student": ours, "artifact": theirs}
        near_ties = (
            task.head.is_classifier and (_margins(task, ours_raw) >= DECISIVE_MARGIN).mean() < MIN_DECISIVE_FRACTION
        )
        if near_ties:
            drop = _mean_tv(task, theirs_raw, reference) - _mean_tv(task, ours_raw, reference)
            row.update(drop_measure="probability_tv (near-ties)")
        else:
            drop = ours - theirs if higher else theirs - ours
        bound = round(1.0 - threshold, 6) if higher else threshold
        rows[task.name] = {**row, "drop": drop, "max_drop": bound, "passed": drop <= bound}
    return rows
