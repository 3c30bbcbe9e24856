"""The step function on its own: a workflow, a command and an instant in, what happened out.

No database anywhere in this file: the step is plain SpiffWorkflow plus the diagram's words, so
replay, migration dry runs and fan-outs can call it on workflows of their own.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import ACCEPT_NORMAL, START
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser

from engine import step as step_module
from engine.clock import iso
from engine.errors import Conflict
from engine.migration import PASSED
from engine.serializer import make_serializer
from engine.specs import Spec, SpecRegistry, TaskInfo
from engine.step import Complete, Fire, Open, ready_user_tasks, run_step
from engine.workcal import WorkCalendar

OPENED = {"title": "路灯坏了", "description": "", "grid": "V01-D1-G01", "category": None}


def deadline_at(now):
    """gl_deadline as the service gives it, on a calendar with no database behind it."""
    calendar = WorkCalendar()

    def deadline(hours: float, clock: str) -> str:
        return iso(calendar.add_hours(now, hours, clock == "clock"))

    return deadline


def step(spec, workflow, command, now):
    return run_step(workflow, spec, command, now, deadline_at(now))


def the_one(ids):
    assert len(ids) == 1, ids
    return ids[0]


def open_and_accept(spec, now=START):
    opened = step(spec, None, Open(dict(OPENED)), now)
    accept = the_one(opened.ready)
    accepted = step(
        spec, opened.workflow, Complete(accept.task_id, "accept", dict(ACCEPT_NORMAL)), now
    )
    return opened, accepted


def test_opening_makes_the_accept_item_and_records_opened(spec):
    outcome = step(spec, None, Open(dict(OPENED)), START)
    assert [e[0] for e in outcome.events] == ["opened"]
    assert outcome.events[0][2]["title"] == "路灯坏了"
    accept = the_one(outcome.ready)
    assert (accept.info.task, accept.info.lane) == ("accept", "info_officer")
    assert outcome.facts.status == "accepting"  # the accept task's `status` property
    assert outcome.closed == [] and not outcome.facts.closed
    assert list(ready_user_tasks(outcome.workflow)) == [accept.task_id]


def test_completing_accept_closes_it_and_starts_handling_with_a_deadline(spec):
    opened, accepted = open_and_accept(spec)
    accept = opened.ready[0]
    assert accepted.closed == [accept.task_id]
    handle = the_one(accepted.ready)
    assert (handle.info.task, handle.info.lane) == ("handle", "grid_leader")
    assert handle.due_at is not None and handle.due_at > START
    assert accepted.facts.status == "handling"
    assert (accepted.facts.category, accepted.facts.severity) == ("resident_request", "normal")
    # The event that started handling names the tier and the deadline (DESIGN §2).
    kind, task, data = accepted.events[-1]
    assert (kind, task) == ("task_completed", "accept")
    assert data["tier"] == "grid_leader" and data["due_at"] == iso(handle.due_at)
    # Its timers are the diagram's warn and due timers of handle_grid, with their instants.
    kinds = sorted(kind for _due, kind, _name in accepted.timers)
    assert kinds == ["due", "warn"]
    assert max(due for due, _k, _n in accepted.timers) == handle.due_at


def test_firing_at_the_deadline_supervises_and_escalates_one_tier_up(spec):
    _opened, accepted = open_and_accept(spec)
    handle = accepted.ready[0]
    fired = step(spec, accepted.workflow, Fire(), handle.due_at)
    assert [e[0] for e in fired.events] == ["supervised", "escalated"]
    supervised, escalated = fired.events[0][2], fired.events[1][2]
    assert supervised["due_at"] == iso(handle.due_at)  # fixed when the item became ready
    assert escalated["from"] == "grid_leader"
    assert fired.escalated and fired.closed == [handle.task_id]
    district = the_one(fired.ready)
    assert district.info.lane == "district_leader"
    assert fired.facts.tier == "district_leader"
    # Whom a supervision tells needs the organisation: the step hands over the diagram's rule.
    supervision = the_one(fired.supervisions)
    assert supervision.task_id == handle.task_id
    assert set(supervision.notify.split(",")) >= {"holder"}


def test_a_timer_not_yet_due_moves_nothing(spec):
    _opened, accepted = open_and_accept(spec)
    early = step(spec, accepted.workflow, Fire(), START + timedelta(minutes=1))
    assert early.events == [] and early.ready == [] and early.closed == []


def test_completing_a_task_that_is_not_ready_is_a_conflict(spec):
    opened, accepted = open_and_accept(spec)
    with pytest.raises(Conflict):
        step(
            spec,
            accepted.workflow,
            Complete(opened.ready[0].task_id, "accept", dict(ACCEPT_NORMAL)),
            START,
        )


def test_the_same_commands_give_the_same_outcome(spec):
    """What replay relies on: a step is decided by its workflow, command and instant alone."""

    def run():
        _opened, accepted = open_and_accept(spec)
        due = accepted.ready[0].due_at
        fired = step(spec, accepted.workflow, Fire(), due)
        return [accepted.events, fired.events, fired.facts, sorted(fired.timers)]

    assert run() == run()


def at_town(spec):
    """A case escalated grid → district → village → town by its deadlines, one step each."""
    _opened, outcome = open_and_accept(spec)
    while outcome.ready[0].info.lane != "town_leadership":
        outcome = step(spec, outcome.workflow, Fire(), outcome.ready[0].due_at)
    return outcome


def supervised_daily(spec, days):
    """The town item left overdue: its daily supervision fires once a day for `days` days."""
    outcome = at_town(spec)
    due = outcome.ready[0].due_at
    history = []
    for day in range(days):
        outcome = step(spec, outcome.workflow, Fire(), due + timedelta(days=day, minutes=1))
        history.append((outcome.events, outcome.facts, sorted(outcome.timers or [])))
    return outcome, history


def test_a_case_supervised_daily_keeps_a_state_of_the_same_size(spec, monkeypatch):
    registry = SpecRegistry()
    registry.add(spec)
    serializer = make_serializer(registry)

    def size(days):
        return len(serializer.serialize_json(supervised_daily(spec, days)[0].workflow))

    short, long = size(5), size(60)
    assert long <= short * 1.05, (short, long)

    # Without dropping the fired repeats, the state grows with every day...
    monkeypatch.setattr(step_module, "_prune_fired_cycles", lambda workflow, waiting: None)
    assert size(60) > short * 2
    # ...and the steps say exactly the same: the dropped branches were never read again.
    unpruned = supervised_daily(spec, 30)
    monkeypatch.undo()
    pruned = supervised_daily(spec, 30)
    assert [h[0] for h in pruned[1]] == [h[0] for h in unpruned[1]]
    assert pruned[1] == unpruned[1]
    assert all(events[0][0] == "supervised" for events, _f, _t in pruned[1])

    # Both go on to the end of the loop, step for step alike.
    def to_the_end(outcome, now):
        steps = []
        while ready := ready_user_tasks(outcome.workflow):
            task_id, task = next(iter(ready.items()))
            name = spec.tasks[task.task_spec.name].task
            now += timedelta(hours=1)
            outcome = step(spec, outcome.workflow, Complete(task_id, name, FINISH[name]), now)
            steps.append((outcome.events, outcome.facts, outcome.closed != []))
        return outcome, steps

    end = START + timedelta(days=60)
    monkeypatch.setattr(step_module, "_prune_fired_cycles", lambda workflow, waiting: None)
    unpruned_end = to_the_end(supervised_daily(spec, 30)[0], end)
    monkeypatch.undo()
    pruned_end = to_the_end(supervised_daily(spec, 30)[0], end)
    assert pruned_end[1] == unpruned_end[1]
    # The process's end merges every finished branch's data: the newest one kept says the same.
    assert pruned_end[0].workflow.data == unpruned_end[0].workflow.data
    assert pruned_end[0].workflow.data.get("overdue") is True
    assert pruned_end[0].facts.status == "archived" and pruned_end[0].facts.closed
    assert serializer.deserialize_json(serializer.serialize_json(pruned_end[0].workflow))


def test_the_elements_of_dropped_repeats_stay_known_to_a_migration(spec):
    """A repeat's branch may go another way at a gateway than the newest one kept: the names of
    what the dropped repeats passed are recorded, so a migration to a version without one of
    them is refused (engine/migration.py reads the list beside the tree)."""
    once, _ = supervised_daily(spec, 1)
    assert "overdue_town" not in once.workflow.task_tree.internal_data.get(PASSED, [])
    daily, _ = supervised_daily(spec, 4)
    names = {t.task_spec.name for t in daily.workflow.tasks.values()}
    passed = daily.workflow.task_tree.internal_data[PASSED]
    assert {"overdue_town", "end_due_town"} <= set(passed)
    assert passed == sorted(passed)
    assert "overdue_town" in names  # the newest repeat's branch is kept


FINISH = {
    "handle": {"outcome": "resolved", "note": "办结"},
    "feedback": {"satisfaction": "satisfied"},
    "report": {"summary": "done"},
    "review": {"approved": True},
}


def _boundary(id_: str, on: str, when: str) -> str:
    return f"""<bpmn:boundaryEvent id="{id_}" attachedToRef="{on}" cancelActivity="false">
      <bpmn:extensionElements><spiffworkflow:properties>
        <spiffworkflow:property name="event" value="{id_}_fired"/>
      </spiffworkflow:properties></bpmn:extensionElements>
      <bpmn:outgoing>{id_}_f</bpmn:outgoing>
      <bpmn:timerEventDefinition><bpmn:timeDate>"{when}"</bpmn:timeDate></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
    <bpmn:sequenceFlow id="{id_}_f" sourceRef="{id_}" targetRef="{id_}_end"/>
    <bpmn:endEvent id="{id_}_end"/>"""


# Three branches: a subprocess whose user task has two timers (b due at 05:00 and listed first, a
# at 03:00), a user task with a timer c at 06:00, and a user task to complete at 03:30.
SUBPROCESS_TIMERS = f"""<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" id="d"
    targetNamespace="http://gridloop.test/subprocess-timers">
  <bpmn:process id="case_loop" isExecutable="true">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="fork"/>
    <bpmn:parallelGateway id="fork"/>
    <bpmn:sequenceFlow id="f1" sourceRef="fork" targetRef="inner"/>
    <bpmn:sequenceFlow id="f2" sourceRef="fork" targetRef="watched"/>
    <bpmn:sequenceFlow id="f3" sourceRef="fork" targetRef="other"/>
    <bpmn:subProcess id="inner">
      <bpmn:startEvent id="inner_start"/>
      <bpmn:sequenceFlow id="g1" sourceRef="inner_start" targetRef="inside"/>
      <bpmn:userTask id="inside"/>
      {_boundary("b", "inside", "2026-11-23T05:00:00Z")}
      {_boundary("a", "inside", "2026-11-23T03:00:00Z")}
      <bpmn:sequenceFlow id="g2" sourceRef="inside" targetRef="inner_end"/>
      <bpmn:endEvent id="inner_end"/>
    </bpmn:subProcess>
    <bpmn:sequenceFlow id="f4" sourceRef="inner" targetRef="end1"/>
    <bpmn:endEvent id="end1"/>
    <bpmn:userTask id="watched"/>
    {_boundary("c", "watched", "2026-11-23T06:00:00Z")}
    <bpmn:sequenceFlow id="f5" sourceRef="watched" targetRef="end2"/>
    <bpmn:endEvent id="end2"/>
    <bpmn:userTask id="other"/>
    <bpmn:sequenceFlow id="f6" sourceRef="other" targetRef="end3"/>
    <bpmn:endEvent id="end3"/>
  </bpmn:process>
</bpmn:definitions>
"""


def subprocess_timers_spec() -> Spec:
    """SUBPROCESS_TIMERS as a spec whose three user tasks are handled at the grid."""
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(SUBPROCESS_TIMERS.encode())
    tasks = {
        name: TaskInfo(name, name, name, "grid_leader", "", {"status": "handling"})
        for name in ("inside", "watched", "other")
    }
    return Spec(
        "t" * 64, parser.get_spec("case_loop"), parser.get_subprocess_specs("case_loop"), {}, tasks
    )


def test_a_firing_records_a_subprocess_timer_left_ready_before_the_ones_due_now():
    """A timer fired inside a subprocess by an earlier step can still be READY (the step's loop
    reads the top level); the next firing runs it before the timers due by then, as every earlier
    release did, so replay recomputes the events a stored case holds in their order."""
    spec = subprocess_timers_spec()
    opened = datetime(2026, 11, 23, 2, tzinfo=UTC)
    outcome = step(spec, None, Open({}), opened)
    (other,) = [
        k for k, t in ready_user_tasks(outcome.workflow).items() if t.task_spec.name == "other"
    ]
    outcome = step(
        spec, outcome.workflow, Complete(other, "other", {}), opened + timedelta(hours=1.5)
    )
    outcome = step(spec, outcome.workflow, Fire(), opened + timedelta(hours=4))
    assert [kind for kind, _task, _data in outcome.events] == ["a_fired", "b_fired", "c_fired"]
