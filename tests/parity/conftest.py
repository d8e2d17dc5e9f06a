"""A small student distilled from the demo teacher in seconds, and its six artifacts.

`FACEPTOR_EDGE_PARITY_STUDENT=lite0 pytest tests/parity` runs the suite on the default
EfficientNet-Lite0 student instead of `tiny` (minutes longer).
"""

import os

import pytest

from faceptor_edge.backends.formats import FORMAT_NAMES, FORMATS

PRECISIONS = ("fp32", "int8")


@pytest.fixture(scope="session")
def student_dir(tmp_path_factory):
    pytest.importorskip(
        "gan_face_generate", reason="synthetic faces need: pip install --no-deps gan-face-generate==1.1.1"
    )
    from faceptor_edge.distill import run as distill_run

    root = tmp_path_factory.mktemp("parity-student")
    size = os.environ.get("FACEPTOR_EDGE_PARITY_STUDENT", "tiny")
    args = ["--teacher", "demo", "--student", size, "--workers", "0", "--count", "48", "--holdout", "8", "--dense-size", "64", "--batch-size", "16",
            "--steps", "40", "--checkpoint-every", "40", "--no-real-faces", "--out", str(root / "run"), "--cache", str(root / "cache")]  # fmt: skip
    assert distill_run.main(args) == 0
    return root / "run" / "student"


@pytest.fixture(scope="session", params=[(t, p) for t in FORMAT_NAMES for p in PRECISIONS], ids=lambda tp: "-".join(tp))
def artifact(request, student_dir, tmp_path_factory):
    from faceptor_edge.targets import get_target
    from faceptor_edge.targets.export import export_student

    target, precision = request.param
    pytest.importorskip(FORMATS[target].toolkit)
    suffix = get_target(target).suffix
    path = tmp_path_factory.mktemp(f"{target}-{precision}") / f"student{suffix}"
    export_student(student_dir, target, precision, path, calibration_count=32, log=lambda *_: None)
    return target, precision, path
