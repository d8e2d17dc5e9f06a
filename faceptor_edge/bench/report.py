"""The benchmark's outputs: the JSON report, the printed table, the README table and the plot.

Ratios read "times better": `vs_teacher.latency` = teacher median / row median (× faster),
`vs_teacher.size` = teacher bytes / row bytes (× smaller); `vs_student` the same against
the fp32 PyTorch student. Values above 1 beat the reference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from faceptor_edge.bench.hardware import PeakEstimate
from faceptor_edge.files import atomic_write_json, splice_section

ROW_FIELDS = (
    "name", "kind", "target", "precision", "latency_ms_median", "latency_ms_p90", "latency_ms_min", "throughput_fps",
    "throughput_batch", "size_bytes", "peak_rss_mb", "load_s", "params", "flops",
)  # fmt: skip
MARK_START = "<!-- faceptor-edge bench: start -->"
MARK_END = "<!-- faceptor-edge bench: end -->"


def _ratio(reference: float | None, value: float | None) -> float | None:
    return reference / value if reference and value else None


def _ratios(row: dict[str, Any], reference: dict[str, Any] | None, latency_key: str) -> dict[str, float | None]:
    reference = reference or {}
    return {"latency": _ratio(reference.get(latency_key), row.get(latency_key)),
            "size": _ratio(reference.get("size_bytes"), row.get("size_bytes"))}  # fmt: skip


def _first(rows: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    return next((row for row in rows if row["kind"] == kind and row.get("latency_ms_median")), None)


def build_report(
    rows: list[dict[str, Any]], machine: dict[str, Any], peak: PeakEstimate, options: Any
) -> dict[str, Any]:
    """Complete the measured rows (inherited FLOPs, peak fractions, ratios) into the report."""
    from faceptor_edge.bench.peers import combine_peers, student_coverage
    from faceptor_edge.student.io import read_card

    rows = [{**{key: None for key in ROW_FIELDS}, **row} for row in rows]
    student = next((row for row in rows if row["kind"] == "student"), None)
    for row in rows:
        if row["kind"] in ("artifact", "bundle") and student:  # same graph, same multiply-adds
            row["params"], row["flops"] = student["params"], student["flops"]
        if row["flops"] and row["latency_ms_median"]:
            row["achieved_gflops"] = row["flops"] / row["latency_ms_median"] / 1e6
            row["peak_fraction"] = row["achieved_gflops"] * 1e9 / peak.peak_flops
    teacher, student = _first(rows, "teacher"), _first(rows, "student")
    end_to_end = []
    for row in rows:
        row["vs_teacher"] = _ratios(row, teacher, "latency_ms_median")
        row["vs_student"] = _ratios(row, student, "latency_ms_median")
        if "end_to_end" in row:
            e2e = {key: row[key] for key in ("name", "kind", "target", "precision")} | row.pop("end_to_end")
            end_to_end.append(e2e)
    artifacts = [row for row in rows if row["kind"] == "artifact" and row["latency_ms_median"]]
    best = min(artifacts, key=lambda row: row["latency_ms_median"], default=None)
    e2e_teacher = next((row for row in end_to_end if row["kind"] == "teacher"), None)
    e2e_student = next((row for row in end_to_end if row["kind"] == "student"), None)
    for row in end_to_end:
        row["best_artifact"] = best is not None and row["name"] == best["name"]
        row["vs_teacher"] = _ratios(row, e2e_teacher, "latency_ms_median") | {"size": None}
        row["vs_student"] = _ratios(row, e2e_student, "latency_ms_median") | {"size": None}
    peers = combine_peers(rows, student, best, student_coverage(read_card(options.student)))
    return {
        "machine": machine,
        "settings": _settings(options),
        "peak": peak.to_json(),
        "rows": rows,
        "end_to_end": end_to_end,
        "peers": peers,
        "headline": _headline(teacher, best, peers),
        "notes": _notes(rows, machine),
    }


def _settings(options: Any) -> dict[str, Any]:
    return {
        "runs": options.runs, "warmup": options.warmup, "teacher_runs": options.teacher_runs, "teacher_warmup": 1,
        "batch": options.batch, "teacher": options.teacher, "teacher_dense_size": options.teacher_dense_size,
        "student": str(options.student), "artifact_throughput": "static batch 1: throughput = 1000 / median latency",
    }  # fmt: skip


def _headline(teacher: dict[str, Any] | None, best: dict[str, Any] | None, peers: dict[str, Any]) -> dict[str, Any]:
    if not teacher or not best:
        return {}
    return {"best_artifact": best["name"],
            "latency_ratio_teacher_over_best": teacher["latency_ms_median"] / best["latency_ms_median"],
            "size_ratio_teacher_over_best": _ratio(teacher["size_bytes"], best["size_bytes"]),
            "peers": peers.get("summary")}  # fmt: skip


def _notes(rows: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    notes = []
    busy = machine.get("busy_cores_at_start")
    if busy is not None and busy > 0.25:
        notes.append(f"other processes kept {busy:.1f} core(s) busy when measuring began: latencies are inflated "
                     "(most with all cores in use)")  # fmt: skip
    for row in rows:
        for note in row.get("notes") or []:
            notes.append(f"{row['name']}: {note}")
        if row.get("skipped"):
            notes.append(f"{row['name']}: skipped: {row['skipped']}")
        if row.get("error"):
            notes.append(f"{row['name']}: ERROR: {row['error']}")
    return notes


def _fmt(value: Any, spec: str = ".3g", none: str = "–") -> str:
    return none if value is None else format(value, spec)


def _rss(row: dict[str, Any]) -> str:
    """Peak RSS of the row's process, and what loading and running the model added to it."""
    if row["peak_rss_mb"] is None:
        return "–"
    added = row["peak_rss_mb"] - row.get("rss_before_load_mb", row["peak_rss_mb"])
    return f"{row['peak_rss_mb']:.0f} (+{added:.0f})"


def _table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["model", "target", "prec", "median ms", "p90 ms", "min ms", "faces/s (batch)", "size MB", "peak RSS MB (+model)",
              "load s", "params", "GFLOPs", "% fp32 peak", "× teacher (lat/size)", "× student (lat/size)"]  # fmt: skip
    body = []
    for row in report["rows"]:
        fps = f"{_fmt(row['throughput_fps'], '.1f')} ({row['throughput_batch']})" if row["throughput_fps"] else "–"
        size = row["size_bytes"] / 1e6 if row["size_bytes"] else None
        body.append([
            row["name"], row["target"] or "", row["precision"] or "", _fmt(row["latency_ms_median"]),
            _fmt(row["latency_ms_p90"]), _fmt(row["latency_ms_min"]), fps, _fmt(size), _rss(row),
            _fmt(row["load_s"], ".2f"), _fmt(row["params"], ",") if row["params"] else "–",
            _fmt(row["flops"] / 1e9 if row["flops"] else None, ".3f"),
            _fmt(100 * row["peak_fraction"] if row.get("peak_fraction") else None, ".2f"),
            f"{_fmt(row['vs_teacher']['latency'])} / {_fmt(row['vs_teacher']['size'])}",
            f"{_fmt(row['vs_student']['latency'])} / {_fmt(row['vs_student']['size'])}",
        ])  # fmt: skip
    return header, body


def _e2e_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """One row per model on the pre-cropped face (PNG), then one per model on the photo
    (JPEG, RetinaFace finds the faces), each per face, with every stage's median."""
    header = ["model (end to end, per face)", "input", "median ms", "p90 ms", "read image", "detect", "crop", "model",
              "decode", "× teacher", "× student"]  # fmt: skip
    body = []
    for row in report["end_to_end"]:
        stages = row["stages_ms_median"]
        name = row["name"] + (" (best artifact)" if row["best_artifact"] else "")
        body.append([name, "face PNG, pre-cropped", _fmt(row["latency_ms_median"]), _fmt(row["latency_ms_p90"]),
                     _fmt(stages["read_image"]), "–", *(_fmt(stages[k]) for k in ("crop", "model", "decode")),
                     _fmt(row["vs_teacher"]["latency"]), _fmt(row["vs_student"]["latency"])])  # fmt: skip
    student = next((row.get("photo") for row in report["end_to_end"] if row["kind"] == "student"), None)
    for row in (row for row in report["end_to_end"] if row.get("photo")):
        photo, stages = row["photo"], row["photo"]["stages_ms_median"]
        vs_student = student["latency_ms_median"] / photo["latency_ms_median"] if student else None
        found = f" ({photo['faces_found']} found)" if "faces_found" in photo else ""  # MediaPipe's own detector
        body.append([row["name"], f"{photo['size'][0]}×{photo['size'][1]} photo JPEG, {photo['faces']} faces{found}",
                     _fmt(photo["latency_ms_median"]), _fmt(photo["latency_ms_p90"]),
                     *(_fmt(stages[k]) for k in ("read_image", "detect", "crop", "model", "decode")),
                     "–", _fmt(vs_student)])  # fmt: skip
    return header, body


def _peak_lines(report: dict[str, Any]) -> list[str]:
    peak = report["peak"]
    first = (
        f"CPU peak estimate: {peak['peak_flops'] / 1e9:.1f} GFLOP/s fp32 = {peak['cores']} core(s) × "
        f"{peak['fp32_lanes']} lanes × {peak['fma_units']} FMA × 2 × {peak['clock_ghz']:.2f} GHz; assuming:"
    )
    return [first, *(f"  - {line}" for line in peak["assumptions"])]


def format_report(report: dict[str, Any]) -> str:
    """The printed form: machine, model table, end-to-end table, peers, peak, notes."""
    machine = report["machine"]
    lines = [f"\n{machine['cpu']}, {machine['cores']} core(s), {machine['threads']} thread(s), {machine['date']}"]
    for header, body in (_table(report), _e2e_table(report)):
        widths = [max(len(cell) for cell in column) for column in zip(header, *body)]
        lines.append("")
        for cells in (header, *body):
            lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))))
    lines += ["", *_peer_lines(report), *_peak_lines(report)]
    headline = report["headline"]
    if headline:
        lines.append(f"teacher / best artifact ({headline['best_artifact']}): "
                     f"{headline['latency_ratio_teacher_over_best']:.1f}× faster, "
                     f"{_fmt(headline['size_ratio_teacher_over_best'], '.1f')}× smaller")  # fmt: skip
    lines += [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)


def _peer_lines(report: dict[str, Any]) -> list[str]:
    peers = report["peers"]
    lines = [f"peers: {peers['summary']}"] if peers.get("summary") else []
    for head, who in peers.get("coverage", {}).items():
        lines.append(f"  - {head}: {'; '.join(who) if who else 'no peer'}")
    return lines


def markdown(report: dict[str, Any]) -> str:
    """The README section: machine and date, both tables, peers and the peak estimate."""
    machine = report["machine"]
    settings = report["settings"]
    intro = (
        f"Generated by `faceptor-edge bench` on {machine['date'][:10]}: {machine['cpu']}, {machine['cores']} "
        f"core(s), {machine['threads']} thread(s), {machine['os']}, Python {machine['python']}. "
        f"Teacher: {settings['teacher']} at dense size {settings['teacher_dense_size']}, "
        f"{settings['teacher_runs']} runs after 1 warm-up; other models {settings['runs']} runs after "
        f"{settings['warmup']} warm-up. Ratios are × faster / × smaller than the reference."
    )
    out = [MARK_START, "", intro, ""]
    for header, body in (_table(report), _e2e_table(report)):
        out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(row) + " |" for row in body] + [""]
    out += [*(f"{line}" for line in _peer_lines(report)), "", *_peak_lines(report), ""]
    out += [f"- {note}" for note in report["notes"]] + ["", MARK_END]
    return "\n".join(out) + "\n"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """Write the section to `path`: between its markers if it has them, else appended (or a new file)."""
    splice_section(Path(path), markdown(report), MARK_START, MARK_END)


def plot(report: dict[str, Any], path: Path) -> None:
    """Latency against size, log-log, one labelled point per measured model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"teacher": "tab:red", "student": "tab:blue", "artifact": "tab:green", "peer": "tab:purple"}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    unplotted = []
    for row in report["rows"]:
        if not (row["latency_ms_median"] and row["size_bytes"]):
            unplotted.append(row["name"])
            continue
        x, y = row["size_bytes"] / 1e6, row["latency_ms_median"]
        ax.scatter([x], [y], color=colours.get(row["kind"], "black"), s=40, zorder=3)
        ax.annotate(row["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set(xscale="log", yscale="log", xlabel="size on disk (MB)", ylabel="median latency per face, batch 1 (ms)")
    machine = report["machine"]
    ax.set_title(f"faceptor-edge bench: {machine['cpu']}, {machine['threads']} thread(s), {machine['date'][:10]}",
                 fontsize=9)  # fmt: skip
    if unplotted:
        ax.text(0.01, 0.01, "no latency (not plotted): " + ", ".join(unplotted), transform=ax.transAxes, fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_outputs(report: dict[str, Any], json_path: Path, markdown_path: Path | None) -> None:
    """JSON (atomically), the plot beside it, and the Markdown section if asked for."""
    json_path = Path(json_path)
    atomic_write_json(json_path, report)
    plot(report, json_path.with_suffix(".png"))
    if markdown_path is not None:
        write_markdown(report, markdown_path)
