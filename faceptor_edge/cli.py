"""The `faceptor-edge` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from faceptor_edge import __version__


def _teacher_info(args: argparse.Namespace) -> int:
    from faceptor_edge.teacher import DEMO_NOTICE, build_demo_teacher, load_teacher

    if args.checkpoint == "demo":
        teacher, source = build_demo_teacher(), DEMO_NOTICE
    else:
        teacher = load_teacher(args.checkpoint)
        source = f"{args.checkpoint} ({Path(args.checkpoint).stat().st_size / 1e6:.1f} MB on disk)"
    params = sum(p.numel() for p in teacher.parameters())
    print(f"source:     {source}")
    print(f"variant:    {teacher.variant}")
    print(f"parameters: {params:,} ({params * 4 / 1e6:.1f} MB in fp32)")
    print(f"heads:      {len(teacher.task_names)}")
    for task in teacher.config.tasks:
        print(f"  {task.name:18s} {task.task_type:12s} {task.kind:9s} queries={task.num_queries:<4d} {task.input_group}")
    return 0


def _student_info(args: argparse.Namespace) -> int:
    from faceptor_edge.student.io import load_student
    from faceptor_edge.student.model import build_student, count_flops, student_sizes

    if args.student:
        rows = [(str(args.student), load_student(args.student)[0])]
    else:
        rows = [(size, build_student(size)) for size in student_sizes]
    print(f"{'student':12s} {'parameters':>12s} {'fp32 MB':>8s} {'GFLOPs@256':>11s}  heads")
    for name, student in rows:
        params = sum(p.numel() for p in student.parameters())
        flops = count_flops(student)
        print(f"{name:12s} {params:12,d} {params * 4 / 1e6:8.2f} {flops / 1e9:11.3f}  {len(student.task_names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faceptor-edge",
        description="Distil the Faceptor face model into a small student, export it to "
        "ExecuTorch, Core ML and OpenVINO, and check every artifact against the teacher.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = commands.add_parser("teacher-info", help="print a Faceptor checkpoint's variant, heads and size")
    info.add_argument("checkpoint", help="official .pth/.pth.tar checkpoint, or 'demo' for the stand-in weights")
    info.set_defaults(run=_teacher_info)

    sizes = commands.add_parser("student-info", help="print parameter counts and FLOPs of the student sizes")
    sizes.add_argument("student", nargs="?", help="a trained student directory (default: every size, 13 heads)")
    sizes.set_defaults(run=_student_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `faceptor-edge` console script."""
    from faceptor_edge.errors import UserError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as error:
        print(f"faceptor-edge {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
