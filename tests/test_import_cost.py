"""What a command imports: `--version` no torch, loading a student none of the face sources.

Each runs in a fresh interpreter under `-X importtime`, which lists every module imported.
"""

import subprocess
import sys

from faceptor_edge import __version__
from faceptor_edge.student.io import save_student
from faceptor_edge.student.model import build_student

GAN_SOURCES = {"faceptor_edge.data", "faceptor_edge.stylegan"}  # the DCGAN and MobileStyleGAN face sources


def _imports(*args: str) -> tuple[set[str], str]:
    """The modules `python -X importtime ARGS` imports, and its stdout."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, check=True)
    lines = (line.partition("|")[2].rpartition("|")[2] for line in done.stderr.splitlines())
    return {line.strip() for line in lines if line.strip()}, done.stdout


def test_version_imports_no_torch():
    modules, out = _imports("-m", "faceptor_edge.cli", "--version")
    assert out == f"faceptor-edge {__version__}\n"
    assert "faceptor_edge.evaluation.paper_sets.registry" in modules  # the walk sees the parser's imports
    assert "torch" not in modules


def test_loading_a_student_imports_no_face_source(tmp_path):
    save_student(tmp_path / "student", build_student("tiny"), {})
    code = f"from faceptor_edge.backends import load_backend; print(load_backend({str(tmp_path / 'student')!r}).kind)"
    modules, out = _imports("-c", code)
    assert out == "student\n"
    assert "faceptor_edge.student.model" in modules and "torch" in modules
    assert modules.isdisjoint(GAN_SOURCES)
