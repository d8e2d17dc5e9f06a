"""The calling thread's alternate signal stack (`sigaltstack(2)`), kept valid around OpenVINO.

Each OpenVINO CPU plugin instance installs an alternate signal stack on the thread that
compiles and puts the previous one back when destroyed. Instances destroyed out of creation
order leave the thread pointing at an unmapped stack, and the next signal it handles there
(CPython's handlers ask for it: a SIGCHLD once a DataLoader is set up) kills the process
with SIGSEGV and no traceback. The package compiles on one Core (`backends.openvino`), but
NNCF's accuracy control compiles on Cores of its own, so `kept()` puts the stack back.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SS_DISABLE = 2  # the same on Linux and macOS


class _Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # Windows: no sigaltstack
        return None
    return libc if hasattr(libc, "sigaltstack") else None


def current() -> tuple[int, int, int] | None:
    """The thread's alternate stack as (address, size, flags); None where there is no sigaltstack."""
    libc = _libc()
    if libc is None:
        return None
    stack = _Stack()
    if libc.sigaltstack(None, ctypes.byref(stack)) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack")
    return stack.ss_sp or 0, stack.ss_size, stack.ss_flags


def is_mapped(stack: tuple[int, int, int] | None = None) -> bool:
    """Whether the thread's alternate stack (or `stack`) is disabled or lies in mapped memory.

    True where the process's maps cannot be read (`/proc` is Linux's)."""
    stack = current() if stack is None else stack
    maps = Path("/proc/self/maps")
    if stack is None or stack[2] & SS_DISABLE or not maps.exists():
        return True
    low, high = stack[0], stack[0] + stack[1]
    for line in maps.read_text().splitlines():
        start, end = (int(x, 16) for x in line.split(maxsplit=1)[0].split("-"))
        if start <= low < end:
            return high <= end
    return False


def restore(stack: tuple[int, int, int] | None) -> None:
    """Make `stack` (from `current()`) the thread's alternate stack again."""
    libc = _libc()
    if libc is None or stack is None:
        return
    address, size, flags = stack
    wanted = _Stack(address, flags & SS_DISABLE, size)
    if libc.sigaltstack(ctypes.byref(wanted), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaltstack")


@contextmanager
def kept() -> Iterator[None]:
    """Run the body, collect what it dropped (OpenVINO Cores among it), and put the thread's
    alternate signal stack back as it was before."""
    saved = current()
    try:
        yield
    finally:
        gc.collect()
        if current() != saved:
            restore(saved)
