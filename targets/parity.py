"""Parity of an exported artifact: against the float student it came from, and against the teacher.

Against the float student, fp32 artifacts must agree numerically (max abs error) and int8
artifacts at task level, with the thresholds below. Against the teacher, the artifact's
fidelity is compared with the float student's and the drop is bounded by the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from faceptor_edge.metrics import PRIMARY, head_metrics
from faceptor_edge.tasks import TaskSpec

# Per head type: (metric, threshold, higher_is_better) for int8 artifacts vs the fp32 student.
# The same numbers bound each artifact's drop in fidelity to the teacher.
INT8_THRESHOLDS: dict[str, tuple[str, float, bool]] = {
    "recognition": ("mean_cosine", 0.98, True),
    "age": ("mae_years", 1.0, False),
    "attributes": ("mean_agreement", 0.98, True),
    "expression": ("top1_agreement", 0.98, True),
    "parsing": ("pixel_agreement", 0.97, True),
    "landmarks": ("nme_crop_pct", 1.0, False),
}
FP32_MAX_ABS_ERROR = 1e-3


@dataclass(frozen=True)
class Check:
    """One head's parity check."""

    metric: str
    value: float
    threshold: float
    higher_is_better: bool
    extra: dict[str, float]

    @property
    def passed(self) -> bool:
        return self.value >= self.threshold if self.higher_is_better else self.value <= self.threshold

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "threshold": self.threshold,
                "higher_is_better": self.higher_is_better, "passed": self.passed, **self.extra}  # fmt: skip


def _errors(artifact: np.ndarray, student: np.ndarray) -> dict[str, float]:
    diff = np.abs(artifact.astype(np.float64) - student.astype(np.float64))
    scale = np.abs(student).max()
    return {"max_abs_error": float(diff.max()), "max_rel_error": float(diff.max() / scale) if scale > 0 else 0.0}


def against_student(
    tasks: tuple[TaskSpec, ...], artifact: Mapping[str, np.ndarray], student: Mapping[str, np.ndarray], precision: str
) -> dict[str, Check]:
    """Per head: fp32 → max abs error (≤ 1e-3); int8 → task-level agreement with INT8_THRESHOLDS."""
    checks = {}
    for task in tasks:
        errors = _errors(artifact[task.name], student[task.name])
        if precision == "fp32":
            checks[task.name] = Check("max_abs_error", errors["max_abs_error"], FP32_MAX_ABS_ERROR, False, errors)
            continue
        metric, threshold, higher = INT8_THRESHOLDS[task.task_type]
        values = head_metrics(task, artifact[task.name], student[task.name])
        checks[task.name] = Check(metric, values[metric], threshold, higher, {**values, **errors})
    return checks


def against_teacher(
    tasks: tuple[TaskSpec, ...],
    artifact: Mapping[str, np.ndarray],
    student: Mapping[str, np.ndarray],
    teacher: Mapping[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Per head: the distillation fidelity metric of the float student and of the artifact,
    and the artifact's drop, bounded by the int8 threshold's distance from perfect."""
    rows = {}
    for task in tasks:
        metric, higher = PRIMARY[task.task_type]
        ours = head_metrics(task, student[task.name], teacher[task.name])[metric]
        theirs = head_metrics(task, artifact[task.name], teacher[task.name])[metric]
        drop = ours - theirs if higher else theirs - ours
        _, threshold, _ = INT8_THRESHOLDS[task.task_type]
        bound = 1.0 - threshold if higher else threshold
        rows[task.name] = {"metric": metric, "student": ours, "artifact": theirs, "drop": drop,
                           "max_drop": bound, "passed": drop <= bound}  # fmt: skip
    return rows
