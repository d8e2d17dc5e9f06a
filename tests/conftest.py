"""Suite-wide guard: a test that leaves the thread's alternate signal stack unmapped fails
by name, instead of the next signal killing the whole run with SIGSEGV (faceptor_edge.signal_stack)."""

import ctypes
import mmap

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
