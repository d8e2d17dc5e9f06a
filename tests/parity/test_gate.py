"""The release gate on every artifact: against its float student and against the teacher
(`faceptor_edge.targets.gate`). With `--student DIR` these are the only tests that run here,
on that student's artifacts; the report goes to `--report`."""

import pytest

from faceptor_edge.targets.verify import NOT_RUN, PASSED


def test_artifact_passes_the_release_gate(exported, gate):
    target, precision, artifact = exported
    row = gate.judge(target, precision, artifact)
    if row["status"] == NOT_RUN:
        pytest.skip(f"not-run: {row['reason']}")
    gaps = {name: head["teacher"]["gap_closed"] for name, head in row["heads"].items() if head["teacher"]["judged"]}
    print(f"\n[{target} {precision}] gap closed to the teacher: {gaps}")
    assert row["status"] == PASSED, row["reason"]
