"""Validation of a bundle before it may go live (DESIGN §8): every problem, each naming the file
and the element at fault, so that an administrator can fix them all in one round.

`validate(bundle, process_id)` reads every file (a file that does not parse, or fails the BPMN or
DMN schema, is named with its lines; the other files are still read), builds the process, checks
every piece of its Python against the sandbox, and then runs the checks registered for that
process (`CHECKS`): the case loop's and the campaign's are below. Without a process id, the case
loop (which every bundle must have) and every other registered process the bundle defines are
checked, each built from the one parse of the files. A process's `final` checks (the dry run) run
only when nothing else was found in the files or in that process: a diagram with an unsafe script
or a missing form would only fail there again, less clearly.

What the case loop's checks decide, and why:
- lanes: every lane of the process is one of the five tiers (the lane's id), and every user task
  sits in one; user tasks have `task`, `status` and a `formKey` whose form loads (the task's id).
- reads: a name that a gateway condition or a decision table reads must be something the case
  can hold — a field of some form, a variable a script or pre/postScript assigns, an output of a
  decision table, an event's variable, or the words the engine puts in every case at opening
  (engine/step.py OPENING_WORDS) — else the first case to get there stops with a NameError.
- timers: each timer expression is evaluated in the restricted engine with sample data (every
  value the bundle can give the names it reads, see `DataFacts`) and must give text that
  SpiffWorkflow reads as an ISO 8601 date (timeDate, with a time zone and not already past: a
  past date fires at once, and in a loop fires for ever), duration (timeDuration) or cycle
  (timeCycle, repeating after a positive interval, not starting in the past). An unquoted `P3D`
  is a name, and is reported with the quotes it needs.
- tables: every decision table the process calls is evaluated with SpiffWorkflow's own entry
  semantics (DMNEngine.evaluate) over the values its inputs can take. A table whose inputs read
  `category` and `severity` must match some rule for every combination of the values the bundle
  gives its inputs: category and severity from the forms' enums (the accept form's), and each
  other input's known domain — the values forms, scripts and tables can give it (so `tier` is
  the tiers that dispatch, escalation and the tier-above table can produce, `limit_task` the
  task names the preScripts set). An input whose values cannot be enumerated (a number a script
  computes, free text) is not enumerated: any entry on it is taken to match. A rule that raises
  on a known value is reported, since the engine evaluates it for every case (hit policy FIRST
  evaluates every rule). Under hit policy UNIQUE (SpiffWorkflow's default, which it runs as FIRST)
  two rules that both match some values are reported naming both rules; there the values also
  include each column's own literals (and their neighbours, for numbers).
- loops: a cycle of the flow that passes no user task and no catching event never waits, and a
  case would run it for ever inside one step; it is refused before the dry run could hang on it.
- dry run: a case is opened (as a resident would, with no category or severity), each ready user
  task completed with data built from its form (`sample_form_data`: defaults, first enum values,
  `true`, "x"; the next value each time the case comes back to the same task, so a loop that an
  "unsatisfied" keeps going is left the next time round), due timers fired, for at most
  DRY_RUN_STEPS steps and DRY_RUN_SECONDS seconds (enforced however the diagram spins); it must
  end archived. A failure names the last element reached.

What the campaign's checks decide (DESIGN §12: one instance per target grid, started with the
campaign's span): the same lanes, reads, timers, tables and loops checks, with the campaign's own
rules for tasks (`campaign_return` and `campaign_confirm` must both exist, with forms that load,
and put the instance in a campaign status, never a case's: engine/specs.py RULES); its timers are
evaluated with a sample span (launched now, due a week later); `campaign_return` and
`campaign_confirm` each carry the 80% (`timer` warn) and due (`timer` due) timers the campaign's
supervision and lateness are read from (a grid is returned once its leader confirms);
and a dry run from launch through a return and a confirmation must end `confirmed`.
"""

from __future__ import annotations

import ast
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from itertools import islice, product
from types import SimpleNamespace
from typing import Any

import jsonschema
from SpiffWorkflow.bpmn.specs.control import BoundaryEventSplit
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    CycleTimerEventDefinition,
    DurationTimerEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent
from SpiffWorkflow.bpmn.specs.mixins.script_task import ScriptTask
from SpiffWorkflow.bpmn.specs.mixins.user_task import UserTask
from SpiffWorkflow.dmn.specs.business_rule_task_mixin import BusinessRuleTaskMixin

from . import spiffclock
from .clock import SystemClock, iso, parse_iso
from .models import TIERS
from .sandbox import SAFE_BUILTINS, RestrictedEnvironment, check_source
from .specs import (
    CAMPAIGN_PROCESS_ID,
    CAMPAIGN_TASKS,
    HELPERS,
    PROCESS_ID,
    Bundle,
    BundleFiles,
    DiagramError,
    ProcessRules,
    Spec,
    TaskInfo,
    _dmn_entry,
    check_process,
    check_python,
    decision_files,
    make_spec,
    process_ids,
    process_of,
    read_files,
    rules_of,
)
from .step import (
    OPENING_WORDS,
    STEP_HELPERS,
    Complete,
    Fire,
    Open,
    Outcome,
    ready_user_tasks,
    run_step,
)
from .workcal import WorkCalendar

log = logging.getLogger(__name__)

BPMN_NS = {"bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL"}
DRY_RUN_STEPS = 100  # steps (open, completions, timer firings) a dry-run case may take
DRY_RUN_SECONDS = 5.0  # and the time it may take, however the diagram loops
MAX_COMBINATIONS = 20_000  # value combinations a decision table is evaluated on
MAX_TIMER_SAMPLES = 32  # sample data sets a timer expression is evaluated with
MAX_PAIRS = 20  # category × severity pairs listed in one problem


@dataclass(frozen=True)
class Problem:
    file: str | None
    element: str | None
    message: str
    line: int | None = None

    def as_json(self) -> dict:
        found = {"file": self.file, "element": self.element, "message": self.message}
        if self.line is not None:
            found["line"] = self.line
        return found


class BundleInvalid(DiagramError):
    """A bundle refused with every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        first = self.problems[0]
        super().__init__(
            "; ".join(p.message for p in self.problems)
            if len(self.problems) > 1
            else first.message,
            element=first.element,
            file=first.file,
        )


# --------------------------------------------------------------------------- the registry


@dataclass
class Parsed:
    """A bundle whose process was built: what every check reads, and where problems go."""

    bundle: Bundle
    process_id: str
    now: datetime
    files: BundleFiles
    process: Any
    subprocesses: dict
    tables: dict[str, tuple[str, str]]  # decision table id -> (decision id, DMN file)
    unsafe: set[str]  # task spec names and table ids whose Python was refused
    problems: list[Problem]
    tasks: dict[str, TaskInfo] = field(default_factory=dict)  # set by the tasks check

    @property
    def process_file(self) -> str | None:
        return getattr(self.process, "file", None)

    @property
    def rules(self) -> ProcessRules:
        return rules_of(self.process_id)

    @cached_property
    def opening(self) -> dict:
        """What a sample instance of the process is opened with (its Open command's data)."""
        return CHECKS.get(self.process_id, ProcessChecks(())).opening(self.now)

    @cached_property
    def forms(self) -> dict[str, dict]:
        """The forms the process's user tasks name: only their fields can be in its data."""
        named = {
            ts.extensions.get("properties", {}).get("formKey")
            for ts in self.process.task_specs.values()
            if isinstance(ts, UserTask)
        }
        return {name: form for name, form in self.files.forms.items() if name in named}

    def report(
        self, element: str | None, message: str, file: str | None = None, line: int | None = None
    ) -> None:
        self.problems.append(Problem(file or self.process_file, element, message, line))

    def report_error(self, error: DiagramError) -> None:
        self.problems.append(_problem(error))

    @cached_property
    def data(self) -> DataFacts:
        return DataFacts.of(self)

    def specs(self) -> Iterator[tuple[str, Any]]:
        """(name, task spec) of the process whose Python passed the sandbox check."""
        for name, ts in self.process.task_specs.items():
            if name not in self.unsafe:
                yield name, ts

    def used_tables(self, unsafe_too: bool = False) -> dict[str, tuple[Any, list[str]]]:
        """Decision tables the process calls: id -> (table, ids of the tasks that call it);
        those whose Python passed the sandbox check unless `unsafe_too`."""
        found: dict[str, tuple[Any, list[str]]] = {}
        specs = self.process.task_specs.items() if unsafe_too else self.specs()
        for _name, ts in specs:
            if isinstance(ts, BusinessRuleTaskMixin) and (
                unsafe_too or ts.dmnEngine.decision_table.id not in self.unsafe
            ):
                table = ts.dmnEngine.decision_table
                found.setdefault(table.id, (table, []))[1].append(ts.bpmn_id or ts.name)
        return found

    def process_xml(self):
        """(path, the process element) of the process in the bundle's BPMN files."""
        for path, root in self.files.roots.items():
            if path.endswith(".bpmn"):
                for element in root.iter(f"{{{BPMN_NS['bpmn']}}}process"):
                    if element.get("id") == self.process_id:
                        return path, element
        return None, None


Check = Callable[[Parsed], None]


def case_opening(now: datetime) -> dict:
    """A dry-run case's opening: as a resident opens one, with no category or severity."""
    opening = {"title": "dry run", "description": "", "grid": None, "household": None}
    opening.update({name: None for name in OPENING_WORDS})
    return opening


@dataclass(frozen=True)
class ProcessChecks:
    """A process's checks: `checks` run on every bundle whose process builds, `final` only on a
    bundle in which they found nothing. `opening`: the data a sample instance is opened with at
    an instant (the dry run's Open command; the values of the process's opening words that
    timers and tables are evaluated with)."""

    checks: tuple[Check, ...]
    final: tuple[Check, ...] = ()
    opening: Callable[[datetime], dict] = case_opening


CHECKS: dict[str, ProcessChecks] = {}


def register(
    process_id: str,
    checks: list[Check],
    final: list[Check] | None = None,
    opening: Callable[[datetime], dict] = case_opening,
) -> None:
    """Say which checks a process's bundles go through (after parsing and the sandbox check),
    and what a sample instance of it is opened with."""
    CHECKS[process_id] = ProcessChecks(tuple(checks), tuple(final or ()), opening)


def validate(
    bundle: Bundle, process_id: str | None = None, now: datetime | None = None
) -> list[Problem]:
    """Every problem of the bundle's process `process_id`; empty when it may go live. Without a
    process id: the case loop's, then those of every other process the bundle defines that has
    checks registered (a bundle without a campaign diagram is a case loop's bundle). `now`: the
    instant timers and the dry run start from (default: the system clock)."""
    problems: list[Problem] = []

    def collect(error: DiagramError) -> None:
        problems.append(_problem(error))

    files = read_files(bundle, collect)
    if files.broken:
        return _unique(problems)
    if process_id is None:
        defined = set(process_ids(files.parser))
        wanted = [PROCESS_ID, *(p for p in CHECKS if p != PROCESS_ID and p in defined)]
    else:
        wanted = [process_id]
    at = now or SystemClock().now()
    clean_files = not problems
    for wanted_id in wanted:
        problems.extend(_validate_process(bundle, files, wanted_id, at, clean_files))
    return _unique(problems)


def _validate_process(
    bundle: Bundle, files: BundleFiles, process_id: str, now: datetime, final: bool
) -> list[Problem]:
    """The problems of one process of a parsed bundle; its final checks only when `final` (the
    files had none) and its other checks found nothing."""
    problems: list[Problem] = []

    def collect(error: DiagramError) -> None:
        problems.append(_problem(error))

    try:
        process, subprocesses = process_of(files.parser, process_id)
    except DiagramError as exc:
        return [_problem(exc)]
    tables = decision_files(files.parser)
    unsafe = check_python(process, collect, tables)
    parsed = Parsed(bundle, process_id, now, files, process, subprocesses, tables, unsafe, problems)
    registered = CHECKS.get(process_id, ProcessChecks(()))
    for check in registered.checks:
        _guarded(check, parsed)
    if final and not problems:
        for check in registered.final:
            _guarded(check, parsed)
    return problems


def _guarded(check: Check, parsed: Parsed) -> None:
    """A check that fails on something unforeseen refuses the bundle rather than answering 500."""
    try:
        check(parsed)
    except Exception as exc:
        log.exception("validation check %s failed", check.__name__)
        parsed.report(None, f"the bundle could not be checked ({check.__name__}): {exc}")


def _problem(error: DiagramError) -> Problem:
    message = getattr(error, "detail", None) or str(error)
    if error.line:
        message = f"line {error.line}: {message}"
    return Problem(error.file, error.element, message, error.line)


def _unique(problems: list[Problem]) -> list[Problem]:
    seen, found = set(), []
    for problem in problems:
        key = (problem.file, problem.element, problem.message)
        if key not in seen:
            seen.add(key)
            found.append(problem)
    return found


# --------------------------------------------------------------------------- what data can hold


ANY = object()  # a value that cannot be enumerated: any entry reading it may match


@dataclass
class Domain:
    """The values the bundle can give a name. `open`: some source gives values that cannot be
    listed (free text, a computed number); `sample` is then one of the right type."""

    values: list = field(default_factory=list)
    open: bool = False
    sample: Any = None

    def add(self, value: Any) -> None:
        if not any(_same(value, v) for v in self.values):
            self.values.append(value)

    def samples(self) -> list:
        """Values to evaluate an expression with: every known value, else one of the right
        type."""
        return list(self.values) or [self.sample]


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


@dataclass
class DataFacts:
    """What the case's data can hold, read from the bundle: name -> Domain."""

    domains: dict[str, Domain]

    @classmethod
    def of(cls, parsed: Parsed) -> DataFacts:
        domains: dict[str, Domain] = {}

        def domain(name: str) -> Domain:
            return domains.setdefault(name, Domain())

        for form in parsed.forms.values():
            for name, prop in (form.get("properties") or {}).items():
                if isinstance(prop, dict):
                    _form_domain(domain(name), prop)
        for name in parsed.rules.opening:  # what the process's first data holds
            value = parsed.opening.get(name)
            if value is not None:
                domain(name).add(value)
            else:
                domain(name)
        # Unsafe code never runs, but reading what it assigns is harmless, and keeps a refused
        # script from also making every name it sets "unknown".
        for ts in parsed.process.task_specs.values():
            for source in _scripts_of(ts):
                _script_domains(source, domain)
            event = getattr(ts, "event_definition", None)
            for attr in ("variable", "message_var"):
                if isinstance(getattr(event, attr, None), str):
                    domain(getattr(event, attr)).open = True
        for table, _tasks in parsed.used_tables(unsafe_too=True).values():
            for output in table.outputs:
                key = output.name or output.label
                if not key:
                    continue
                if "." in key:
                    domain(key.split(".")[0]).open = True
                    continue
                target = domain(key)
                for rule in table.rules:
                    for entry in rule.outputEntries:
                        if entry.output is output:
                            _literal_into(target, entry.text or '""')
        for name in getattr(parsed.process, "data_objects", {}) or {}:
            domain(name).open = True
        return cls(domains)

    def known(self, name: str) -> bool:
        return name in self.domains

    def closed(self, name: str) -> bool:
        found = self.domains.get(name)
        return found is not None and not found.open and bool(found.values)


def _form_domain(target: Domain, prop: dict) -> None:
    if "const" in prop:
        target.add(prop["const"])
    elif isinstance(prop.get("enum"), list):
        for value in prop["enum"]:
            target.add(value)
    elif _type_of(prop) == "boolean":
        target.add(True)
        target.add(False)
    else:
        target.open = True
        if target.sample is None:
            target.sample = _sample_value(prop, 0)


def _scripts_of(ts) -> list[str]:
    found = []
    if isinstance(ts, ScriptTask) and ts.script:
        found.append(ts.script)
    extensions = getattr(ts, "extensions", {})
    found.extend(extensions[k] for k in ("preScript", "postScript") if extensions.get(k))
    return found


def _script_domains(source: str, domain: Callable[[str], Domain]) -> None:
    """What a script can assign: a literal is a value; anything else opens the name."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    try:
                        domain(target.id).add(ast.literal_eval(node.value))
                    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                        domain(target.id).open = True
                else:
                    for name in _stored_names(target):
                        domain(name).open = True
        elif isinstance(node, ast.AugAssign | ast.For | ast.AnnAssign):
            for name in _stored_names(node.target):
                domain(name).open = True


def _stored_names(node: ast.AST) -> list[str]:
    return [n.id for n in ast.walk(node) if isinstance(n, ast.Name)]


def _literal_into(target: Domain, text: str) -> None:
    try:
        target.add(ast.literal_eval(text.strip()))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        target.open = True


def names_read(source: str) -> set[str]:
    """The data names an expression reads: not builtins, helpers, or its own loop variables."""
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError:
        return set()
    bound = {
        n.id
        for comp in ast.walk(tree)
        if isinstance(comp, ast.comprehension)
        for n in ast.walk(comp.target)
        if isinstance(n, ast.Name)
    }
    return (
        {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        - bound
        - set(SAFE_BUILTINS)
        - HELPERS
        - {"dmninputexpr"}
    )


# --------------------------------------------------------------------------- the case loop's checks


def check_tasks(parsed: Parsed) -> None:
    """User tasks' properties and forms, supervisions' recipients (engine/specs.py)."""
    parsed.tasks = check_process(
        parsed.process,
        parsed.files.forms,
        parsed.report_error,
        lanes=False,
        tables=parsed.tables,
        bad_forms=parsed.files.bad_forms,
        python=False,
        rules=parsed.rules,
    )


def check_lanes(parsed: Parsed) -> None:
    """Every lane of the process, holding user tasks or not, is one of the five tiers (the lane's
    id); every user task sits in a lane."""
    path, process = parsed.process_xml()
    if process is not None:
        for lane in process.iter(f"{{{BPMN_NS['bpmn']}}}lane"):
            name = lane.get("name")
            if name not in TIERS:
                parsed.report(
                    lane.get("id"),
                    f"lane '{name or ''}' is not one of the five tiers {', '.join(TIERS)}"
                    " (a task's lane name is the tier that does it)",
                    path,
                    lane.sourceline,
                )
    for _name, ts in parsed.specs():
        if isinstance(ts, UserTask) and not ts.lane:
            parsed.report(ts.bpmn_id, "the user task is in no lane: put it in a tier's lane")


def check_reads(parsed: Parsed) -> None:
    """What gateway conditions and decision tables read is something a case can hold."""
    facts = parsed.data
    path, process = parsed.process_xml()
    if process is not None:
        for flow in process.iter(f"{{{BPMN_NS['bpmn']}}}sequenceFlow"):
            condition = flow.find("bpmn:conditionExpression", BPMN_NS)
            if condition is None or not (condition.text or "").strip():
                continue
            source = flow.get("sourceRef")
            if source in parsed.unsafe:
                continue
            for name in sorted(names_read(condition.text)):
                if not facts.known(name):
                    parsed.report(
                        flow.get("id"),
                        f"the condition of the flow from '{source}' reads '{name}', which no "
                        f"form field, script, decision table or case opening sets{_hint(name)}",
                        path,
                        condition.sourceline,
                    )
    for table_id, (table, _tasks) in parsed.used_tables().items():
        if table_id in parsed.unsafe:
            continue
        decision, dmn_file = parsed.tables.get(table_id, (table_id, None))
        cells: list[tuple[str, str]] = []
        for inp in table.inputs:
            cells.append((inp.id, inp.expression or ""))
        for rule in table.rules:
            for entry in rule.inputEntries:
                cells.extend((rule.id, _dmn_entry(lhs, "dmninputexpr")) for lhs in entry.lhs if lhs)
            cells.extend((rule.id, e.text) for e in rule.outputEntries if e.text)
        reported = set()
        for element, source in cells:
            for name in sorted(names_read(source)):
                if not facts.known(name) and (element, name) not in reported:
                    reported.add((element, name))
                    parsed.report(
                        element,
                        f"decision table '{decision}' reads '{name}', which no form field, "
                        f"script, decision table or case opening sets{_hint(name)}",
                        dmn_file,
                    )


def _hint(name: str) -> str:
    return f' (an ISO 8601 value must be quoted: "{name}")' if _ISO_NAME.match(name) else ""


# A bare name that is an ISO 8601 duration, cycle or week date someone forgot to quote.
_ISO_NAME = re.compile(r"^(R\d*|P(\d+[YMWD])*(T(\d+[HMS])+)?|\d{4}W\d+)$", re.IGNORECASE)


def check_timers(parsed: Parsed) -> None:
    """Each timer expression evaluates, with every sample of what it reads, to text that
    SpiffWorkflow reads as a date, duration or cycle."""
    facts = parsed.data
    environment = RestrictedEnvironment(
        {"gl_deadline": _deadline_helper(lambda: parsed.now), **STEP_HELPERS}
    )
    spiffclock.install()
    verdicts: dict[tuple, str | None] = {}
    for _name, ts in parsed.specs():
        definition = getattr(ts, "event_definition", None)
        if not isinstance(definition, TimerEventDefinition):
            continue
        expression = (definition.expression or "").strip()
        element = ts.bpmn_id or ts.name
        kind = _timer_kind(definition)
        unknown = sorted(n for n in names_read(expression) if not facts.known(n))
        if unknown:
            if expression in unknown and _ISO_NAME.match(expression):
                message = (
                    f"the timer expression {expression} is not quoted: it is Python, so an ISO "
                    f'8601 {kind} is written as text, "{expression}"'
                )
            else:
                message = (
                    f"the timer expression `{expression}` reads "
                    + ", ".join(f"'{n}'" for n in unknown)
                    + ", which no form field, script, decision table or case opening sets"
                )
                if any(_ISO_NAME.match(n) for n in unknown):
                    message += f' (an ISO 8601 value must be quoted: "{expression}")'

            parsed.report(element, message)
            continue
        names = sorted(names_read(expression))
        choices = [facts.domains[n].samples() for n in names]
        for values in islice(product(*choices), MAX_TIMER_SAMPLES):
            data = dict(zip(names, values, strict=True))
            key = (kind, expression, repr(values))
            if key not in verdicts:  # timers of many tasks share their expression
                with spiffclock.step_clock(parsed.now):
                    verdicts[key] = _timer_problem(
                        environment, definition, expression, data, parsed.now
                    )
            problem = verdicts[key]
            if problem:
                shown = ", ".join(f"{k}={v!r}" for k, v in data.items())
                parsed.report(element, problem + (f" (with {shown})" if shown else ""))
                break


def check_subprocess_timers(parsed: Parsed) -> None:
    """No timer inside an embedded or called subprocess. The step schedules and fires the timers
    of the process's own tasks (engine/step.py reads the top level of the task tree), so a timer
    inside a subprocess would fire only when some other step happened to run: late, or never."""
    for name, sub in sorted(parsed.subprocesses.items()):
        for ts in sub.task_specs.values():
            if isinstance(getattr(ts, "event_definition", None), TimerEventDefinition):
                parsed.report(
                    ts.bpmn_id or ts.name,
                    f"a timer inside the subprocess '{name}' would not fire on time: Gridloop "
                    "fires the timers of the process's own tasks only; put the timer on the "
                    "subprocess itself or on a task outside it",
                )


def _timer_kind(definition: TimerEventDefinition) -> str:
    if isinstance(definition, CycleTimerEventDefinition):
        return "cycle"
    if isinstance(definition, DurationTimerEventDefinition):
        return "duration"
    return "date"


def _timer_problem(
    environment: RestrictedEnvironment,
    definition: TimerEventDefinition,
    expression: str,
    data: dict,
    now: datetime,
) -> str | None:
    """What is wrong with the timer's value for this data, as SpiffWorkflow would read it."""
    kind = _timer_kind(definition)
    try:
        value = environment.evaluate(expression, dict(data))
    except Exception as exc:
        return f"the timer expression `{expression}` does not evaluate: {_error_text(exc)}"
    if not isinstance(value, str):
        return (
            f"the timer expression `{expression}` gives {value!r}, not text holding an ISO "
            f"8601 {kind}"
        )
    try:
        if kind == "cycle":
            _cycles, start, duration = TimerEventDefinition.parse_iso_recurring_interval(value)
            if duration.total_seconds() <= 0:
                return f"the timer cycle {value!r} repeats after no time at all"
            if start < now:
                return f"the timer cycle {value!r} starts in the past: it would fire at once"
        elif kind == "duration":
            parsed = TimerEventDefinition.parse_iso_duration(value)
            TimerEventDefinition.get_timedelta_from_start(dict(parsed), now)
        else:
            at = TimerEventDefinition.parse_time_or_duration(value)
            if not isinstance(at, datetime):
                return f"the timer date {value!r} is a duration: a timeDate needs a date"
            if "W" not in value.upper() and datetime.fromisoformat(value).tzinfo is None:
                return (
                    f"the timer date {value!r} has no time zone: it would be read in the "
                    "server's local time (end it with Z)"
                )
            if at < now:
                return f"the timer date {value!r} is in the past: it would fire at once"
    except Exception as exc:
        return f"the timer value {value!r} is not an ISO 8601 {kind}: {_error_text(exc)}"
    return None


def _error_text(exc: BaseException) -> str:
    inner = getattr(exc, "exception", None) or exc.__cause__
    shown = inner if isinstance(inner, Exception) else exc
    return f"{type(shown).__name__}: {str(shown).strip()}"


def check_tables(parsed: Parsed) -> None:
    """Decision tables: no category × severity missed, no rule that fails on a known value, no
    overlap under hit policy UNIQUE."""
    environment = RestrictedEnvironment(
        {"gl_deadline": _deadline_helper(lambda: parsed.now), **STEP_HELPERS}
    )
    script = _DmnScript(environment)
    for table_id, (table, tasks) in parsed.used_tables().items():
        if table_id in parsed.unsafe:
            continue
        decision, dmn_file = parsed.tables.get(table_id, (table_id, None))
        _TableCheck(parsed, table, decision, dmn_file, tasks, script).run()


class _DmnScript:
    """The part of a script engine that DMNEngine.evaluate uses, on the sandbox's environment:
    the entries are then matched exactly as a case would match them."""

    def __init__(self, environment: RestrictedEnvironment):
        self.environment = environment

    def validate(self, expression: str) -> None:
        ast.parse(expression)

    def evaluate(self, task, expression: str, external_context: dict | None = None) -> Any:
        """As RestrictedEnvironment.evaluate (the sandbox check, then the expression with the
        data over the environment's globals), with each expression compiled once: a table is
        evaluated hundreds of times."""
        check_source(
            expression,
            "eval",
            self.environment.helper_names | frozenset(external_context or ()),
        )
        scope = {**self.environment.globals, **(external_context or {}), **task.data}
        return eval(_compiled(expression), scope)  # noqa: S307 - checked by the sandbox


@lru_cache(maxsize=1024)
def _compiled(expression: str):
    return compile(expression, "<decision table>", "eval")


class _TableCheck:
    def __init__(self, parsed: Parsed, table, decision: str, path, tasks: list[str], script):
        self.parsed, self.table, self.decision, self.path = parsed, table, decision, path
        self.script = script
        self.task = SimpleNamespace(data={}, workflow=SimpleNamespace(script_engine=script))
        self.engine = _engine_of(parsed, table)
        self.unique = table.hit_policy == "UNIQUE"
        # Names each input entry depends on: its input's and its own.
        self.entry_names: dict[str, list[str]] = {}
        for rule in table.rules:
            for entry in rule.inputEntries:
                names = self._input_names(entry.input)
                for lhs in entry.lhs:
                    if lhs:
                        names |= names_read(_dmn_entry(lhs, "dmninputexpr"))
                self.entry_names[entry.id] = sorted(names)
        # The inputs' names too: a table without rules reads them all and matches nothing.
        self.names = sorted(
            {n for names in self.entry_names.values() for n in names}.union(
                *(self._input_names(i) for i in table.inputs)
            )
        )
        self.cache: dict[tuple, Any] = {}

    def _input_names(self, inp) -> set[str]:
        if inp.expression:
            return names_read(inp.expression)
        label = (inp.label or "").strip()
        return {label} if label.isidentifier() else set()

    def run(self) -> None:
        if not self.names:
            return
        facts = self.parsed.data
        input_names = set().union(*(self._input_names(i) for i in self.table.inputs))
        covers = {"category", "severity"} <= input_names
        domains = [
            facts.domains[n].values if facts.closed(n) else [ANY]
            for n in self.names
            if facts.known(n)
        ]
        if len(domains) < len(self.names):
            return  # check_reads reported the unknown names
        total = 1
        for values in domains:
            total *= len(values)
        if total > MAX_COMBINATIONS:
            self.parsed.report(
                self.decision,
                f"decision table '{self.decision}' reads {total} combinations of values, more "
                f"than the {MAX_COMBINATIONS} validation can check: split it",
                self.path,
            )
            return
        missing: list[dict] = []
        failures: dict[str, tuple[dict, BaseException]] = {}
        for values in product(*domains):
            data = dict(zip(self.names, values, strict=True))
            matched, failed = self._decide(data, stop_at_first=self.unique)
            if failed is not None:
                failures.setdefault(failed[0], (data, failed[1]))
            elif not matched and covers:
                missing.append(data)
        for rule_id, (data, exc) in failures.items():
            self.parsed.report(
                rule_id,
                f"rule '{rule_id}' of decision table '{self.decision}' fails for "
                f"{_show(data)}: {_error_text(exc)}",
                self.path,
            )
        if missing:
            self._report_missing(missing)
        if self.unique:
            self._overlaps()

    def _decide(self, data: dict, stop_at_first: bool) -> tuple[list, tuple | None]:
        """The rules that match `data` as DMNEngine.decide goes through them, and the first
        (rule id, exception) that stops it."""
        matched = []
        for rule in self.table.rules:
            result = self._rule_matches(rule, data)
            if isinstance(result, BaseException):
                return matched, (rule.id, result)
            if result:
                matched.append(rule)
                if stop_at_first:
                    break
        return matched, None

    def _rule_matches(self, rule, data: dict) -> bool | BaseException:
        for entry in rule.inputEntries:
            for index, lhs in enumerate(entry.lhs):
                if lhs is None:
                    continue
                names = self.entry_names[entry.id]
                values = tuple(data[n] for n in names)
                if any(v is ANY for v in values):
                    continue  # cannot be enumerated: taken to match
                key = (entry.id, index, repr(values))
                if key not in self.cache:
                    self.cache[key] = self._evaluate(
                        entry, lhs, dict(zip(names, values, strict=True))
                    )
                result = self.cache[key]
                if isinstance(result, BaseException) or not result:
                    return result
        return True

    def _evaluate(self, entry, lhs: str, data: dict) -> bool | BaseException:
        self.task.data = data
        input_expression = entry.input.expression or repr(data.get(entry.input.label))
        try:
            return bool(self.engine.evaluate(input_expression, lhs, self.task))
        except Exception as exc:
            return exc

    def _report_missing(self, missing: list[dict]) -> None:
        """One problem for the table: the category × severity pairs no rule matches (a whole
        row of them as "every category × low"), and an example of the other inputs."""
        facts = self.parsed.data
        categories = facts.domains["category"].values
        by_severity: dict[Any, list] = {}
        for data in missing:
            found = by_severity.setdefault(data["severity"], [])
            if not any(_same(data["category"], c) for c in found):
                found.append(data["category"])
        pairs: list[str] = []
        for severity, missed in by_severity.items():
            if len(missed) == len(categories) > 1:
                pairs.append(f"every category × {severity}")
            else:
                pairs.extend(f"{category} × {severity}" for category in missed)
        shown = ", ".join(pairs[:MAX_PAIRS]) + (
            f" and {len(pairs) - MAX_PAIRS} more" if len(pairs) > MAX_PAIRS else ""
        )
        others = {k: v for k, v in missing[0].items() if k not in ("category", "severity")}
        example = f" (e.g. with {_show(others)})" if others else ""
        self.parsed.report(
            self.decision,
            f"decision table '{self.decision}' misses category × severity {shown}{example}: "
            f"no rule matches ({len(missing)} combinations in all), so such a case would stop "
            "there; add a rule or a catch-all row",
            self.path,
        )

    def _overlaps(self) -> None:
        """Under UNIQUE, rules that match the same values (SpiffWorkflow takes the first): one
        problem per later rule, naming each earlier rule it meets and where."""
        facts = self.parsed.data
        domains = []
        for name in self.names:
            found = facts.domains[name]
            values = list(found.values)
            for value in self._column_literals(name):
                if not any(_same(value, v) for v in values):
                    values.append(value)
            domains.append(values or [found.sample])
        total = 1
        for values in domains:
            total *= len(values)
        if total > MAX_COMBINATIONS:
            return
        meets: dict[str, dict[str, dict]] = {}  # later rule -> earlier rule -> example
        for values in product(*domains):
            data = dict(zip(self.names, values, strict=True))
            matched = [r.id for r in self.table.rules if self._rule_matches(r, data) is True]
            for i, later in enumerate(matched):
                for earlier in matched[:i]:
                    meets.setdefault(later, {}).setdefault(earlier, data)
        for later, earlier in meets.items():
            where = "; ".join(f"'{rule}' ({_show(data)})" for rule, data in earlier.items())
            self.parsed.report(
                later,
                f"rule '{later}' of decision table '{self.decision}' overlaps rule {where}: "
                "under hit policy UNIQUE only one rule may match, and SpiffWorkflow would "
                "silently take the first",
                self.path,
            )

    def _column_literals(self, name: str) -> list:
        """The literals of the entries of each column whose input is just `name`, and the
        numbers next to numeric ones: where two rules are most likely to meet."""
        found: list = []
        for rule in self.table.rules:
            for entry in rule.inputEntries:
                if (entry.input.expression or "").strip() != name:
                    continue
                for lhs in entry.lhs:
                    for value in _literals(lhs or ""):
                        candidates = [value]
                        if isinstance(value, int | float) and not isinstance(value, bool):
                            candidates += [value - 1, value + 1]
                        for candidate in candidates:
                            if not any(_same(candidate, v) for v in found):
                                found.append(candidate)
        return found


def _literals(text: str) -> list:
    try:
        tree = ast.parse(_dmn_entry(text, "dmninputexpr"), mode="eval")
    except SyntaxError:
        return []
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str | int | float | bool)
    ]


def _engine_of(parsed: Parsed, table):
    for _name, ts in parsed.specs():
        if isinstance(ts, BusinessRuleTaskMixin) and ts.dmnEngine.decision_table is table:
            return ts.dmnEngine
    raise LookupError(table.id)


def _show(data: dict) -> str:
    order = sorted(data, key=lambda k: (k not in ("category", "severity"), k))
    return ", ".join(f"{k}={'(any)' if data[k] is ANY else repr(data[k])}" for k in order)


def check_loops(parsed: Parsed) -> None:
    """A cycle of automatic tasks never waits: refuse it before a case (or the dry run) runs it
    for ever inside one step."""
    # The flow without the tasks that wait (user tasks, catching events): any cycle left is one
    # a case goes round without stopping.
    specs = {
        name: ts
        for name, ts in parsed.process.task_specs.items()
        if not ts.manual and not isinstance(ts, CatchingEvent)
    }
    for component in _cycles(specs):
        named = [specs[n].bpmn_id for n in component if getattr(specs[n], "bpmn_id", None)]
        shown = " → ".join(named[:8]) + (" …" if len(named) > 8 else "")
        parsed.report(
            named[0] if named else None,
            f"the flow loops through {shown} without a user task or an event to wait for: a "
            "case would go round it for ever in one step",
        )


def _cycles(specs: dict) -> list[list[str]]:
    """The strongly connected components of the flow among `specs` that hold a cycle (Tarjan,
    iterative; edges to tasks outside `specs` are left out), each in the order the flow goes
    through them from its first member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in specs:
        if root in index:
            continue
        work = [(root, iter([o.name for o in specs[root].outputs]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in specs:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter([o.name for o in specs[child].outputs])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                looped = len(component) > 1 or any(o.name == node for o in specs[node].outputs)
                if looped:
                    found.append(_in_flow_order(component, specs))
    return found


def _in_flow_order(component: list[str], specs: dict) -> list[str]:
    members, start = set(component), min(component, key=lambda n: list(specs).index(n))
    ordered, node = [start], start
    while True:
        following = [o.name for o in specs[node].outputs if o.name in members]
        node = next((n for n in following if n not in ordered), None)
        if node is None:
            break
        ordered.append(node)
    return ordered + [n for n in component if n not in ordered]


# --------------------------------------------------------------------------- the dry run


def dry_run(goal: str) -> Check:
    """A check that runs a case from opening to an end whose status is `goal`."""

    def check_dry_run(parsed: Parsed) -> None:
        spec = make_spec(
            parsed.bundle,
            parsed.process,
            parsed.subprocesses,
            parsed.files.forms,
            parsed.tasks,
        )
        failure = _DryRun(spec, parsed.now).run(goal, parsed.opening)
        if failure is not None:
            element, message = failure
            parsed.report(element, f"a dry-run case cannot reach its end: {message}")

    return check_dry_run


class _OutOfTime(BaseException):
    """Raised inside the dry run when its time is up; a BaseException, so that nothing in
    SpiffWorkflow catches it on the way out."""


@contextmanager
def _time_bounded(seconds: float) -> Iterator[None]:
    """Bound the time of what runs inside, however it loops: a trace function on every Python
    call checks the clock and, past the deadline, raises _OutOfTime in the frame called."""
    deadline = time.monotonic() + seconds
    previous = sys.gettrace()
    calls = 0

    def trace(_frame, event, _arg):
        nonlocal calls
        calls += 1
        if calls % 256 == 0 and time.monotonic() > deadline:
            raise _OutOfTime
        return None  # no line events: only calls are counted

    sys.settrace(trace)
    try:
        yield
    finally:
        sys.settrace(previous)


class _DryRun:
    def __init__(self, spec: Spec, now: datetime):
        self.spec, self.at = spec, now
        self.calendar = WorkCalendar()
        self.visits: Counter[str] = Counter()
        self.last: str | None = None

    def deadline(self, hours: float, clock: str) -> str:
        return _deadline_helper(lambda: self.at, self.calendar)(hours, clock)

    def run(self, goal: str, opening: dict) -> tuple[str | None, str] | None:
        """None when the case ends `goal`; else (the last element reached, what happened)."""
        try:
            with _time_bounded(DRY_RUN_SECONDS):
                return self._run(goal, opening)
        except _OutOfTime:
            return self.last, (
                f"it was still running after {DRY_RUN_SECONDS:g} seconds, last at '{self.last}'"
            )
        except Exception as exc:
            element = _element_of(exc) or self.last
            return element, f"it stops at '{element}' with {_error_text(exc)}"

    def _run(self, goal: str, opening: dict) -> tuple[str | None, str] | None:
        outcome = run_step(None, self.spec, Open(dict(opening)), self.at, self.deadline)
        for _ in range(DRY_RUN_STEPS):
            self._note(outcome)
            if outcome.facts.closed:
                if outcome.facts.status == goal:
                    return None
                return self.last, (f"it ends {outcome.facts.status} at '{self.last}', never {goal}")
            ready = ready_user_tasks(outcome.workflow)
            if ready:
                task_id, task = next(iter(ready.items()))
                info = self.spec.tasks[task.task_spec.name]
                self.last = task.task_spec.bpmn_id
                data = sample_form_data(self.spec.forms[info.form], self.visits[info.spec])
                self.visits[info.spec] += 1
                errors = list(self.spec.validators[info.form].iter_errors(data))
                if errors:
                    return self.last, (
                        f"no sample data fits the form '{info.form}' of '{self.last}': "
                        f"{errors[0].message}"
                    )
                command = Complete(task_id, info.task, data)
                outcome = run_step(outcome.workflow, self.spec, command, self.at, self.deadline)
                continue
            due = _next_timer(outcome)
            if due is None:
                return self.last, (
                    f"after '{self.last}' nothing is left to do: no task is open and no timer "
                    "is pending"
                )
            self.at = max(self.at, due)
            outcome = run_step(outcome.workflow, self.spec, Fire(), self.at, self.deadline)
        return self.last, f"it was still running after {DRY_RUN_STEPS} steps, last at '{self.last}'"

    def _note(self, outcome: Outcome) -> None:
        for task in outcome.ran:
            element = getattr(task.task_spec, "bpmn_id", None)
            if element:
                self.last = element


def _next_timer(outcome: Outcome) -> datetime | None:
    instants = []
    for event in outcome.workflow.waiting_events():
        value = event.value
        if isinstance(value, str):
            try:
                instants.append(parse_iso(value))
            except ValueError:
                continue
    return min(instants, default=None)


def _element_of(exc: BaseException) -> str | None:
    task = getattr(exc, "task", None)
    spec = getattr(task, "task_spec", None) or getattr(exc, "task_spec", None)
    return getattr(spec, "bpmn_id", None) or getattr(spec, "name", None)


def _deadline_helper(now: Callable[[], datetime], calendar: WorkCalendar | None = None):
    """gl_deadline as a step gives it (engine/runtime.py StepContext.deadline), counting from
    `now()`: every hour for a "clock" limit, working hours otherwise."""
    working = calendar or WorkCalendar()

    def gl_deadline(hours: float, clock: str) -> str:
        urgent = clock == "clock"
        return iso((WorkCalendar() if urgent else working).add_hours(now(), hours, urgent))

    return gl_deadline


# --------------------------------------------------------------------------- sample form data


def sample_form_data(schema: dict, visit: int = 0) -> dict:
    """Data a handler could submit on the form: the required fields and every choice (enum,
    boolean, default). The first `visit` takes each choice's default (else its first value, or
    true); each later visit the next value, so that a task the case comes back to is answered
    differently (a loop that an "unsatisfied" keeps going is left by a "satisfied" the next time).
    Then whatever the schema's conditions still require ("x" for text)."""
    props = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    data: dict = {}
    for name, prop in props.items():
        if isinstance(prop, dict) and (
            name in required
            or any(key in prop for key in ("enum", "const", "default"))
            or _type_of(prop) == "boolean"
        ):
            data[name] = _sample_value(prop, visit)
    try:
        validator = jsonschema.Draft202012Validator(schema)
    except Exception:
        return data
    for _ in range(5):
        errors = list(validator.iter_errors(data))
        if not errors:
            break
        changed = False
        for error in _leaf_errors(errors):
            changed |= _repair(data, error, props, visit)
        if not changed:
            break
    return data


def _leaf_errors(errors) -> list:
    """The errors to repair: those of the first branch of an anyOf/oneOf, else the errors."""
    found = []
    for error in errors:
        if error.context:
            first = min(e.schema_path[0] for e in error.context)
            found.extend(_leaf_errors([e for e in error.context if e.schema_path[0] == first]))
        else:
            found.append(error)
    return found


def _repair(data: dict, error, props: dict, visit: int) -> bool:
    """Fill a field the error asks for, or replace one it refuses; whether anything changed."""
    path = list(error.absolute_path)
    if error.validator == "required" and not path:
        changed = False
        for name in error.validator_value:
            if name not in data:
                sub = (error.schema.get("properties") or {}).get(name) or {}
                data[name] = _sample_value({**(props.get(name) or {}), **sub}, visit)
                changed = True
        return changed
    if path and isinstance(path[0], str):
        name = path[0]
        sub = error.schema if len(path) == 1 and isinstance(error.schema, dict) else {}
        value = _sample_value({**(props.get(name) or {}), **sub}, visit)
        if data.get(name) != value:
            data[name] = value
            return True
    return False


def _type_of(prop: dict) -> str | None:
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind


_STRING_CANDIDATES = ("x", "a", "0", "1", "xx", "0" * 64, "a" * 64)


def _sample_value(prop: dict, visit: int) -> Any:
    if "const" in prop:
        return prop["const"]
    kind = _type_of(prop)
    choices = prop.get("enum") if isinstance(prop.get("enum"), list) else None
    if not choices and kind == "boolean":
        choices = [True, False]
    if choices:
        start = next((i for i, c in enumerate(choices) if _same(c, prop.get("default"))), 0)
        return choices[(start + visit) % len(choices)]
    if "default" in prop:
        return prop["default"]
    for key in ("anyOf", "oneOf"):
        if isinstance(prop.get(key), list) and prop[key] and isinstance(prop[key][0], dict):
            return _sample_value(prop[key][0], visit)
    if kind == "string":
        return _sample_string(prop)
    if kind in ("integer", "number"):
        if "minimum" in prop:
            low = prop["minimum"]
        elif "exclusiveMinimum" in prop:
            low = prop["exclusiveMinimum"] + 1
        else:
            low = 1
        return int(low) if kind == "integer" else low
    if kind == "array":
        items = prop.get("items") if isinstance(prop.get("items"), dict) else {}
        return [_sample_value(items, i) for i in range(int(prop.get("minItems", 0)))]
    if kind == "object":
        return sample_form_data(prop, visit)
    return "x"


def _sample_string(prop: dict) -> str:
    low, high = int(prop.get("minLength", 1)), prop.get("maxLength")
    pattern = prop.get("pattern")
    for candidate in _STRING_CANDIDATES:
        text = candidate * max(1, -(-low // len(candidate)))
        if high is not None:
            text = text[: int(high)]
        if len(text) < low:
            continue
        if pattern is None:
            return text
        try:
            if re.search(pattern, text):
                return text
        except re.error:
            return text
    return "x" * max(1, low)


# --------------------------------------------------------------------------- the campaign's own


CAMPAIGN_SPAN = timedelta(days=7)  # the sample campaign's span, launch to due
CAMPAIGN_TIMERS = ("warn", "due")  # the `timer` kinds campaign_return must carry


def campaign_opening(now: datetime) -> dict:
    """A sample campaign grid's opening: launched now, due a week later (DESIGN §12)."""
    return {"launched_at": iso(now), "due_at": iso(now + CAMPAIGN_SPAN)}


def check_campaign_timers(parsed: Parsed) -> None:
    """Each campaign_return and campaign_confirm carries a date timer of each kind in
    CAMPAIGN_TIMERS: its 80% supervision and its due time, from which the campaign reads which
    grids are supervised and late (the user task's id). A grid is returned only once its leader
    confirms, so a confirmation left waiting past the due time is a late grid too, and without
    these timers its item would have no due time and nobody would hear of it."""
    kinds: dict[str, set[str]] = {}  # user task spec name -> `timer` kinds of its date timers
    for ts in parsed.process.task_specs.values():
        if not isinstance(ts, BoundaryEventSplit):
            continue
        main = [o for o in ts.outputs if o.manual]
        for event in ts.outputs:
            definition = getattr(event, "event_definition", None)
            if isinstance(definition, TimerEventDefinition) and _timer_kind(definition) == "date":
                timer = event.extensions.get("properties", {}).get("timer", "")
                for task in main:
                    kinds.setdefault(task.name, set()).add(timer)
    for name, ts in parsed.process.task_specs.items():
        if not isinstance(ts, UserTask):
            continue
        logical = ts.extensions.get("properties", {}).get("task")
        if logical not in CAMPAIGN_TASKS:
            continue
        missing = [k for k in CAMPAIGN_TIMERS if k not in kinds.get(name, set())]
        if missing:
            parsed.report(
                ts.bpmn_id or name,
                f"a {logical} task needs boundary timers (timeDate) with property 'timer' "
                + " and ".join(f"'{k}'" for k in missing)
                + ": its 80% supervision and its due time, e.g. "
                "gl_between(launched_at, due_at, 0.8) and gl_between(launched_at, due_at, 1)",
            )


# --------------------------------------------------------------------------- the processes

# What every process goes through; a process adds its own.
EVERY_PROCESS = [
    check_tasks,
    check_lanes,
    check_reads,
    check_timers,
    check_subprocess_timers,
    check_tables,
    check_loops,
]
register(PROCESS_ID, EVERY_PROCESS, final=[dry_run("archived")])
register(
    CAMPAIGN_PROCESS_ID,
    [*EVERY_PROCESS, check_campaign_timers],
    final=[dry_run("confirmed")],
    opening=campaign_opening,
)
