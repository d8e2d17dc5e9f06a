"""The installed package ships distill/quantize/targets inside faceptor_edge, and the CLI works."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from faceptor_edge.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_squats_no_generic_top_level_names(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("faceptor_edge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"faceptor_edge"}
    for part in ("distill", "quantize", "targets"):
        assert f"faceptor_edge/{part}/__init__.py" in names


def test_parts_import_under_the_package():
    import faceptor_edge.distill
    import faceptor_edge.quantize
    import faceptor_edge.targets

    assert Path(faceptor_edge.distill.__file__).parent == ROOT / "distill"
    assert faceptor_edge.quantize.__name__ == "faceptor_edge.quantize"
    assert faceptor_edge.targets.__name__ == "faceptor_edge.targets"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "teacher-info" in capsys.readouterr().out


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
