"""OpenVINO runners and NNCF leave the process able to take signals.

Each OpenVINO CPU plugin instance installs an alternate signal stack and restores the previous
one when destroyed; with one Core per compiled model, runners dropped out of creation order
left an unmapped stack behind, and the next SIGCHLD (a DataLoader worker or a subprocess
exiting) killed the test suite with SIGSEGV; later NNCF's accuracy control did the same with
its own Cores. Accuracy control also divided by a zero initial metric (a float model that
agrees exactly with its references, as on CPUs without bf16). The checks run in a child process, so a regression fails a test instead of
the suite (tests/conftest.py also names any test that leaves the stack unmapped).
"""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("openvino", reason="needs the [openvino] extra")

SCRIPT = textwrap.dedent("""
    import gc, signal, subprocess
    import numpy as np
    import openvino as ov
    from faceptor_edge.backends.openvino import shared_core
    from faceptor_edge import signal_stack
    from faceptor_edge.quantize.openvino import quantize, quantize_with_accuracy_control
    import torch

    rng = np.random.default_rng(0)
    x = ov.opset13.parameter([1, 3, 8, 8], np.float32)
    h = x
    for channels in (3, 8, 8):
        weights = ov.opset13.constant(rng.standard_normal((8, channels, 3, 3)).astype(np.float32))
        h = ov.opset13.relu(ov.opset13.convolution(h, weights, [1, 1], [1, 1], [1, 1], [1, 1]))
    model = ov.Model([h], [x])
    first = shared_core().compile_model(model, "CPU")
    int8 = quantize(model, torch.randn(4, 3, 8, 8))  # NNCF runs its own Cores inside
    second = shared_core().compile_model(int8, "CPU")
    # A metric that is exactly 0 for the float model on every CPU (minus its int8 convolutions),
    # with no drop allowed: accuracy control ranks and reverts every layer, compiling on Cores
    # of its own, and must not divide by the zero initial metric.
    def int8_convolutions(compiled):
        ops = [op.get_rt_info() for op in compiled.get_runtime_model().get_ops()]
        return sum(rt["layerType"].astype(str) == "Convolution" and rt["runtimePrecision"].astype(str) in ("i8", "u8")
                   for rt in ops)
    metric = lambda compiled, items: -float(int8_convolutions(compiled))
    assert int8_convolutions(second) == 3
    controlled = quantize_with_accuracy_control(model, torch.randn(8, 3, 8, 8), torch.randn(8, 3, 8, 8), metric, 0.0)
    assert int8_convolutions(shared_core().compile_model(controlled, "CPU")) == 0, "accuracy control kept int8 layers"
    assert signal_stack.is_mapped(), "accuracy control left the alternate signal stack unmapped"
    del first; gc.collect()  # out of creation order
    del second; gc.collect()
    signal.signal(signal.SIGCHLD, lambda *_: None)  # Python handlers run on the alternate stack
    for _ in range(3):
        subprocess.run(["true"], check=True)
    print("survived")
""")


def test_runners_dropped_out_of_order_leave_signals_working():
    done = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "survived" in done.stdout, (done.returncode, done.stderr[-2000:])


KEPT = textwrap.dedent("""
    import ctypes, mmap
    from faceptor_edge import signal_stack

    before = signal_stack.current()
    with signal_stack.kept():
        area = mmap.mmap(-1, 65536)
        address = ctypes.addressof(ctypes.c_char.from_buffer(area))
        signal_stack.restore((address, 65536, 0))
        assert signal_stack.current()[:2] == (address, 65536) and signal_stack.is_mapped()
    assert signal_stack.current() == before and signal_stack.is_mapped()
    area.close()  # the body's stack is gone; the thread no longer points at it
    print("kept")
""")


def test_kept_puts_back_the_stack_a_body_replaced():
    done = subprocess.run([sys.executable, "-c", KEPT], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "kept" in done.stdout, (done.returncode, done.stderr[-2000:])
