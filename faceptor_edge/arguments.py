"""Every command's arguments checked at the door, and the one error policy of every command.

The argparse types here reject a bad value before any work starts, in argparse's own one-line
form, which names the argument (`argument --steps: 0 is not an integer ≥ 1`). `run_command`
is how every entry point runs: expected failures (`UserError`, an unwritable or full disk,
Ctrl-C) end as one line on stderr with exit code 2 (130 for Ctrl-C); anything else is a bug
and keeps its traceback. `--debug` shows the traceback of the expected ones too.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from faceptor_edge.errors import UserError

# OS errors that say something about the user's disk or paths, not about our code.
EXPECTED_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOENT,
                   errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG}  # fmt: skip


def integer(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number ≥ `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not a whole number ≥ {minimum}")
        return value

    parse.__name__ = f"integer ≥ {minimum}"
    return parse


def number(minimum: float, *, inclusive: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number above `minimum` (or equal to it, with `inclusive`)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number {'≥' if inclusive else '>'} {minimum:g}")
        return value

    parse.__name__ = "number"
    return parse


positive = integer(1)
non_negative = integer(0)


def _writable_parent(path: Path) -> None:
    """Raise ArgumentTypeError unless `path` could be created: its nearest existing ancestor is
    a writable directory."""
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{path}: cannot write in {ancestor} (permission denied or read-only)")


def output_file(text: str) -> Path:
    """An argparse type: a file this command may create or replace."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a directory; give a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{path}: not writable")
    _writable_parent(path)
    return path


def output_dir(text: str) -> Path:
    """An argparse type: a directory this command may create or write into."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a directory")
    if path.is_dir():
        if not os.access(path, os.W_OK | os.X_OK):
            raise argparse.ArgumentTypeError(f"{path}: cannot write in it (permission denied or read-only)")
    else:
        _writable_parent(path)
    return path


def add_debug(parser: argparse.ArgumentParser) -> None:
    """The `--debug` flag `run_command` reads."""
    parser.add_argument("--debug", action="store_true", help="show the traceback of an expected error too")


def run_command(
    prog: str,
    run: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    *,
    interrupted: str = "nothing half-written was kept",
) -> int:
    """Run a parsed command under the one error policy (module doc); `interrupted` is what
    Ctrl-C's line says after "interrupted; "."""
    debug = getattr(args, "debug", False)
    try:
        return run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\n{prog}: interrupted; {interrupted}", file=sys.stderr)
        return 130
    except UserError as error:
        if debug:
            raise
        message = str(error)
    except OSError as error:
        if debug or error.errno not in EXPECTED_ERRNOS:
            raise
        message = f"{error.filename}: {error.strerror or error}" if error.filename else str(error.strerror or error)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2
