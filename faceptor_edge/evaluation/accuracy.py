"""Accuracy against human labels, for the tiny real face sets (`faceptor_edge.evaluation.realfaces`).

Fidelity to a reference model lives in `faceptor_edge.metrics`; these score predictions
against ground truth: inter-ocular NME, k-fold verification and expression accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceptor_edge.errors import UserError

_OUTER_EYE_CORNERS = (36, 45)  # iBUG 68, 0-based


def nme_inter_ocular(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Normalised mean error, the 300W convention.

    Args:
        pred: B×68×2 predicted (x, y) points.
        truth: B×68×2 true points.

    Returns:
        B: mean point-to-point distance over the 68 points divided by the distance between the
        true outer eye corners (0-based 36 and 45).
    """
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if truth.ndim != 3 or truth.shape[1:] != (68, 2) or pred.shape != truth.shape:
        raise UserError(f"NME needs two B×68×2 arrays of the same shape, got {pred.shape} and {truth.shape}")
    inter_ocular = np.linalg.norm(truth[:, _OUTER_EYE_CORNERS[0]] - truth[:, _OUTER_EYE_CORNERS[1]], axis=-1)
    if np.any(inter_ocular <= 0):
        raise UserError("NME: a true face has its outer eye corners (points 36 and 45) on top of each other")
    return np.linalg.norm(pred - truth, axis=-1).mean(axis=1) / inter_ocular


def verification_accuracy(embeddings: np.ndarray, identities: Sequence[str], *, folds: int = 10) -> dict:
    """Face verification accuracy over all pairs, LFW-style k-fold.

    Every pair i < j is scored by cosine similarity and called "same" above a threshold. Positive
    pairs are dealt round-robin to the folds in (i, j) order, negative pairs likewise, so every fold
    has the same mix. For each fold the threshold that is most accurate on the other folds is
    applied to it. With all pairs the classes are unbalanced: chance is 1 − positive_pairs / pairs.

    Args:
        embeddings: N×D face embeddings (any scale; they are L2-normalised here).
        identities: N person labels.
        folds: Number of folds (≥ 2).

    Returns:
        {"accuracy": mean test-fold accuracy, "threshold": mean chosen threshold, "pairs": number of
        pairs, "positive_pairs": number of same-person pairs}.
    """
    embeddings = np.asarray(embeddings, np.float64)
    if embeddings.ndim != 2 or len(identities) != len(embeddings):
        raise UserError(f"verification needs N×D embeddings and N identities, got {embeddings.shape} and "
                        f"{len(identities)} identities")  # fmt: skip
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    i, j = np.triu_indices(len(unit), k=1)
    similarity = (unit @ unit.T)[i, j]
    labels = np.asarray(identities, dtype=object)
    same = labels[i] == labels[j]
    positives, negatives = int(same.sum()), int((~same).sum())
    if folds < 2 or positives == 0 or negatives == 0 or max(positives, negatives) < folds:
        raise UserError(f"verification needs ≥ 2 folds and both same- and different-person pairs (at least "
                        f"{folds} of one kind), got {positives} same and {negatives} different pairs")  # fmt: skip
    fold = np.empty(len(same), dtype=np.int64)
    fold[same] = np.arange(positives) % folds
    fold[~same] = np.arange(negatives) % folds
    accuracies, thresholds = _out_of_fold(similarity, same, fold, folds)
    return {"accuracy": float(accuracies.mean()), "threshold": float(thresholds.mean()),
            "pairs": len(same), "positive_pairs": positives}  # fmt: skip


def _out_of_fold(similarity: np.ndarray, same: np.ndarray, fold: np.ndarray, folds: int) -> tuple[np.ndarray, ...]:
    """Per-fold test accuracy and threshold (chosen on the other folds) of P scored pairs.

    `similarity`, `same` and `fold` (indices in [0, folds)) have length P; "same" is predicted
    above the threshold. Returns (accuracies, thresholds), each of length `folds`.
    """
    accuracies, thresholds = np.zeros(folds), np.zeros(folds)
    for k in range(folds):
        train, test = fold != k, fold == k
        thresholds[k] = _best_threshold(similarity[train], same[train])
        accuracies[k] = np.mean((similarity[test] > thresholds[k]) == same[test])
    return accuracies, thresholds


def _best_threshold(similarity: np.ndarray, same: np.ndarray) -> float:
    """The most accurate threshold: a midpoint between sorted distinct scores (lowest on ties)."""
    values, index = np.unique(similarity, return_inverse=True)
    positives = np.bincount(index, weights=same.astype(np.float64), minlength=len(values))
    negatives = np.bincount(index, weights=(~same).astype(np.float64), minlength=len(values))
    # Candidate k lies just below values[k] (k = len(values): above all); lower scores are called "different".
    pos_below, neg_below = (np.concatenate([[0.0], np.cumsum(counts)]) for counts in (positives, negatives))
    correct = positives.sum() - pos_below + neg_below
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    return float(candidates[np.argmax(correct)])


def expression_accuracy(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """Fraction of faces whose predicted expression name equals the true one."""
    if len(predicted) != len(truth) or len(truth) == 0:
        raise UserError(f"expression accuracy needs equal, non-empty lists, got {len(predicted)} and {len(truth)}")
    return float(np.mean([p == t for p, t in zip(predicted, truth)]))
