"""Fidelity of one model's raw outputs to a reference model's, per head.

Inputs are raw-output dicts in the shared layout (SPEC §4; parsing channels last,
landmarks normalised). Every head has one primary metric; `fidelity_table` also scores
a trivial baseline, the reference's mean raw output, so a constant is never mistaken
for fidelity.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from faceptor_edge import decode
from faceptor_edge.tasks import AGE, ATTRIBUTES, EXPRESSION, PARSING, RECOGNITION, TaskSpec


def _parsing_at(logits: np.ndarray, size: int) -> np.ndarray:
    """B×H×W×C logits -> B×size×size labels (nearest resize of the argmax when grids differ)."""
    labels = decode.parsing_labels(logits)
    if labels.shape[1] == size:
        return labels
    index = ((np.arange(size) + 0.5) * labels.shape[1] / size).astype(int)
    return labels[:, index][:, :, index]


# Why a secondary metric is None (JSON null) where the faces cannot define it.
UNDEFINED = {
    "r2": "the reference's ages do not vary over these faces",
    "similarity_correlation": "needs 3 or more faces whose reference similarities vary",
}


def _corr(candidate: np.ndarray, reference: np.ndarray) -> float | None:
    """Pearson correlation; None where the reference does not vary (undefined), 0 where only
    the candidate is constant (it carries none of the reference's structure)."""
    if len(reference) < 2 or reference.std() == 0:
        return None
    if candidate.std() == 0:
        return 0.0
    return float(np.corrcoef(candidate, reference)[0, 1])


def head_metrics(task: TaskSpec, candidate: np.ndarray, reference: np.ndarray) -> dict[str, float | None]:
    """All metrics of one head: candidate vs reference raw outputs (batched); among them
    the head type's primary `metric`. A secondary metric the faces cannot define is None
    (`UNDEFINED` says why)."""
    head = task.head
    if head is AGE:
        c, r = decode.age_years(candidate), decode.age_years(reference)
        sst = float(((r - r.mean()) ** 2).sum())
        r2 = 1.0 - float(((c - r) ** 2).sum()) / sst if sst > 0 else None
        return {"mae_years": float(np.abs(c - r).mean()), "r2": r2}
    if head is EXPRESSION:
        return {"top1_agreement": float((candidate.argmax(-1) == reference.argmax(-1)).mean())}
    if head is ATTRIBUTES:
        return {"mean_agreement": float((decode.attributes(candidate)[1] == decode.attributes(reference)[1]).mean())}
    if head is RECOGNITION:
        c, r = decode.l2_normalize(candidate), decode.l2_normalize(reference)
        upper = np.triu_indices(len(c), k=1)
        return {
            "mean_cosine": float((c * r).sum(-1).mean()),
            "similarity_correlation": _corr((c @ c.T)[upper], (r @ r.T)[upper]),
        }
    if head is PARSING:
        r = decode.parsing_labels(reference)
        c = _parsing_at(candidate, r.shape[1])
        ious = [((c == k) & (r == k)).sum() / ((c == k) | (r == k)).sum() for k in np.unique(r)]
        return {"pixel_agreement": float((c == r).mean()), "mean_iou": float(np.mean(ious))}
    distance = np.linalg.norm(np.asarray(candidate) - np.asarray(reference), axis=-1)  # B×N, crop fractions
    return {"nme_crop_pct": 100.0 * float(distance.mean())}


def mean_output(outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The trivial baseline: each head's mean raw output, as a batch of one."""
    return {key: np.asarray(value, dtype=np.float32).mean(axis=0, keepdims=True) for key, value in outputs.items()}


def fidelity_table(
    tasks: tuple[TaskSpec, ...],
    candidate: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    baseline: Mapping[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Per head: primary metric of candidate and of the constant baseline, plus all extras."""
    heads = {}
    for task in tasks:
        ref = np.asarray(reference[task.name])
        base = np.repeat(np.asarray(baseline[task.name]), len(ref), axis=0)
        ours = head_metrics(task, np.asarray(candidate[task.name]), ref)
        theirs = head_metrics(task, base, ref)
        metric = task.head.metric
        heads[task.name] = {
            "metric": metric,
            "student": ours[metric],
            "baseline": theirs[metric],
            "higher_is_better": task.head.higher_is_better,
            "all": {
                name: {"student": value, "baseline": theirs[name]} | ({"why": UNDEFINED[name]} if value is None else {})
                for name, value in ours.items()
            },
        }
    return heads


def format_table(heads: Mapping[str, Mapping[str, Any]], columns: tuple[str, str] = ("student", "baseline")) -> str:
    """A fixed-width table of `fidelity_table` output for terminals and logs."""
    lines = [f"{'head':18s} {'metric':16s} {columns[0]:>10s} {columns[1]:>10s}  better"]
    for name, row in heads.items():
        a, b = row[columns[0]], row[columns[1]]
        wins = (a > b) if row["higher_is_better"] else (a < b)
        lines.append(f"{name:18s} {row['metric']:16s} {a:10.4f} {b:10.4f}  {'yes' if wins else 'NO'}")
    return "\n".join(lines)


def fidelity_score(
    tasks: tuple[TaskSpec, ...], candidate: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
) -> float:
    """One number in [0, 1] for the fidelity of all heads (higher is better), for accuracy-
    controlled quantization: the mean over heads of agreement (expression, attributes,
    parsing pixels), cosine (embedding, clipped at 0), 1/(1 + MAE years) (age) and
    1/(1 + NME % of crop) (landmarks): a primary metric scores max(0, value) where higher
    is better and 1/(1 + error) where lower is."""
    scores = []
    for task in tasks:
        value = head_metrics(task, np.asarray(candidate[task.name]), np.asarray(reference[task.name]))[task.head.metric]
        scores.append(max(0.0, value) if task.head.higher_is_better else 1.0 / (1.0 + value))
    return float(np.mean(scores))
