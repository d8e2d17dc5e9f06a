"""Self-contained HTML parity report: tables, an agreement chart and face overlays (inline PNGs)."""

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


def agreement_chart(report: dict[str, Any]) -> str:
    """Bars per head: the artifact's check value against its threshold (pass green, fail red,
    grey for heads the student's teacher did not train)."""
    plt = _pyplot()
    heads = report["heads"]
    names = list(heads)
    fig, ax = plt.subplots(figsize=(9, 3.2))
    values = [heads[n]["value"] for n in names]
    colours = ["#adb5bd" if not heads[n]["judged"] else "#2a9d8f" if heads[n]["passed"] else "#e63946" for n in names]
    ax.bar(range(len(names)), values, color=colours)
    ax.scatter(range(len(names)), [heads[n]["threshold"] for n in names], marker="_", s=400, color="black",
               label="threshold")  # fmt: skip
    ax.set_xticks(range(len(names)), [f"{n}\n{heads[n]['metric']}" for n in names], rotation=60, fontsize=7, ha="right")
    ax.set_yscale("log" if report["precision"] == "fp32" else "linear")
    ax.set_title(f"{report['target']} {report['precision']} vs float student")
    ax.legend(fontsize=8)
    return _png(fig)


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


def _table(rows: dict[str, dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["head", *columns])
    body = []
    for name, row in rows.items():
        cells = "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns)
        css = " class=untrained" if not row.get("judged", True) else "" if row.get("passed", True) else " class=fail"
        body.append(f"<tr{css}><td>{html.escape(name)}</td>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def write_report(run, tasks: tuple[TaskSpec, ...], out: Path) -> Path:
    """Write `report.json` and `report.html` into `out`; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    report = run.report
    atomic_write_json(out / "report.json", report)
    parts = [
        f"<h1>Parity: {html.escape(report['target'])} {html.escape(report['precision'])}</h1>",
        (
            f"<p>{html.escape(report['artifact'])}: {report['size_bytes'] / 1e6:.2f} MB, {report['quantization']}; "
            f"{report['faces']} faces from {html.escape(report['images'])}. Overall: <b>{_verdict(report)}</b></p>"
        ),
    ]
    if report.get("skipped"):
        parts.append(f"<p>Prediction parity skipped: {html.escape(report['skipped'])}</p>")
    else:
        parts.append("<h2>Against the float student</h2>")
        parts.append(_table(report["heads"], ["metric", "value", "threshold", "passed", "judged", "max_abs_error"]))
        if report.get("untrained_heads"):
            parts.append(f"<p>Not judged (grey): {html.escape(', '.join(report['untrained_heads']))}, heads the "
                         "student's teacher did not train; their outputs mean nothing.</p>")  # fmt: skip
        parts.append(f'<img src="{agreement_chart(report)}">')
        if run.teacher is not None:
            parts.append("<h2>Against the teacher (fidelity drop from the float student)</h2>")
            parts.append(_table(report["teacher"], ["metric", "student", "artifact", "drop", "max_drop", "passed"]))
        reference, label = (run.teacher, "teacher") if run.teacher is not None else (run.student, "float student")
        untrained = frozenset(report.get("untrained_heads", ()))
        shown = ", ".join(t.name for t in shown_heads(tasks, reference, untrained) if t is not None)
        parts.append(f"<h2>Faces</h2><p>{html.escape(shown)}: {label} and artifact</p>")
        parts.append(f'<img src="{overlay_grid(tasks, run.crops, reference, run.artifact, label, untrained)}">')
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;" \
            "padding:2px 8px;font-size:13px}tr.fail{background:#fdd}tr.untrained{color:#888}"  # fmt: skip
    page = (
        f"<!doctype html><meta charset=utf-8><title>faceptor-edge parity</title><style>{style}</style>{''.join(parts)}"
    )
    atomic_write_bytes(out / "report.html", page.encode())
    return out / "report.html"


def _verdict(report: dict[str, Any]) -> str:
    if report.get("passed") is None:
        return "not run on this platform"
    return "PASS" if report["passed"] else "FAIL"
