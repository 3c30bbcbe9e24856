"""The benchmarks still run against today's diagram and engine (they are run on demand, not in
CI, so a change that breaks one would go unnoticed until someone needs the figures). Tiny sizes:
this checks that they run and agree with themselves, not how fast anything is."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.sqlite_only  # the benchmark makes its own SQLite files: once is enough
def test_step_cost_runs_every_mode_on_a_few_cases():
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "step_cost.py"),
            "--cases",
            "3",
            "--rounds",
            "1",
            "--cold",
            "--history-cases",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for mode in ("bare", "engine"):
        assert mode in done.stdout, done.stdout
