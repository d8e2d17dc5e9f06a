"""OpenVINO runners and NNCF leave the process able to take signals.

Each OpenVINO CPU plugin instance installs an alternate signal stack and restores the previous
one when destroyed; with one Core per compiled model, runners dropped out of creation order
left an unmapped stack behind, and the next SIGCHLD (a DataLoader worker or a subprocess
exiting) killed the test suite with SIGSEGV. The check runs in a child process, so a
regression fails this test instead of the suite.
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
    from faceptor_edge.quantize.openvino import quantize
    import torch

    x = ov.opset13.parameter([1, 3, 8, 8], np.float32)
    weights = ov.opset13.constant(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32))
    conv = ov.opset13.convolution(x, weights, [1, 1], [1, 1], [1, 1], [1, 1])
    model = ov.Model([ov.opset13.relu(conv)], [x])
    first = shared_core().compile_model(model, "CPU")
    int8 = quantize(model, torch.randn(4, 3, 8, 8))  # NNCF runs its own Cores inside
    second = shared_core().compile_model(int8, "CPU")
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
