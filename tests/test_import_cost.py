"""What a command imports: `--version` no torch.

Each runs in a fresh interpreter under `-X importtime`, which lists every module imported.
"""

import subprocess
import sys

from faceptor_edge import __version__


def _imports(*args: str) -> tuple[set[str], str]:
    """The modules `python -X importtime ARGS` imports, and its stdout."""
    done = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, check=True)
    lines = (line.partition("|")[2].rpartition("|")[2] for line in done.stderr.splitlines())
    return {line.strip() for line in lines if line.strip()}, done.stdout


def test_version_imports_no_torch():
    modules, out = _imports("-m", "faceptor_edge.cli", "--version")
    assert out == f"faceptor-edge {__version__}\n"
    assert "faceptor_edge.evaluation.benchmarks.registry" in modules  # the walk sees the parser's imports
    assert "torch" not in modules

