"""ci/same-outputs.sh, the check that a refactoring leaves every output byte as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_same_outputs_runs_both_trees_and_finds_head_identical_to_itself(tmp_path):
    """HEAD against the checkout: every compared file (records, diagnostics, predictions, weights,
    summaries without timing) of the tiny PANet and PFENet pipeline is written by both and identical.
    Catches the script breaking (it once stopped at an unbound variable before running anything)."""
    if subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD"], check=False).returncode:
        pytest.skip("the checkout has uncommitted changes: HEAD and it may differ")
    env = {**os.environ, "PYTHON": sys.executable, "SAME_OUTPUTS_WORK": str(tmp_path / "work")}
    done = subprocess.run(
        ["bash", str(REPO / "ci" / "same-outputs.sh"), "HEAD"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "same-outputs: 14 files identical" in done.stdout, done.stdout[-2000:]
