"""`faceptor-edge bench-distill` end to end on tiny settings: every row measured, table and JSON."""

import json
import sys

import pytest

from faceptor_edge.bench.distill import run_sampled
from faceptor_edge.cli import main

pytest.importorskip("gan_face_generate", reason="synthetic faces need: pip install --no-deps gan-face-generate==1.1.1")


@pytest.mark.slow
def test_bench_distill_measures_labelling_training_and_memory(tmp_path, capsys):
    args = ["bench-distill", "--counts", "8", "16", "--steps", "2", "--online-steps", "1", "--teacher", "demo",
            "--dense-size", "64", "--student", "tiny", "--holdout", "4", "--workers", "0", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    report = json.loads((tmp_path / "bench-distill.json").read_text())
    cached, online = report["rows"][:2], report["rows"][2]
    assert [r["faces"] for r in cached] == [8, 16] and online["teacher_outputs"] == "online"
    for row in report["rows"]:
        assert row["train_samples_per_s"] > 0 and row["train_peak_rss_mb"] > 100  # torch alone is more
    assert all(r["label_faces_per_s"] > 0 for r in cached)
    assert report["rss_growth"] == pytest.approx(cached[1]["train_peak_rss_mb"] / cached[0]["train_peak_rss_mb"] - 1)
    assert "training peak RSS" in capsys.readouterr().out


def test_the_sampled_tree_counts_shared_pages_once_in_its_pss():
    # A parent and a forked child sharing 200 MiB copy-on-write: the RSS sum counts them twice.
    script = ("import os, sys, time, numpy as np\n"
              "a = np.ones(200 * 2**20 // 8)\n"
              "pid = os.fork()\n"
              "time.sleep(1.5)\n"
              "os._exit(0) if pid == 0 else os.waitpid(pid, 0)\n")  # fmt: skip
    measured = run_sampled([sys.executable, "-c", script])
    assert measured["peak_pss_mb"] > 200
    assert measured["peak_rss_mb"] - measured["peak_pss_mb"] > 150
