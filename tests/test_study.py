"""The recipe study's bookkeeping: finished rows are read back, not rerun; the table says what
was measured and marks reused labels. (`python distill/study.py --plan smoke` runs it for real.)"""

import json

import pytest

from faceptor_edge.distill import study


def _result(row, label_faces):
    stages = {"label_train": {"seconds": 90.0, "faces": label_faces}, "train": {"seconds": 600.0}}
    return {"name": row.name, "about": row.about, "args": list(row.args), "wall_s": 700.0,
            "profile": {"stages": stages},
            "real": {"labelled": {"dlib-faces:nme_io": 11.794, "dlib-johns:verification_accuracy": 0.8671},
                     "gap_closed": {"recog_ms1mv3": 0.25, "align_300w": -0.1}}}  # fmt: skip


def test_a_finished_row_is_read_back_and_a_changed_one_is_not(tmp_path, monkeypatch):
    row = study.PLANS["smoke"][0]
    (tmp_path / row.name).mkdir()
    (tmp_path / row.name / "result.json").write_text(json.dumps(_result(row, 24)))
    monkeypatch.setattr(study.subprocess, "run", lambda *a, **k: pytest.fail("a finished row ran again"))
    assert study.run_row(row, tmp_path, None)["wall_s"] == 700.0
    changed = study.Row(row.name, row.about, (*row.args, "--no-augment"))
    ran = []
    monkeypatch.setattr(study.subprocess, "run", lambda command, **_: ran.append(command) or _Failed())
    with pytest.raises(study.UserError, match="rerun to resume"):
        study.run_row(changed, tmp_path, None)
    assert ran and ran[0][-2:] == ["--out", str(tmp_path / row.name / "run")]


class _Failed:
    returncode = 1


def test_the_table_has_one_line_per_row_and_marks_reused_labels():
    first, second = study.PLANS["smoke"]
    table = study.markdown_table([_result(first, 24), _result(second, 0)], "2026-12-02")
    lines = [line for line in table.splitlines() if line.startswith("| tiny-")]
    assert len(lines) == 2
    assert "| 1.5 | 10.0 | 11.7 | 11.79 | – | 0.867 | – | 0.25 |" in lines[0]
    assert "| cached | 10.0 | 11.7 |" in lines[1] and lines[1].endswith("| -0.10 |")
    assert table.startswith(study.MARK_START) and table.rstrip().endswith(study.MARK_END)


def test_unknown_rows_are_one_clear_error(capsys):
    assert study.main(["--plan", "smoke", "--rows", "nope", "--list"]) == 2
    assert "not in plan 'smoke'" in capsys.readouterr().err
    assert study.main(["--plan", "smoke", "--list"]) == 0
    assert "tiny-b" in capsys.readouterr().out
