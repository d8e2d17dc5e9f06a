"""Suite-wide guard: a test that leaves the thread's alternate signal stack unmapped fails
by name, instead of the next signal killing the whole run with SIGSEGV (faceptor_edge.signal_stack)."""

import ctypes
import mmap
from pathlib import Path

import pytest

from faceptor_edge import signal_stack

_SPARE = mmap.mmap(-1, 1 << 16)  # a valid stack to leave the thread on, so the suite goes on


@pytest.fixture(autouse=True)
def _signal_stack_stays_mapped():
    yield
    if not signal_stack.is_mapped():
        signal_stack.restore((ctypes.addressof(ctypes.c_char.from_buffer(_SPARE)), len(_SPARE), 0))
        pytest.fail("the test left the alternate signal stack unmapped; the next signal handled "
                    "would kill the process with SIGSEGV (faceptor_edge/signal_stack.py)")  # fmt: skip


def pytest_addoption(parser: pytest.Parser) -> None:
    """`pytest tests/parity --student DIR ...`: the release gate on a user's student (tests/parity/conftest.py)."""
    group = parser.getgroup("parity gate", "pytest tests/parity on your own student (faceptor_edge.targets.gate)")
    group.addoption(
        "--student",
        type=Path,
        help="judge this student's artifacts: a folder or 'release' (default: a tiny student built here)",
    )
    group.addoption("--teacher", help="the teacher (default: the one the student card records)")
    group.addoption("--artifacts", type=Path, help="artifact folder; missing or stale artifacts are exported into "
                    "it (default: runs/<run>/artifacts beside the student)")  # fmt: skip
    group.addoption("--images", help="'real' (default with --student), 'synthetic' (default without) or a folder")
    group.addoption("--count", type=int, help="faces to judge on (default: 112 with --student, 16 without)")
    group.addoption("--report", type=Path, help="where report.json and report.html go (default with --student: "
                    "parity/ beside the artifacts; without: a temporary folder)")  # fmt: skip
    group.addoption("--min-gap", type=float, default=0.0, help="gap closed to the teacher each head must exceed "
                    "(default: 0)")  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA GPU (skipped without one); `pytest -m cuda` on a GPU machine"
    )
