"""What a persisted step costs: the engine against bare SpiffWorkflow on the same diagrams.

Run on demand (not a test), or `make bench`:
    .venv/bin/python bench/step_cost.py [--cases N] [--rounds R] [--cold] [--profile]

Each case goes through the whole loop: open, accept, handle (resolved at the grid), feedback
(satisfied), report, review (approved), archived. That is 5 user steps; opening the case is timed
too, and every figure is "ms per *user* step" = (open + 5 completions) / 5.

  engine  engine.runtime.Runtime on a fresh SQLite file database (WAL, synchronous=NORMAL, set by
          engine.storage.make_engine); every step is its own committed transaction. One session
          serves a whole round, as in a worker. --cold adds a round with the runtime's in-process
          workflow cache off, so every step restores the case from its blob.
  bare    BpmnWorkflow in memory on the same parsed spec: task.data.update(form); task.run();
          workflow.do_engine_steps(). No persistence at all.

The modes alternate in rounds (the order reverses every round) and the median round is reported,
because the machine is noisy. Wall and CPU time are both summed. Only the use-case calls are timed: finding
the next work item (engine: one SELECT; bare: get_tasks) is the harness's job and is left out of both.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import os
import platform
import pstats
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from SpiffWorkflow.bpmn import BpmnWorkflow  # noqa: E402
from SpiffWorkflow.util.task import TaskState  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from engine.access import viewer_of  # noqa: E402
from engine.clock import FixedClock, iso  # noqa: E402
from engine.models import Case, Person, Position, Unit, WorkItem  # noqa: E402
from engine.runtime import Runtime  # noqa: E402
from engine.sandbox import RestrictedScriptEngine  # noqa: E402
from engine.specs import deploy, load_bundle, parse_bundle  # noqa: E402
from engine.storage import create_schema, make_engine, make_sessionmaker  # noqa: E402
from engine.workcal import WorkCalendar  # noqa: E402

USER_STEPS = 5
GRID = "V01-D1-G01"
# (diagram element expected to be READY, form submitted) in the order the loop asks for them.
LOOP = [
    ("accept", {"valid": True, "category": "resident_request", "severity": "normal"}),
    ("handle_grid", {"outcome": "resolved", "note": "修好了"}),
    ("feedback", {"satisfaction": "satisfied"}),
    ("report_grid", {"summary": "done"}),
    ("review_district", {"approved": True}),
]
SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class Stopwatch:
    """Adds up wall and CPU time of the timed blocks (CPU time is less disturbed by neighbours)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


# --------------------------------------------------------------------------- engine mode


class EngineBench:
    """A fresh database, runtime and minimal org (one unit and one person per tier)."""

    def __init__(self, folder: Path, start: datetime, hot_cases: int = 2000):
        self.path = folder / f"bench-{time.monotonic_ns()}.sqlite"
        self.db = make_engine(f"sqlite:///{self.path}")
        create_schema(self.db)
        self.session = make_sessionmaker(self.db)()
        self.runtime = Runtime(FixedClock(start), hot_cases=hot_cases)
        s = self.session
        deploy(s, self.runtime.registry, load_bundle(ROOT), "system", start)
        s.commit()
        town = _unit(s, "XDK", "town", None)
        village = _unit(s, "V01", "village", town)
        district = _unit(s, "V01-D1", "district", village)
        grid = _unit(s, GRID, "grid", district)
        people = {}
        for role, unit in [
            ("info_officer", grid),
            ("grid_leader", grid),
            ("district_leader", district),
            ("village_secretary", village),
            ("town_leadership", town),
        ]:
            person = Person(username=role, name=role, password_hash="x")
            s.add(person)
            s.flush()
            s.add(Position(person_id=person.id, role=role, unit_id=unit.id))
            people[role] = person
        s.commit()
        self.viewers = {role: viewer_of(s, p) for role, p in people.items()}
        s.commit()

    def run_case(self, n: int, watch: Stopwatch) -> int:
        """One case through the loop, timing only the use-case calls; returns the case id."""
        s, rt = self.session, self.runtime
        with watch:
            case = rt.open_case(
                s,
                self.viewers["info_officer"],
                title=f"路灯坏了 {n}",
                grid=GRID,
                category="resident_request",
                severity="normal",
            )
        for expected, form in LOOP:
            item = s.scalars(
                select(WorkItem).where(WorkItem.case_id == case.id, WorkItem.completed_at.is_(None))
            ).one()
            if item.spec != expected:
                raise AssertionError(f"case {case.id}: expected {expected}, got {item.spec}")
            with watch:
                case = rt.complete(s, self.viewers[item.role], item.id, dict(form))
        if case.status != "archived":
            raise AssertionError(f"case {case.id} ended {case.status}, not archived")
        return case.id

    def run(self, cases: int) -> Stopwatch:
        watch = Stopwatch()
        for n in range(cases):
            self.last_case = self.run_case(n, watch)
        archived = self.session.scalar(
            select(func.count()).select_from(Case).where(Case.status == "archived")
        )
        self.session.rollback()
        if archived < cases:
            raise AssertionError(f"only {archived} of {cases} cases archived")
        return watch

    def pragmas(self) -> tuple[str, str]:
        with self.db.connect() as conn:
            mode = conn.execute(text("PRAGMA journal_mode")).scalar()
            sync = conn.execute(text("PRAGMA synchronous")).scalar()
        return str(mode), SYNCHRONOUS.get(sync, str(sync))

    def blob_size(self) -> int:
        case = self.session.get(Case, self.last_case)
        size = len(case.workflow)
        self.session.rollback()
        return size

    def close(self) -> None:
        self.session.close()
        self.db.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


def _unit(session, code: str, level: str, parent: Unit | None) -> Unit:
    unit = Unit(code=code, name=code, level=level, parent_id=parent.id if parent else None)
    session.add(unit)
    session.flush()
    return unit


# --------------------------------------------------------------------------- bare mode


class BareBench:
    """The same spec, in memory: no database, no serialization, no work items or events."""

    def __init__(self, spec, start: datetime):
        self.spec = spec
        calendar = WorkCalendar()

        def gl_deadline(hours: float, clock: str) -> str:
            # As the engine's helper, counted from the same fixed instant.
            return iso(calendar.add_hours(start, hours, clock == "clock"))

        self.script_engine = RestrictedScriptEngine({"gl_deadline": gl_deadline})

    def run_case(self, watch: Stopwatch) -> None:
        with watch:
            workflow = BpmnWorkflow(self.spec.process, self.spec.subprocesses)
            workflow.script_engine = self.script_engine
            workflow.do_engine_steps()
        for expected, form in LOOP:
            ready = workflow.get_tasks(state=TaskState.READY, manual=True)
            if len(ready) != 1 or ready[0].task_spec.name != expected:
                raise AssertionError(f"expected {expected}, got {ready}")
            task = ready[0]
            with watch:
                task.data.update(form)
                task.run()
                workflow.do_engine_steps()
        if not workflow.is_completed():
            raise AssertionError("bare workflow did not complete")

    def run(self, cases: int) -> Stopwatch:
        watch = Stopwatch()
        for _ in range(cases):
            self.run_case(watch)
        return watch


# --------------------------------------------------------------------------- report


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "usable cpus": str(len(os.sched_getaffinity(0)))
        if hasattr(os, "sched_getaffinity")
        else "?",
        "cpu": model,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def profile_engine(folder: Path, start: datetime, cases: int, top: int = 15) -> None:
    bench = EngineBench(folder, start)
    try:
        bench.run(min(cases, 20))  # warm up outside the profile
        profiler = cProfile.Profile()
        profiler.enable()
        bench.run(cases)
        profiler.disable()
    finally:
        bench.close()
    stats = pstats.Stats(profiler, stream=sys.stdout)
    total = stats.total_tt
    steps = cases * (USER_STEPS + 1)
    print(f"\n== cProfile, engine mode, one round of {cases} cases, {steps} use-case calls")
    print(f"   ({total:.2f} s under the profiler, which slows Python-heavy code about 2x)")
    stats.sort_stats("cumulative").print_stats(top)

    def cumulative(parts: list[tuple[str, str]]) -> float:
        return sum(
            v[3]
            for (f, _line, fn), v in stats.stats.items()
            if any(fn == name and frag in f for frag, name in parts)
        )

    print("== engine functions (cumulative; nested and overlapping, autoflush lands in queries)")
    for label, parts in BREAKDOWN:
        cum = cumulative(parts)
        print(
            f"  {label:<52} {cum:7.2f} s {100 * cum / total:5.1f} %  {1000 * cum / steps:6.2f} ms/call"
        )

    def calls(name: str) -> int:
        return sum(v[1] for (_f, _line, fn), v in stats.stats.items() if fn == name)

    executes = calls("<method 'execute' of 'sqlite3.Cursor' objects>")
    flushes = sum(v[1] for (f, _l, fn), v in stats.stats.items() if fn == "_flush" and "orm" in f)
    trees = sum(
        v[1] for (f, _l, fn), v in stats.stats.items() if fn == "get_tasks" and "Spiff" in f
    )
    print(
        f"== per use-case call: {executes / steps:.1f} SQL statements, {flushes / steps:.1f} ORM "
        f"flushes, {trees / steps:.1f} get_tasks calls (each walks the task tree)"
    )
    print("== self time by package (adds up to 100 %)")
    by_package: dict[str, float] = {}
    for (f, _line, fn), v in stats.stats.items():
        key = _package(f, fn)
        by_package[key] = by_package.get(key, 0.0) + v[2]
    for key, tt in sorted(by_package.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<52} {tt:7.2f} s {100 * tt / total:5.1f} %")


def _package(filename: str, function: str) -> str:
    if filename == "~":  # C functions
        if "sqlite3" in function:
            return "sqlite3 C calls (SQL, COMMIT, fsync)"
        if "json" in function or "_json" in function:
            return "json (C)"
        return "other C built-ins"
    for fragment, name in [
        ("sqlalchemy", "SQLAlchemy (ORM, SQL compile, result rows)"),
        ("SpiffWorkflow", "SpiffWorkflow (run, serialize, get_tasks)"),
        ("jsonschema", "jsonschema"),
        ("/json/", "json encode/decode (JSON columns, blobs)"),
        ("/work/main/engine/", "engine/ own code"),
        ("/bench/", "benchmark harness"),
    ]:
        if fragment in filename:
            return name
    return "other stdlib (uuid, datetime, copy, ...)"


# (label, [(file fragment, function name), ...]) for the engine's own phases.
BREAKDOWN = [
    ("Runtime._run: every open_case/complete call", [("engine/runtime.py", "_run")]),
    ("  Runtime._actionable (load item+case, access)", [("engine/runtime.py", "_actionable")]),
    ("  Runtime._advance (task.run, do_engine_steps)", [("engine/runtime.py", "_advance")]),
    ("  Runtime._save (mirror into rows, serialize)", [("engine/runtime.py", "_save")]),
    ("    Runtime._open_items (SELECT work items)", [("engine/runtime.py", "_open_items")]),
    ("    Runtime._new_item (INSERT + flush)", [("engine/runtime.py", "_new_item")]),
    ("    Runtime._refresh_timers", [("engine/runtime.py", "_refresh_timers")]),
    (
        "    Chain.open + Chain.append (hash chain)",
        [("engine/events.py", "open"), ("engine/events.py", "append")],
    ),
    ("    serializer.serialize_json", [("serializer/workflow.py", "serialize_json")]),
    ("  Session.commit", [("sqlalchemy/orm/session.py", "commit")]),
    ("  validate_form (jsonschema)", [("engine/runtime.py", "validate_form")]),
    ("  load_calendar (once per step)", [("engine/workcal.py", "load_calendar")]),
    ("BpmnWorkflow.do_engine_steps", [("bpmn/workflow.py", "do_engine_steps")]),
    ("Session.flush (explicit and autoflush)", [("sqlalchemy/orm/session.py", "_flush")]),
    ("Session.expire_all (start of every step)", [("sqlalchemy/orm/session.py", "expire_all")]),
    ("json.loads (JSON columns: diagram_version.files)", [("json/__init__.py", "loads")]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=300, help="cases per round (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode (default 5)")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="also time the engine with its in-process workflow cache off (every step restores "
        "the blob), as when consecutive steps of a case land on different processes",
    )
    parser.add_argument(
        "--profile", action="store_true", help="print a cProfile of one engine round"
    )
    args = parser.parse_args(argv)
    n, rounds = args.cases, args.rounds
    start = datetime.now(UTC).replace(microsecond=0)  # timers are days away: none fires

    modes = ["engine", "bare"] + (["engine (cache off)"] if args.cold else [])
    wall: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    spec = parse_bundle(load_bundle(ROOT))
    with tempfile.TemporaryDirectory(prefix="gridloop-bench-") as tmp:
        folder = Path(tmp)
        pragmas, blob = ("?", "?"), 0

        def one(mode: str, cases: int) -> Stopwatch:
            nonlocal pragmas, blob
            if mode == "bare":
                return BareBench(spec, start).run(cases)
            bench = EngineBench(folder, start, hot_cases=0 if "off" in mode else 2000)
            try:
                watch = bench.run(cases)
                pragmas, blob = bench.pragmas(), bench.blob_size()
            finally:
                bench.close()
            return watch

        for mode in modes:  # warm-up: imports, compiled SQL, script caches
            one(mode, min(n, 20))
        for r in range(rounds):
            order = modes if r % 2 == 0 else list(reversed(modes))
            for mode in order:
                gc.collect()
                watch = one(mode, n)
                wall[mode].append(1000 * watch.wall / (n * USER_STEPS))
                cpu[mode].append(1000 * watch.cpu / (n * USER_STEPS))
                print(
                    f"round {r + 1}/{rounds}  {mode:<20} {wall[mode][-1]:7.3f} ms wall"
                    f" {cpu[mode][-1]:7.3f} ms cpu per user step",
                    flush=True,
                )

        maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        med = {m: statistics.median(wall[m]) for m in modes}
        med_cpu = {m: statistics.median(cpu[m]) for m in modes}
        print(f"\n== step cost: {n} cases x {USER_STEPS} user steps, median of {rounds} rounds")
        print("ms per user step (open_case included)   wall median   min     max     cpu median")
        for m in modes:
            print(f"  {m:<38}{med[m]:8.3f}{min(wall[m]):8.3f}{max(wall[m]):8.3f}{med_cpu[m]:10.3f}")
        for m in modes[:1] + modes[2:]:
            print(
                f"ratio {m + ' / bare':<33}{med[m] / med['bare']:8.2f} x wall"
                f"{med_cpu[m] / med_cpu['bare']:17.2f} x cpu   (aim: <= 2 x)"
            )
        print(f"engine throughput      {1000 / med['engine']:.0f} user steps/s (one process)")
        print(f"sqlite                 journal_mode={pragmas[0]} synchronous={pragmas[1]}")
        print(f"archived case blob     {blob} bytes (len(case.workflow))")
        print(f"peak memory            {maxrss_mb:.1f} MB (ru_maxrss, whole process, all modes)")
        for key, value in machine().items():
            print(f"{key:<23}{value}")

        if args.profile:
            profile_engine(folder, start, n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
