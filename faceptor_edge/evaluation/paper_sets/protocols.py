"""The paper's evaluation protocols as plain functions on arrays (SPEC §7).

- Landmarks: per-face NME = mean_k ‖pred_k − gt_k‖ / d over the face's points, averaged
  over faces, with each dataset's distance d; AUC and failure rate of the CED curve.
- Parsing: one confusion histogram over every pixel of the whole test set, per-class
  F1 = 2·TP / (#pred + #gt), and the mean over every class but background.
- Age: MAE, CS (share within 5 years), ε-error with σ = 3.
- Expression: top-1. Attributes: per-attribute accuracy of round(sigmoid), averaged.
- Verification: orig+flip embeddings, squared L2 distance, 10 contiguous folds (sklearn's
  `KFold(shuffle=False)`), thresholds arange(0, 4, 0.01) picked on 9 folds.
Values are fractions; the runner reports percentages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faceptor_edge.errors import UserError

CED_STEP = 1e-4
VERIFICATION_THRESHOLDS = np.arange(0, 4, 0.01)
AGE_CS_YEARS = 5.0
AGE_EPSILON_SIGMA = 3.0


def point_errors(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean point-to-point distance of one face: N×2 and N×2 -> a float (pixels)."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if pred.shape != truth.shape or truth.ndim != 2 or truth.shape[1] != 2:
        raise UserError(f"landmarks: prediction {pred.shape} and truth {truth.shape} must both be N×2")
    return float(np.linalg.norm(pred - truth, axis=1).mean())


def corner_distance(truth: np.ndarray, a: int, b: int) -> float:
    """‖truth[a] − truth[b]‖ (inter-ocular or inter-pupil by point index)."""
    return float(np.linalg.norm(truth[a] - truth[b]))


def centre_distance(truth: np.ndarray, left: Sequence[int], right: Sequence[int]) -> float:
    """Distance between the means of two point groups (300W's pupils: points 36–41 and 42–47)."""
    return float(np.linalg.norm(truth[list(left)].mean(axis=0) - truth[list(right)].mean(axis=0)))


def auc_fr(nmes: Sequence[float], threshold: float) -> tuple[float, float]:
    """Area under the CED curve up to `threshold` (divided by it) and the failure rate.

    The CED is sampled at arange(0, threshold + 1e-4, 1e-4) and integrated with Simpson's
    rule (`scipy.integrate.simpson`); FR = 1 − CED at the last sample.

    Args:
        nmes: Per-face NMEs as fractions (not %).
        threshold: 0.1 (COFW, WFLW) or 0.07 (AFLW-19, box-normalised).

    Returns:
        (auc, fr), both fractions.
    """
    try:
        from scipy.integrate import simpson
    except ImportError:
        raise UserError("AUC needs scipy: pip install 'faceptor-edge[paper-sets]'") from None
    errors = np.sort(np.asarray(nmes, np.float64))
    if errors.size == 0:
        raise UserError("AUC of no faces")
    xs = np.arange(0, threshold + CED_STEP, CED_STEP)
    ced = np.searchsorted(errors, xs, side="right") / errors.size  # share of faces with NME ≤ x
    return float(simpson(ced, x=xs) / threshold), float(1.0 - ced[-1])


def confusion(truth: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """classes×classes int64 counts, rows the true class and columns the predicted one."""
    truth, pred = np.asarray(truth).ravel().astype(np.int64), np.asarray(pred).ravel().astype(np.int64)
    if truth.shape != pred.shape:
        raise UserError(f"parsing: truth has {truth.size} pixels, prediction {pred.size}")
    if truth.size and (truth.max() >= classes or pred.max() >= classes or min(truth.min(), pred.min()) < 0):
        raise UserError(f"parsing: a label outside 0..{classes - 1}")
    return np.bincount(truth * classes + pred, minlength=classes * classes).reshape(classes, classes)


def f1_scores(histogram: np.ndarray) -> np.ndarray:
    """Per-class F1 = 2·TP / (#pred + #gt) of a confusion histogram; NaN for a class in neither."""
    histogram = np.asarray(histogram, np.float64)
    total = histogram.sum(axis=0) + histogram.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 2 * np.diag(histogram) / total, np.nan)


def age_metrics(pred: Sequence[float], truth: Sequence[float]) -> dict[str, float]:
    """{"mae": years, "cs": share with |error| ≤ 5, "epsilon": 1 − mean(exp(−error²/(2·3²)))}."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    error = pred - truth
    return {
        "mae": float(np.abs(error).mean()),
        "cs": float(np.mean(np.abs(error) <= AGE_CS_YEARS)),
        "epsilon": float(1.0 - np.mean(np.exp(-(error**2) / (2 * AGE_EPSILON_SIGMA**2)))),
    }


def attribute_accuracy(present: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-attribute accuracy of B×A predicted presences against B×A 0/1 labels -> A."""
    return np.mean(np.asarray(present, bool) == np.asarray(truth, bool), axis=0)


def kfold_splits(count: int, folds: int = 10) -> list[np.ndarray]:
    """The test indices of sklearn's `KFold(folds, shuffle=False)`: contiguous, the first
    count % folds folds one longer."""
    if count < folds:
        raise UserError(f"{folds}-fold verification needs at least {folds} pairs, got {count}")
    sizes = np.full(folds, count // folds) + (np.arange(folds) < count % folds)
    ends = np.cumsum(sizes)
    return [np.arange(end - size, end) for size, end in zip(sizes, ends)]


def verification(distances: np.ndarray, same: np.ndarray, folds: int = 10) -> dict[str, float]:
    """LFW-style 10-fold accuracy over pairs, as InsightFace's evaluation does it.

    For each fold, the threshold of `VERIFICATION_THRESHOLDS` most accurate on the other
    folds (the first on ties) calls a pair "same" when its distance is below it; accuracy
    is measured on the fold.

    Args:
        distances: P squared L2 distances of L2-normalised embeddings (in [0, 4]).
        same: P bools, same person.

    Returns:
        {"accuracy": mean over folds, "std": their population std, "threshold": mean threshold}.
    """
    distances, same = np.asarray(distances, np.float64), np.asarray(same, bool)
    predicted = distances[None, :] < VERIFICATION_THRESHOLDS[:, None]  # T×P
    correct = predicted == same[None, :]
    accuracies, thresholds = [], []
    for test in kfold_splits(len(same), folds):
        train = np.ones(len(same), bool)
        train[test] = False
        best = int(np.argmax(correct[:, train].mean(axis=1)))
        thresholds.append(VERIFICATION_THRESHOLDS[best])
        accuracies.append(correct[best, test].mean())
    return {"accuracy": float(np.mean(accuracies)), "std": float(np.std(accuracies)),
            "threshold": float(np.mean(thresholds))}  # fmt: skip
