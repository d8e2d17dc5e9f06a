"""Streaming scores: each takes one face's prediction at a time and ends with the protocol's metrics.

A score keeps only what its protocol needs (per-face NMEs, one confusion histogram,
running counts, or the 512-d embeddings of a verification set), never the images. Every
`result()` is a flat {metric: value or None} dict: percentages for shares (NME %, F1 %,
accuracy %), years for age; None where the protocol is undefined on what was scored (an
empty split, a class absent everywhere, too few pairs), with the reason in `reasons`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceptor_edge.errors import UserError
from faceptor_edge.evaluation.paper_sets import protocols
from faceptor_edge.evaluation.paper_sets.samples import Sample

Norm = Callable[[np.ndarray, Sample], float]  # (true N×2 points, sample) -> the normalising distance (px)
Metrics = dict[str, float | None]


def corners(a: int, b: int) -> Norm:
    """The distance between true points a and b (0-based)."""
    return lambda truth, sample: protocols.corner_distance(truth, a, b)


def centres(left: range, right: range) -> Norm:
    """The distance between the means of two groups of true points."""
    return lambda truth, sample: protocols.centre_distance(truth, left, right)


def given(name: str) -> Norm:
    """A distance the dataset gives per face (`Sample.norm[name]`, e.g. AFLW-19's box size)."""
    return lambda truth, sample: sample.norm[name]


@dataclass
class LandmarkScore:
    """NME per normalisation and split, plus AUC/FR of one normalisation.

    Attributes:
        norms: Name -> distance; metric `<split>/nme_<name>`.
        splits: Tags to report (a face counts in each of its `Sample.tags`).
        auc: (norm name, threshold) for `<split>/auc_<thr>` and `<split>/fr_<thr>`, or None.
    """

    norms: dict[str, Norm]
    splits: tuple[str, ...]
    auc: tuple[str, float] | None = None
    rows: list[tuple[tuple[str, ...], dict[str, float]]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, index: int, sample: Sample, points: np.ndarray) -> None:
        """One face's N×2 predicted points in image pixels."""
        error = protocols.point_errors(points, sample.truth)
        nmes = {}
        for name, norm in self.norms.items():
            distance = norm(sample.truth, sample)
            if not distance > 0:
                raise UserError(f"{sample.key}: its {name} normalising distance is {distance} (true points coincide)")
            nmes[name] = error / distance
        self.rows.append((sample.tags, nmes))

    def result(self) -> Metrics:
        out: Metrics = {}
        for split in self.splits:
            rows = [nmes for tags, nmes in self.rows if split in tags]
            for name in self.norms:
                key = f"{split}/nme_{name}"
                out[key] = 100 * float(np.mean([r[name] for r in rows])) if rows else None
                if not rows:
                    self.reasons[key] = f"no face of the {split} split was scored"
            if self.auc is not None:
                name, threshold = self.auc
                auc, fr = protocols.auc_fr([r[name] for r in rows], threshold) if rows else (None, None)
                out[f"{split}/auc_{threshold:g}"] = None if auc is None else 100 * auc
                out[f"{split}/fr_{threshold:g}"] = None if fr is None else 100 * fr
        return out


@dataclass
class ParsingScore:
    """F1 from one confusion histogram over all pixels of all scored faces."""

    classes: tuple[str, ...]
    histogram: np.ndarray | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, index: int, sample: Sample, labels: np.ndarray) -> None:
        """One face's H×W predicted label map over the whole (original-resolution) image."""
        truth = sample.truth()
        if truth.shape != labels.shape:
            raise UserError(f"{sample.key}: its label map is {truth.shape[1]}×{truth.shape[0]} but the image "
                            f"{labels.shape[1]}×{labels.shape[0]}")  # fmt: skip
        counts = protocols.confusion(truth, labels, len(self.classes))
        self.histogram = counts if self.histogram is None else self.histogram + counts

    def result(self) -> Metrics:
        if self.histogram is None:
            return {"f1_fg_mean": None}
        f1 = protocols.f1_scores(self.histogram)
        absent = [name for name, value in zip(self.classes, f1) if np.isnan(value)]
        if absent:
            self.reasons["f1_fg_mean"] = f"classes in neither truth nor prediction, left out: {', '.join(absent)}"
        foreground = f1[1:][~np.isnan(f1[1:])]
        out: Metrics = {"f1_fg_mean": 100 * float(foreground.mean()) if foreground.size else None}
        out.update(
            {f"f1/{name}": None if np.isnan(value) else 100 * float(value) for name, value in zip(self.classes, f1)}
        )
        return out


@dataclass
class AgeScore:
    """MAE, CS (|error| ≤ 5 years) and ε-error (σ = 3)."""

    pairs: list[tuple[float, float]] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, index: int, sample: Sample, years: float) -> None:
        self.pairs.append((years, float(sample.truth)))

    def result(self) -> Metrics:
        if not self.pairs:
            return {"mae": None, "cs_5": None, "epsilon_error": None}
        pred, truth = zip(*self.pairs)
        metrics = protocols.age_metrics(pred, truth)
        return {"mae": metrics["mae"], "cs_5": 100 * metrics["cs"], "epsilon_error": metrics["epsilon"]}


@dataclass
class ClassScore:
    """Top-1 accuracy of class indices."""

    correct: int = 0
    total: int = 0
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, index: int, sample: Sample, label: int) -> None:
        self.correct += int(label == sample.truth)
        self.total += 1

    def result(self) -> Metrics:
        return {"top1": 100 * self.correct / self.total if self.total else None}


@dataclass
class AttributeScore:
    """Per-attribute accuracy of round(sigmoid) presences, and their mean."""

    names: tuple[str, ...]
    correct: np.ndarray | None = None
    total: int = 0
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, index: int, sample: Sample, present: np.ndarray) -> None:
        hits = protocols.attribute_accuracy(present[None], np.asarray(sample.truth)[None])
        self.correct = hits if self.correct is None else self.correct + hits
        self.total += 1

    def result(self) -> Metrics:
        if self.correct is None:
            return {"mean_accuracy": None}
        per = self.correct / self.total
        return {
            "mean_accuracy": 100 * float(per.mean()),
            **{f"accuracy/{n}": 100 * float(v) for n, v in zip(self.names, per)},
        }


@dataclass
class VerificationScore:
    """10-fold accuracy over the pairs (images 2i, 2i+1) whose both faces were scored."""

    embeddings: dict[int, np.ndarray] = field(default_factory=dict)
    same: dict[int, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, index: int, sample: Sample, vector: np.ndarray) -> None:
        """One image's L2-normalised (orig + flip) embedding."""
        self.embeddings[index] = np.asarray(vector, np.float32)
        self.same[index // 2] = bool(sample.truth)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(distances, same, pairs left out): squared L2 distances of the complete pairs."""
        complete = [i for i in sorted(self.same) if 2 * i in self.embeddings and 2 * i + 1 in self.embeddings]
        left_out = len(self.same) - len(complete)
        first = np.stack([self.embeddings[2 * i] for i in complete]) if complete else np.zeros((0, 1))
        second = np.stack([self.embeddings[2 * i + 1] for i in complete]) if complete else np.zeros((0, 1))
        distances = np.sum((first.astype(np.float64) - second) ** 2, axis=1)
        return distances, np.array([self.same[i] for i in complete], bool), left_out

    def result(self) -> Metrics:
        distances, same, left_out = self.pairs()
        if left_out:
            self.reasons["accuracy"] = f"{left_out} pairs with a face not scored are left out"
        if len(same) < 10:
            self.reasons["accuracy"] = f"10-fold verification needs ≥ 10 complete pairs, got {len(same)}"
            return {"accuracy": None, "std": None, "threshold": None}
        out = protocols.verification(distances, same)
        return {"accuracy": 100 * out["accuracy"], "std": 100 * out["std"], "threshold": out["threshold"]}


Score = LandmarkScore | ParsingScore | AgeScore | ClassScore | AttributeScore | VerificationScore
ScoreFactory = Callable[[], Any]
