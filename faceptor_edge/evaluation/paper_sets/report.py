"""The run's one table, model × paper set, as JSON and Markdown.

The first row is Faceptor's number from the paper, then the teacher (the model named
`teacher`, else the first), then every other model with its drop from the teacher
(positive = worse, in the headline's unit). Sets scored on fewer faces than the official
test set (`--limit`, a partial or tiny copy) are labelled format checks, not results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faceptor_edge.evaluation.paper_sets.registry import PAPER_SETS

MARK_START, MARK_END = "<!-- faceptor-edge paper-sets: start -->", "<!-- faceptor-edge paper-sets: end -->"
UNITS = {"nme": "NME %", "f1_fg_mean": "F1 %", "mae": "MAE years", "top1": "top-1 %",
         "mean_accuracy": "mean accuracy %", "accuracy": "10-fold accuracy %"}  # fmt: skip
FRAMINGS = {"box": "the dataset's box", "points": "the dataset's 5 points", "whole": "the whole image (the dataset's crop)",
            "detect": "RetinaFace (the dataset gives no box)"}  # fmt: skip


def unit(metric: str) -> str:
    """The unit of a headline metric key (`full/nme_io` -> `NME %`)."""
    leaf = metric.rpartition("/")[2]
    return UNITS.get(leaf, UNITS["nme"] if leaf.startswith("nme") else leaf)


def drop(value: float | None, teacher: float | None, lower_is_better: bool) -> float | None:
    """How much worse `value` is than the teacher's, in the metric's unit (negative: better)."""
    if value is None or teacher is None:
        return None
    return value - teacher if lower_is_better else teacher - value


def framing_text(framing: str, crops: str, crop_scale: float | None) -> str:
    """How a set's faces were cropped, for the table."""
    if crops == "detector":
        return "RetinaFace for every face (--crops detector), each model's own crop recipe"
    scale = f", crop scale {crop_scale:g}" if crop_scale is not None and framing != "detect" else ""
    if framing == "box":
        return (
            f"{FRAMINGS[framing]}{scale} for a Faceptor teacher; other models framed on RetinaFace's points inside it"
        )
    return FRAMINGS[framing] + scale


def add_drops(rows: list[dict[str, Any]], teacher: str) -> None:
    """Sets each row's `drop` from the teacher's row of the same set (None for the teacher)."""
    teacher_values = {row["set"]: row["value"] for row in rows if row["model"] == teacher}
    for row in rows:
        lower = PAPER_SETS[row["set"]].lower_is_better
        row["drop"] = None if row["model"] == teacher else drop(row["value"], teacher_values.get(row["set"]), lower)


def _cell(row: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    if row["value"] is None:
        return "n/a"
    text = f"{row['value']:.2f}" + (f" (Δ {row['drop']:+.2f})" if row.get("drop") is not None else "")
    lost = [f"{row[k]} {k}" for k in ("corrupt", "missed", "nonfinite") if row.get(k)]
    return text + (f" [{', '.join(lost)}]" if lost else "")


def main_table(report: dict[str, Any]) -> list[str]:
    """The model × paper set Markdown table, paper row first."""
    names = [name for name in PAPER_SETS if name in report["sets"]]
    cells = {(row["model"], row["set"]): row for row in report["rows"]}
    titles = []
    for name in names:
        paper_set = PAPER_SETS[name]
        arrow = "↓" if paper_set.lower_is_better else "↑"
        titles.append(f"{paper_set.title} {unit(paper_set.headline)} {arrow}")
    lines = ["| model | " + " | ".join(titles) + " |", "|---" * (len(names) + 1) + "|"]
    paper = ["–" if PAPER_SETS[n].paper is None else f"{PAPER_SETS[n].paper:.2f}" for n in names]
    lines.append("| Faceptor (paper) | " + " | ".join(paper) + " |")
    for model in report["models"]:
        label = f"{model} (teacher)" if model == report["teacher"] else model
        lines.append(f"| {label} | " + " | ".join(_cell(cells.get((model, name))) for name in names) + " |")
    return lines


def detail_lines(report: dict[str, Any]) -> list[str]:
    """Per paper set: what was read, how it was cropped, and every metric of every model."""
    lines = []
    for name, info in report["sets"].items():
        rows = [row for row in report["rows"] if row["set"] == name]
        lines += ["", (f"**{info['title']}** ({info['layout']}, {info['listed']} faces"
                  f"{', a format check, not a result' if info['format_check'] else ''}): crops: {info['crops']}.")]  # fmt: skip
        lines += [f"- {note}" for note in info["notes"]]
        # Per-attribute accuracies stay in the JSON: 40 rows would bury the table.
        metrics = list(dict.fromkeys(k for row in rows for k in row["metrics"] if not k.startswith("accuracy/")))
        if not rows or not metrics:
            continue
        lines += ["", "| metric | " + " | ".join(row["model"] for row in rows) + " |", "|---" * (len(rows) + 1) + "|"]
        for key in metrics:
            values = [row["metrics"].get(key) for row in rows]
            lines.append(f"| {key} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in values) + " |")
        reasons = {f"{row['model']}: {key}: {why}" for row in rows for key, why in row["reasons"].items()}
        lines += [f"- {reason}" for reason in sorted(reasons)]
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The whole Markdown section, between `MARK_START` and `MARK_END`."""
    checks = [info["title"] for info in report["sets"].values() if info["format_check"]]
    caption = (f"Format check, not results: {', '.join(checks)} scored on fewer faces than the official test set."
               if checks else "Scored on the full official test sets.")  # fmt: skip
    lines = [MARK_START, "", *main_table(report), "",
             (f"{report['date']}, `--crops {report['crops']}`. {caption} Δ: drop from the teacher "
             "(positive = worse). [n corrupt / missed / nonfinite]: faces not scored.")]  # fmt: skip
    lines += detail_lines(report)
    lines += [f"- skipped {item['set']} for {item['model']}: {item['reason']}" for item in report["skipped"]]
    return "\n".join([*lines, "", MARK_END]) + "\n"


def paper_set_info(name: str, data: Any, crops: str, limit: int | None) -> dict[str, Any]:
    """The report's record of one paper set as read: title, head, headline, paper, layout, crops, notes."""
    paper_set = PAPER_SETS[name]
    listed = len(data.samples)
    official = paper_set.test_faces
    return {"title": paper_set.title, "head": paper_set.head, "headline": paper_set.headline, "unit": unit(paper_set.headline),
            "lower_is_better": paper_set.lower_is_better, "paper": paper_set.paper, "layout": data.layout, "listed": listed,
            "official_faces": official, "crops": framing_text(data.framing, crops, paper_set.crop_scale),
            "format_check": limit is not None or (official is not None and listed < official),
            "notes": list(data.notes)}  # fmt: skip


def terminal(report: dict[str, Any]) -> str:
    """The table and the skipped sets, for stdout."""
    lines: Sequence[str] = main_table(report)
    extra = [f"skipped {item['set']} for {item['model']}: {item['reason']}" for item in report["skipped"]]
    return "\n".join([*lines, *extra])
