"""The release gate's report: `report.json`, and a self-contained `report.html` with the table of
artifacts, each one's two gates per head and face overlays (inline PNGs)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from faceptor_edge import decode
from faceptor_edge.files import atomic_write_bytes, atomic_write_json
from faceptor_edge.tasks import TaskSpec

MAX_FACES = 6


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def shown_heads(
    tasks: tuple[TaskSpec, ...], reference: dict, untrained: frozenset[str]
) -> tuple[TaskSpec | None, TaskSpec | None]:
    """The first landmark head and the first parsing head the student's teacher trained and
    the reference has."""
    shown = [t for t in tasks if t.name not in untrained and t.name in reference]
    return next((t for t in shown if t.head.is_points), None), next((t for t in shown if t.head.is_channels_last), None)


def overlay_grid(
    tasks: tuple[TaskSpec, ...], crops: np.ndarray, reference: dict, artifact: dict, label: str,
    untrained: frozenset[str] = frozenset(),
) -> str:  # fmt: skip
    """Faces with reference (green) and artifact (red) landmarks, and both parsing maps, of
    the heads `shown_heads` picks."""
    plt = _pyplot()
    landmarks, parsing = shown_heads(tasks, reference, untrained)
    count = min(MAX_FACES, len(crops))
    fig, axes = plt.subplots(count, 3, figsize=(7.5, 2.6 * count), squeeze=False)
    size = crops.shape[1]
    for row in range(count):
        ax = axes[row]
        ax[0].imshow(crops[row])
        if landmarks is not None:
            for raw, colour in ((reference, "#2a9d8f"), (artifact, "#e63946")):
                points = decode.landmarks_to_crop_pixels(raw[landmarks.name][row : row + 1], size)[0]
                ax[0].scatter(points[:, 0], points[:, 1], s=6, c=colour)
        if parsing is not None:
            for col, raw in ((1, reference), (2, artifact)):
                labels = decode.parsing_labels(raw[parsing.name][row : row + 1])[0]
                ax[col].imshow(crops[row], extent=(0, 1, 1, 0))
                ax[col].imshow(labels, cmap="tab20", vmin=0, vmax=19, alpha=0.55, extent=(0, 1, 1, 0),
                               interpolation="nearest")  # fmt: skip
        for a in ax:
            a.axis("off")
    axes[0][0].set_title(f"{landmarks.name if landmarks else ''}: {label} green, artifact red", fontsize=8)
    if parsing is not None:
        axes[0][1].set_title(f"{parsing.name}: {label}", fontsize=8)
        axes[0][2].set_title(f"{parsing.name}: artifact", fontsize=8)
    return _png(fig)


STYLE = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
         "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}tr.failed{background:#fdd}"
         "tr.not-run,tr.unjudged{color:#888}")  # fmt: skip
SUMMARY = ("target", "precision", "size MB", "status", "load s", "reason")
HEADS = ("head", "vs float student: metric", "value", "threshold", "ok", "vs teacher: metric", "artifact",
         "mean-output baseline", "gap closed", "float student's", "must exceed", "ok")  # fmt: skip


def write_gate_report(report: dict[str, Any], runs: dict, tasks: tuple[TaskSpec, ...], out: Path) -> Path:
    """Write `report.json` and `report.html` (the gate's `report()`, `runs` its `ParityRun`s by
    (target, precision), for the overlays) into `out`; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report)
    parts = [
        f"<h1>Release gate: {'PASS' if report['passed'] else 'FAIL'}</h1>",
        (
            f"<p>{html.escape(report['student'])}, teacher {html.escape(report['teacher'])}; {report['faces']} faces "
            f"({html.escape(', '.join(f'{k} {v}' for k, v in report['per_dataset'].items()))}). Thresholds: against "
            f"the float student {html.escape(report['thresholds']['student'])}; against the teacher "
            f"{html.escape(report['thresholds']['teacher'])}.</p>"
        ),
        _table(SUMMARY, [(row["status"], _summary_cells(row)) for row in report["artifacts"]]),
    ]
    for row in report["artifacts"]:
        parts.append(f"<h2>{html.escape(row['target'])} {html.escape(row['precision'])}: {row['status']}</h2>")
        if row["status"] == "not-run":
            parts.append(f"<p>not run: {html.escape(str(row['reason']))}</p>")
            continue
        heads = [(_head_class(head), _head_cells(name, head)) for name, head in row["heads"].items()]
        parts.append(_table(HEADS, heads))
        run = runs.get((row["target"], row["precision"]))
        if run is not None:
            untrained = frozenset(run.report.get("untrained_heads", ()))
            grid = overlay_grid(tasks, run.crops, run.student, run.artifact, "float student", untrained)
            shown = ", ".join(t.name for t in shown_heads(tasks, run.student, untrained) if t is not None)
            parts.append(f'<p>{html.escape(shown)}: float student and artifact</p><img src="{grid}">')
    title = "<!doctype html><meta charset=utf-8><title>faceptor-edge release gate</title>"
    page = f"{title}<style>{STYLE}</style>{''.join(parts)}"
    atomic_write_bytes(out / "report.html", page.encode())
    return out / "report.html"


def _summary_cells(row: dict[str, Any]) -> list[Any]:
    size = None if row["size_bytes"] is None else row["size_bytes"] / 1e6
    return [row["target"], row["precision"], size, row["status"], row.get("load_seconds"), row["reason"]]


def _head_class(head: dict[str, Any]) -> str:
    gates = [gate for gate in head.values() if gate["judged"]]
    return "unjudged" if not gates else "failed" if not all(gate["passed"] for gate in gates) else ""


def _head_cells(name: str, head: dict[str, Any]) -> list[Any]:
    student, teacher = head["student"], head["teacher"]
    return [name, student["metric"], student["value"], student["threshold"], _ok(student), teacher.get("metric"),
            teacher.get("artifact"), teacher.get("baseline"), teacher["gap_closed"],
            teacher["float_student_gap_closed"], teacher["min_gap"], _ok(teacher)]  # fmt: skip


def _ok(gate: dict[str, Any]) -> str:
    return "ok" if gate["passed"] else "FAIL" if gate["judged"] else "n/a"


def _table(columns: tuple[str, ...], rows: list[tuple[str, list[Any]]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(f"<tr class='{css}'>" + "".join(f"<td>{_fmt(cell)}</td>" for cell in cells) + "</tr>"
                   for css, cells in rows)  # fmt: skip
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))
