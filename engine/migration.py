"""Migration of running cases to another diagram version (DESIGN §8, POST /migrations).

Cases stay on the version they started on unless an administrator moves them. Moving one is a step
like any other (engine/step.py's `Migrate` command, written by engine/runtime.py's
`migrate_case`): the workflow is re-pointed at the target version's spec, a `migrated` event
{from, to} is chained, and the case row's diagram changes in the same version-checked transaction.
Replay (engine/replay.py) runs the same `Migrate` step at that event, so a migrated case replays.

SpiffWorkflow's `diff_workflow` says which of the case's tasks the target removes or changes. Its
`migrate_workflow` leaves a broken instance when a task the case is at (a READY user task, a
WAITING timer or signal) was removed or changed, and a blob that no longer loads when an element
the case has already passed is gone: such cases are refused, before anything moves, with a
reason naming the element. For the others the move keeps everything the case is at exactly as it
was (see `move_workflow`: `migrate_workflow` itself would restart their clocks), so work items,
timers and deadlines still match the workflow afterwards, with the same task ids.

This module also picks the cases a run covers and runs them one by one, each in its own
transaction; jobs/migrate.py runs a real run as a background job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.util.diff import SpecDiff, WorkflowDiff
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from . import admin_log
from .errors import Conflict, GridloopError
from .models import Case, DiagramVersion
from .specs import OPEN_STATUSES, Spec

if TYPE_CHECKING:
    from SpiffWorkflow.bpmn import BpmnWorkflow

    from .runtime import Runtime

log = logging.getLogger(__name__)

MIGRATED = "migrated"  # the event a move appends: {from, to}
# SpecDiff compares task specs through a serializer registry's converters; the specs' converters
# hold no state, so one registry serves every process and thread.
_SPEC_CONVERTERS = BpmnWorkflowSerializer.configure(SPIFF_CONFIG)
_AT = TaskState.READY | TaskState.WAITING  # what a case is at: its open tasks, timers, signals
MAX_CASES = 10000  # case numbers one request may name
# The elements whose finished tasks a step dropped from a case's tree (engine/step.py
# _shed_passed_loops), kept on the root task's internal data: the case has passed them.
PASSED = "passed_elements"


class Unmovable(Conflict):
    """A case that cannot move to the target version. `code` says why in a word a page can
    translate, `element` names the diagram element at fault (or None), and the message says it in
    a sentence."""

    code = "unmovable"

    def __init__(self, reason: str, message: str, element: str | None = None):
        super().__init__(message)
        self.reason, self.element = reason, element


# --------------------------------------------------------------------------- the workflow


def _label(spec: Spec, task) -> str:
    """An element (a task, or a task spec) as a reason names it: its id, and its name in the
    diagram if it has one."""
    task_spec = getattr(task, "task_spec", task)
    element = task_spec.name
    info = spec.tasks.get(element)
    name = info.name if info is not None else getattr(task_spec, "bpmn_name", None)
    return f"'{element}' ({name})" if name and name != element else f"'{element}'"


def check_workflow(workflow: BpmnWorkflow, source: Spec, target: Spec):
    """The SpiffWorkflow diff of `workflow` (running on `source`) against `target`, or Unmovable
    when moving it would break it: a task it is at removed or changed, an element it passed
    removed, or a subprocess (this engine's diagrams call none)."""
    if workflow.subprocesses:
        raise Unmovable("subprocess", "the case runs a subprocess; such cases cannot be moved")
    spec_diff = SpecDiff(_SPEC_CONVERTERS, workflow.spec, target.process)
    diff = WorkflowDiff(workflow, spec_diff)  # what diff_workflow does, with no subprocess
    removed, changed = set(diff.removed), set(diff.changed)
    # The user task first: it is what people see the case waiting at.
    at = sorted(
        (t for t in workflow.tasks.values() if t.state & _AT),
        key=lambda t: (not t.task_spec.manual, t.task_spec.name),
    )
    for task in at:
        if task in removed:
            raise Unmovable(
                "task_removed",
                f"the case is at {_label(source, task)}, which the target version does not have",
                task.task_spec.name,
            )
        if task in changed:
            raise Unmovable(
                "task_changed",
                f"the case is at {_label(source, task)}, which the target version changes",
                task.task_spec.name,
            )
    gone = {ts.name: ts for ts in spec_diff.removed}
    passed = {t.task_spec.name for t in removed if t.state & TaskState.FINISHED_MASK}
    passed.update(n for n in workflow.task_tree.internal_data.get(PASSED, ()) if n in gone)
    if passed:
        element = min(passed)
        raise Unmovable(
            "history_removed",
            f"the case has passed {_label(source, gone[element])}, which the target version "
            "does not have",
            element,
        )
    return diff


def move_workflow(workflow: BpmnWorkflow, source: Spec, target: Spec) -> None:
    """Re-point `workflow` at `target`'s spec in place, or raise Unmovable (the caller drops a
    workflow whose step failed).

    What SpiffWorkflow's `migrate_workflow` does, without its reset: every task takes the target's
    element aligned with its own, and the predictions of what follows are redone on the target.
    The reset would re-run the tasks the case is at: restart the clocks of their timers (from the
    move, not from when the task became ready), and drop the fired branches a repeating timer
    keeps (the town's daily supervision). Since `check_workflow` lets only cases through whose
    open tasks the target keeps unchanged, nothing of them needs redoing."""
    diff = check_workflow(workflow, source, target)
    workflow.spec, workflow.subprocess_specs = target.process, target.subprocesses
    for task in list(workflow.tasks.values()):
        aligned = diff.alignment.get(task)
        if aligned is not None:
            task.task_spec = aligned
    specs = target.process.task_specs
    # Predicted tasks (what may follow) of elements the target does not have go; what follows
    # each open task is then predicted again from the target's elements.
    for task in list(workflow.tasks.values()):
        if (
            task.id in workflow.tasks
            and task.has_state(TaskState.PREDICTED_MASK)
            and specs.get(task.task_spec.name) is not task.task_spec
        ):
            workflow._remove_task(task.id)
    for task in list(workflow.tasks.values()):
        if task.id in workflow.tasks and task.state & _AT:
            task.task_spec._predict(task)
    for task in workflow.tasks.values():
        if specs.get(task.task_spec.name) is not task.task_spec:
            name = task.task_spec.name
            raise Unmovable(
                "failed", f"element '{name}' of the case is not in the target version", name
            )


# --------------------------------------------------------------------------- a run


@dataclass(frozen=True)
class Result:
    """One case's answer: moved (or movable, in a dry run), or why not."""

    case: str
    ok: bool
    reason: str | None = None
    code: str | None = None  # a word for pages: closed, same_version, task_removed, ...
    element: str | None = None  # the diagram element at fault

    def as_json(self) -> dict[str, Any]:
        return {
            "case": self.case,
            "ok": self.ok,
            "reason": self.reason,
            "code": self.code,
            "element": self.element,
        }


@dataclass(frozen=True)
class Selection:
    """What a run covers: the target, the source it was narrowed to, and the cases in order
    (case id, number; id None for a number no case has)."""

    target: DiagramVersion
    source: DiagramVersion | None
    cases: list[tuple[int | None, str]]


def version_by_hash(session: Session, sha: str) -> DiagramVersion | None:
    return session.scalars(select(DiagramVersion).where(DiagramVersion.sha256 == sha)).first()


def select_cases(
    session: Session, to: str, numbers: list[str] | None = None, source: str | None = None
) -> tuple[Selection | None, dict[str, str]]:
    """The run's target and cases, or the problems with what was asked, by field. Without case
    numbers a run covers every open case of the target's process on `source` (or on any other
    version than the target), oldest first."""
    problems: dict[str, str] = {}
    target = version_by_hash(session, to)
    if target is None:
        problems["to"] = "no diagram version has this hash"
    origin = None
    if source is not None:
        origin = version_by_hash(session, source)
        if origin is None:
            problems["from"] = "no diagram version has this hash"
        elif target is not None and origin.id == target.id:
            problems["from"] = "is the target version"
        elif target is not None and origin.process_id != target.process_id:
            problems["from"] = "is a version of another process"
    if problems:
        return None, problems
    assert target is not None
    if numbers is not None:
        wanted = list(dict.fromkeys(numbers))
        rows = session.execute(select(Case.number, Case.id).where(Case.number.in_(wanted)))
        found = dict(rows.tuples().all())
        cases = [(found.get(n), n) for n in wanted]
    else:
        query = (
            select(Case.id, Case.number)
            .join(DiagramVersion, DiagramVersion.id == Case.diagram_id)
            .where(
                Case.status.in_(OPEN_STATUSES),
                DiagramVersion.process_id == target.process_id,
                Case.diagram_id != target.id,
            )
            .order_by(Case.id)
        )
        if origin is not None:
            query = query.where(Case.diagram_id == origin.id)
        cases = [(row.id, row.number) for row in session.execute(query)]
    return Selection(target, origin, cases), {}


def precheck(case, target: DiagramVersion, source: DiagramVersion | None, process: str) -> None:
    """Unmovable for a case that cannot move whatever its workflow holds. `case` is a case row
    with its version's hash (`diagram_sha`); `process` is its version's process."""
    if case.status not in OPEN_STATUSES:
        raise Unmovable("closed", f"the case is {case.status}: a closed case cannot move")
    if case.diagram_id == target.id:
        raise Unmovable("same_version", "the case is on the target version already")
    if source is not None and case.diagram_id != source.id:
        raise Unmovable("not_from", f"the case is on version {case.diagram_sha[:12]}, not on from")
    if process != target.process_id:
        raise Unmovable("other_process", "the case runs another process")


def run(
    session: Session,
    runtime: Runtime,
    actor: str,
    selection: Selection,
    dry_run: bool,
    progress: Callable[[int, int, list[Result]], None] | None = None,
) -> list[Result]:
    """Try (dry run) or make the move of every selected case, each in its own transaction: a
    case that cannot move, or that another step changed until the retries ran out, is reported
    and left as it was. A real run starts and ends with an administration-log entry, each in a
    transaction of its own (a run killed midway leaves its start; each moved case has its own
    `migrated` event). `progress(done, total, results)` is called after each case."""
    results: list[Result] = []
    total = len(selection.cases)
    target_sha = selection.target.sha256
    source_sha = selection.source.sha256 if selection.source is not None else None
    if not dry_run:  # on the record before any case moves, even if the run is killed midway
        _record_run(
            session,
            runtime,
            actor,
            {"from": source_sha, "to": target_sha, "cases": total},
            "migration_started",
        )
    try:
        for done, (case_id, number) in enumerate(selection.cases, start=1):
            results.append(
                _one(session, runtime, actor, case_id, number, target_sha, source_sha, dry_run)
            )
            if progress is not None:
                progress(done, total, results)
    finally:
        if not dry_run:  # also for a run that broke off: what it moved is on the record
            moved = sum(1 for r in results if r.ok)
            _record_run(
                session,
                runtime,
                actor,
                {
                    "from": source_sha,
                    "to": target_sha,
                    "moved": moved,
                    "refused": len(results) - moved,
                },
            )
    return results


LOG_ATTEMPTS = 5


def _record_run(
    session: Session,
    runtime: Runtime,
    actor: str,
    data: dict[str, Any],
    type_: str = "cases_migrated",
) -> None:
    """The run's administration-log entry, in a transaction of its own. The cases have moved
    already, so an entry that lost the race for its seq to another administrator's change is
    appended again after it rather than lost."""
    from .runtime import is_concurrency

    for attempt in range(1, LOG_ATTEMPTS + 1):
        session.rollback()
        try:
            admin_log.record(session, runtime.clock.now(), actor, type_, data)
            session.commit()
            return
        except SQLAlchemyError as exc:
            session.rollback()
            if attempt == LOG_ATTEMPTS or not is_concurrency(exc):
                raise


def _one(
    session: Session,
    runtime: Runtime,
    actor: str,
    case_id: int | None,
    number: str,
    target: str,
    source: str | None,
    dry_run: bool,
) -> Result:
    if case_id is None:
        return Result(number, False, "no such case", "not_found")
    try:
        runtime.migrate_case(session, actor, case_id, target, source, dry_run=dry_run)
    except Unmovable as exc:
        return Result(number, False, exc.message, exc.reason, exc.element)
    except GridloopError as exc:  # changed by other steps until the retries ran out, ...
        return Result(number, False, exc.message, exc.code)
    except SQLAlchemyError:
        raise  # the database, not the case: the run stops
    except Exception as exc:  # noqa: BLE001 - e.g. SpiffWorkflowException, a blob that won't load
        # The target version cannot run this case's state: the step rolled back, nothing moved.
        log.warning("migrating case %s to %s failed: %r", number, target[:12], exc)
        return Result(
            number, False, f"the target version cannot run this case: {exc}"[:300], "failed"
        )
    return Result(number, True)
