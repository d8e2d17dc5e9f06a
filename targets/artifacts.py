"""Where a student and its artifacts live: the newest student under `runs/`, the artifact
folder beside it (`runs/<run>/artifacts/student-<precision>.<suffix>`), and which of its
artifacts are current (exported from these very student weights)."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from faceptor_edge.backends.formats import FORMATS, artifact_path
from faceptor_edge.errors import UserError
from faceptor_edge.release import RELEASE_ARTIFACTS, is_release
from faceptor_edge.student.io import CARD, read_card
from faceptor_edge.targets import get_target

RUNS = Path("runs")  # where `python distill/run.py --out runs/<run>` puts its runs
# (target, precision) -> the artifact's path, or why there is none here (its toolkit is missing)
Artifacts = dict[tuple[str, str], "Path | str"]


def newest_student(runs: Path = RUNS) -> Path:
    """The newest `runs/*/student` folder with a student card, by the card's modification time.

    Raises:
        UserError: `runs` holds no trained student.
    """
    cards = sorted(runs.glob(f"*/student/{CARD}"), key=lambda card: card.stat().st_mtime)
    if not cards:
        raise UserError(f"no trained student under {runs.absolute()}/*/student: train one with "
                        "`python distill/run.py`, or pass --student DIR")  # fmt: skip
    return cards[-1].parent


def artifacts_dir(student_dir: str | Path) -> Path:
    """The artifact folder of a run: `runs/<run>/artifacts` beside `runs/<run>/student`
    (the release student's: `runs/release/artifacts`, not inside the installed package)."""
    if is_release(student_dir):
        return RELEASE_ARTIFACTS
    return Path(os.path.abspath(student_dir)).parent / "artifacts"  # a linked run keeps its own artifacts


def stale_reason(target: str, path: Path, weights_sha256: str, settings: dict[str, Any]) -> str:
    """Why `path` must be (re)exported, or "" when it is a current artifact of these weights,
    made under these export settings (`targets.export.export_settings`)."""
    if not path.exists():
        return "missing"
    try:
        metadata = get_target(target).read_metadata(path)
    except UserError as error:
        return f"unreadable: {error}"
    if metadata.get("student_identity", {}).get("weights_sha256") != weights_sha256:
        return "exported from other student weights"
    if metadata.get("export_settings") != settings:
        return "exported under other settings"
    return ""


def ensure_artifacts(
    student_dir: str | Path,
    directory: Path,
    *,
    targets: Iterable[str] = tuple(FORMATS),
    precisions: Iterable[str] | None = None,
    calibration_count: int = 64,
    log: Callable[[str], None] = print,
) -> Artifacts:
    """Each (target, precision) -> its current artifact in `directory`, exporting missing or stale
    ones (`precisions`: default each target's own, `Format.precisions`).

    A target whose toolkit is not installed maps to why (a str) instead of a path.
    """
    from faceptor_edge.student.model import student_config
    from faceptor_edge.targets.export import export_settings, export_student

    card = read_card(student_dir)
    weights, encoder = card["weights_sha256"], student_config(card["size"]).encoder
    found: Artifacts = {}
    for target in targets:
        toolkit = FORMATS[target].toolkit
        for precision in FORMATS[target].precisions if precisions is None else precisions:
            if importlib.util.find_spec(toolkit) is None:
                found[target, precision] = f"{toolkit} is not installed (pip install faceptor-edge[{target}])"
                continue
            path = artifact_path(directory, target, precision)
            settings = export_settings(target, precision, encoder, calibration_count)
            reason = stale_reason(target, path, weights, settings)
            if reason:
                log(f"exporting {path.name} ({reason}) …")
                started = time.perf_counter()
                export_student(student_dir, target, precision, path, calibration_count=calibration_count,
                               log=lambda message: log(f"  {message}"))  # fmt: skip
                log(f"  done in {time.perf_counter() - started:.1f} s")
            found[target, precision] = path
    return found
