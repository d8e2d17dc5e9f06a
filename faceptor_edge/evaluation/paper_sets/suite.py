"""`faceptor-edge evaluate MODEL... --dataset NAME=PATH ...`: every model on every paper set given.

Every dataset is read (and checked against its files) before any model loads, so a bad
copy fails in seconds with one error naming the file and line. Then each model is loaded
once with `load_backend` and streamed through each set (`runner.run_paper_set`);
detections, where a set needs them, are shared by all models.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faceptor_edge.backends import load_backend
from faceptor_edge.evaluation.paper_sets import report as tables
from faceptor_edge.evaluation.paper_sets.registry import PAPER_SETS
from faceptor_edge.evaluation.paper_sets.runner import Crops, FaceFinder, run_paper_set
from faceptor_edge.evaluation.paper_sets.samples import SampleSet
from faceptor_edge.files import atomic_write_json, atomic_write_text, splice_section

TEACHER_NAME = "teacher"


def read_paper_sets(datasets: Sequence[tuple[str, Path]], limit: int | None = None) -> dict[str, SampleSet]:
    """Each named paper set's faces, the first `limit` (verification: the first `limit` pairs).

    Raises:
        UserError: A dataset is missing a file, does not match its images or is in an unknown layout.
    """
    sets = {}
    for name, path in datasets:
        data = PAPER_SETS[name].read(Path(path))
        if limit is not None:
            keep = 2 * limit if PAPER_SETS[name].flip else limit
            data = SampleSet(data.samples[:keep], data.framing, data.layout, data.notes)
        sets[name] = data
    return sets


def _why_not(backend: Any, head: str) -> str:
    if head not in {task.name for task in backend.tasks}:
        return f"the model has no {head} head"
    if head in backend.untrained:
        return f"its teacher did not train the {head} head"
    return ""


def evaluate_paper_sets(
    models: dict[str, str],
    datasets: Sequence[tuple[str, Path]],
    *,
    crops: Crops = "paper",
    limit: int | None = None,
    json_path: Path | None = None,
    markdown: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores every model on every paper set and writes the one table of the run.

    Args:
        models: Display name -> `load_backend` source. The teacher is the one named
            `teacher`, else the first; every other model gets its drop from it.
        datasets: (name in `PAPER_SETS`, path of the user's copy) pairs.
        crops: `paper` (each dataset's framing) or `detector` (RetinaFace for every face).
        limit: Score only the first N faces (pairs) of each set: a quick look.
        json_path: The report, written atomically; the Markdown table goes beside it (`.md`).
        markdown: Also splice the table into this Markdown file, between `report.MARK_*`.

    Returns:
        {"date", "models", "teacher", "crops", "limit", "sets": {name: info},
        "rows": [{"model", "set", "value", "drop", "metrics", "reasons", "faces",
        "listed", "corrupt", "missed", "nonfinite", "files"}], "skipped", "seconds"}.
    """
    sets = read_paper_sets(datasets, limit)
    teacher = TEACHER_NAME if TEACHER_NAME in models else next(iter(models))
    faces, rows, skipped, seconds = FaceFinder(), [], [], {}
    for model, source in models.items():
        start = time.perf_counter()
        backend = load_backend(source)
        try:
            for name, data in sets.items():
                reason = _why_not(backend, PAPER_SETS[name].head) or ("" if backend.runnable else "cannot run here")
                if reason:
                    skipped.append({"model": model, "set": name, "reason": reason})
                    continue
                result = run_paper_set(model, backend, name, data, crops=crops, faces=faces, progress=progress)
                value = result["metrics"].get(PAPER_SETS[name].headline)
                rows.append({"model": model, "set": name, "value": value, **result})
        finally:
            backend.close()
        seconds[model] = round(time.perf_counter() - start, 1)
    tables.add_drops(rows, teacher)
    report = {
        "date": datetime.date.today().isoformat(), "models": dict(models), "teacher": teacher, "crops": crops,
        "limit": limit, "sets": {name: tables.paper_set_info(name, data, crops, limit) for name, data in sets.items()},
        "rows": rows, "skipped": skipped, "seconds": seconds,
    }  # fmt: skip
    if json_path is not None:
        atomic_write_json(Path(json_path), report, indent=1)
        atomic_write_text(Path(json_path).with_suffix(".md"), tables.markdown(report))
    if markdown is not None:
        splice_section(Path(markdown), tables.markdown(report), tables.MARK_START, tables.MARK_END)
    return report
