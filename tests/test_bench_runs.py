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
    for mode in ("bare", "engine", "Gridloop's tree walk"):
        assert mode in done.stdout, done.stdout


def _bench(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / args[0]), *args[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.sqlite_only
def test_audit_speed_runs_on_a_few_cases():
    out = _bench("audit_speed.py", "--cases", "6", "--rounds", "1")
    assert "audit verify" in out and "replay every case" in out


@pytest.mark.sqlite_only
def test_figures_speed_runs_on_a_few_cases():
    out = _bench("figures_speed.py", "--cases", "300", "--repeat", "1")
    assert "| town | 300 |" in out


@pytest.mark.sqlite_only
def test_inbox_scale_runs_on_a_few_items():
    out = _bench(
        "inbox_scale.py", "--items", "2000", "--cases", "400", "--runs", "3", "--deep", "3"
    )
    assert "inbox_page" in out and "town.leader1" in out


@pytest.mark.sqlite_only  # no database at all: once is enough
def test_deploy_speed_runs_and_finds_the_repository_bundle_clean():
    out = _bench("deploy_speed.py", "--rounds", "1")
    assert "| validate |" in out and "parse_bundle (baseline)" in out
