"""What checking a bundle before it goes live costs: validation (every problem, the dry run
included) against parsing alone, on the repository's bundle.

Run on demand (not a test):
    .venv/bin/python bench/deploy_speed.py [--rounds R]

Each round times, on the same bundle, in alternating order:

  baseline  engine.specs.parse_bundle: SpiffWorkflow parses every BPMN and DMN file and the forms
            (what running a version needs at the least)
  validate  engine.validation.validate: every check of every process, the dry-run cases included
            (what `diagrams deploy`, POST /api/v1/diagrams, the editor and init-db run)

The median round is reported, validate as a ratio of the baseline measured in the same round:
these machines are noisy. Form-schema verdicts are cached by text inside a process, as in a
server; the first round is reported apart, as a fresh process sees it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.specs import load_bundle, parse_bundle  # noqa: E402
from engine.validation import validate  # noqa: E402

NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    bundle = load_bundle(ROOT)
    first = (timed(lambda: parse_bundle(bundle)), timed(lambda: validate(bundle, now=NOW)))
    problems = validate(bundle, now=NOW)
    assert not problems, f"the repository's bundle has problems: {problems}"
    rounds = []
    for i in range(args.rounds):
        parse = lambda: parse_bundle(bundle)  # noqa: E731
        check = lambda: validate(bundle, now=NOW)  # noqa: E731
        if i % 2:
            v, p = timed(check), timed(parse)
        else:
            p, v = timed(parse), timed(check)
        rounds.append((p, v, v / p))
    p, v, ratio = sorted(rounds, key=lambda r: r[2])[len(rounds) // 2]
    print(f"{platform.node()} · Python {platform.python_version()} · {len(bundle.files)} files")
    print(f"median of {args.rounds} rounds\n")
    print("| what | first (fresh process) | median round | × parse |")
    print("|---|---:|---:|---:|")
    print(f"| parse_bundle (baseline) | {first[0] * 1000:.0f} ms | {p * 1000:.0f} ms | 1.0 |")
    print(f"| validate | {first[1] * 1000:.0f} ms | {v * 1000:.0f} ms | **{ratio:.1f}** |")
    print(f"\nround ratios: min {min(r[2] for r in rounds):.1f}, "
          f"max {max(r[2] for r in rounds):.1f}, "
          f"stdev {statistics.pstdev(r[2] for r in rounds):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
