"""The wheel ships every module (distill/quantize/targets inside faceptor_edge) and py.typed, the
console script runs, and the CLI lists and documents every command."""

import argparse
import configparser
import importlib
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from faceptor_edge import __version__
from faceptor_edge.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


# Repository folder -> where it installs (pyproject's package-dir).
PARTS = {"faceptor_edge": "faceptor_edge", "distill": "faceptor_edge/distill", "quantize": "faceptor_edge/quantize",
         "targets": "faceptor_edge/targets"}  # fmt: skip
COMMANDS = {"teacher-info", "student-info", "export", "inspect", "parity", "bench", "bench-distill", "predict",
            "compare", "evaluate"}  # fmt: skip


def _source_files() -> set[str]:
    """Every module of the repository's four parts, py.typed and the release student's files (when
    shipped), at its path inside a wheel."""
    files = {f"{installed}/{path.relative_to(ROOT / folder).as_posix()}"
             for folder, installed in PARTS.items() for path in (ROOT / folder).rglob("*.py")}  # fmt: skip
    release = {
        f"faceptor_edge/release_student/{path.name}" for path in (ROOT / "faceptor_edge/release_student").glob("*")
    }
    return files | {"faceptor_edge/py.typed"} | release


def _resolve(value: str) -> object:
    """`module:attribute` of an entry point, imported."""
    module, _, attribute = value.partition(":")
    return getattr(importlib.import_module(module), attribute)


@pytest.mark.slow
def test_wheel_ships_every_module_and_py_typed_under_faceptor_edge_only(tmp_path):
    source = tmp_path / "source"  # a fresh tree: from ./build setuptools would ship modules since renamed away
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for folder in PARTS:
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("faceptor_edge-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = (name for name in names if name.endswith(".dist-info/entry_points.txt"))
        scripts = configparser.ConfigParser()
        scripts.read_string(archive.read(entry_points).decode())
    assert {name for name in names if ".dist-info/" not in name} == _source_files()
    assert dict(scripts["console_scripts"]) == {"faceptor-edge": "faceptor_edge.cli:main"}
    assert _resolve(scripts["console_scripts"]["faceptor-edge"]) is main


def test_parts_import_from_their_repository_folders():
    import faceptor_edge.distill
    import faceptor_edge.quantize
    import faceptor_edge.targets

    for part in (faceptor_edge.distill, faceptor_edge.quantize, faceptor_edge.targets):
        assert Path(part.__file__) == ROOT / part.__name__.rpartition(".")[2] / "__init__.py"


def test_every_installed_console_script_runs():
    scripts = [ep for ep in metadata.distribution("faceptor-edge").entry_points if ep.group == "console_scripts"]
    assert [ep.name for ep in scripts] == ["faceptor-edge"]
    for script in scripts:
        assert callable(_resolve(script.value))
        done = subprocess.run([Path(sys.executable).parent / script.name, "--version"], capture_output=True,
                              text=True, check=True)  # fmt: skip
        assert done.stdout == f"faceptor-edge {__version__}\n"


def _commands() -> dict[str, argparse.ArgumentParser]:
    (subparsers,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


def test_help_lists_every_command_and_each_command_has_help(capsys):
    assert set(_commands()) == COMMANDS
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    listed = {match[1] for match in re.finditer(r"^ {4}(\S+)", capsys.readouterr().out, re.MULTILINE)}
    assert COMMANDS <= listed  # a command added without help= would be missing here
    for command in sorted(COMMANDS):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0, command
        assert capsys.readouterr().out.startswith(f"usage: faceptor-edge {command} "), command


def test_teacher_info_reports_variant_heads_and_size(capsys):
    assert main(["teacher-info", "demo"]) == 0
    out = capsys.readouterr().out
    assert "variant:    full" in out and "heads:      13" in out
    assert "102,940,929" in out  # 86,828,544 encoder + 16,507,137 heads, less ln_post/proj (SPEC §8)


def test_teacher_info_on_a_bad_file_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    assert main(["teacher-info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not a PyTorch checkpoint" in err and "Traceback" not in err
