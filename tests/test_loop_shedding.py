"""A step drops what earlier passes of a loop left in the task tree (engine/step.py
`_shed_passed_loops`): a case reopened again and again keeps a state of one pass's size, and
every step says exactly what it says without the shedding.

No database: the workflows come from the step function (tests/test_step.py's helpers).
"""

from __future__ import annotations

import random
import re
from datetime import timedelta

import pytest
from conftest import ACCEPT_NORMAL
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.util.task import TaskState
from test_replay import GRIDS, OFFICER, _walk
from test_step import FINISH, OPENED, START, step

from engine import step as step_module
from engine.events import verify
from engine.migration import Unmovable, check_workflow
from engine.replay import replay
from engine.serializer import make_serializer
from engine.specs import Bundle, SpecRegistry, parse_bundle, sheds_loops
from engine.step import Complete, Fire, Open, Transfer, ready_user_tasks
from engine.validation import validate

BPMN = "workflows/bpmn/case_loop.bpmn"


@pytest.fixture(scope="module")
def serializer(spec):
    registry = SpecRegistry()
    registry.add(spec)
    return make_serializer(registry)


def drive(spec, serializer, seed: int, steps: int = 80):
    """A case driven at random until archived: items completed (handling sometimes referred up,
    feedback sometimes unsatisfied, which reopens the case, reviews sometimes returned), accept
    and grid handling sometimes transferred, timers fired at their instants or days late. Choices
    go by element name, never by task id, so two runs with one seed take the same path. The
    workflow goes through its stored form after every step, as when no process holds it. Returns
    what every step said, and the size of the tree after every step."""
    rng = random.Random(seed)
    now = START
    outcome = step(spec, None, Open(dict(OPENED)), now)
    said, sizes = [said_by(outcome)], [len(outcome.workflow.tasks)]
    for n in range(steps):
        ready = ready_user_tasks(outcome.workflow)
        if not ready:
            break
        workflow = serializer.deserialize_json(serializer.serialize_json(outcome.workflow))
        waiting = [t for t in workflow.tasks.values() if t.state == TaskState.WAITING]
        dues = sorted(at for at, _kind, _name in step_module._timers_of(waiting))
        task_id, task = min(ready.items(), key=lambda item: item[1].task_spec.name)
        name = spec.tasks[task.task_spec.name].task
        if dues and rng.random() < 0.3:
            late = timedelta(minutes=1) if rng.random() < 0.7 else timedelta(days=rng.randint(1, 3))
            now = max(now, dues[0]) + late
            outcome = step(spec, workflow, Fire(), now)
        elif task.task_spec.name in spec.transferable and rng.random() < 0.15:
            now += timedelta(hours=1)
            sent = {"from": "V01-D1-G01", "to": "V01-D1-G02", "note": f"n{n}"}
            outcome = step(spec, workflow, Transfer(task_id, name, sent), now)
        else:
            data = dict(ACCEPT_NORMAL) if name == "accept" else dict(FINISH[name])
            chance = rng.random()
            if name == "handle" and chance < 0.2:
                data = {"outcome": "refer_up", "note": "up"}
            elif name == "feedback" and chance < 0.5:
                data = {"satisfaction": "unsatisfied"}
            elif name == "review" and chance < 0.3:
                data = {"approved": False}
            now += timedelta(hours=rng.choice([1, 1, 1, 30]))
            outcome = step(spec, workflow, Complete(task_id, name, data), now)
        said.append(said_by(outcome))
        sizes.append(len(outcome.workflow.tasks))
    return said, sizes


def said_by(outcome) -> tuple:
    """What a step says, with SpiffWorkflow's task ids (new in every run) left out."""
    return (
        outcome.events,
        [(r.info.spec, r.due_at, r.warn_at) for r in outcome.ready],
        len(outcome.closed),
        len(outcome.still_open),
        outcome.timers,
        outcome.facts,
        [(s.event, supervised(outcome, s.task_id), s.notify) for s in outcome.supervisions],
        outcome.escalated,
        outcome.overdue_marked,
        outcome.owner_cleared,
        outcome.workflow.data,  # what the end join merged: a closed case's facts read it
    )


def supervised(outcome, task_id: str | None) -> str | None:
    if task_id is None:
        return None
    return next(t.task_spec.name for t in outcome.workflow.tasks.values() if str(t.id) == task_id)


def unshed(monkeypatch):
    monkeypatch.setattr(step_module, "_shed_passed_loops", lambda workflow, ran: None)


@pytest.mark.parametrize("seed", range(10))
def test_every_step_says_what_it_says_without_the_shedding(spec, serializer, monkeypatch, seed):
    shed, shed_sizes = drive(spec, serializer, seed)
    unshed(monkeypatch)
    kept, kept_sizes = drive(spec, serializer, seed)
    assert len(shed) == len(kept)
    for n, (ours, theirs) in enumerate(zip(shed, kept, strict=True)):
        assert ours == theirs, f"step {n}"
    assert all(a <= b for a, b in zip(shed_sizes, kept_sizes, strict=True))
    SHED[seed] = sum(kept_sizes) - sum(shed_sizes)


SHED: dict[int, int] = {}


def test_the_random_cases_above_shed_something():
    """Most of them reopen or climb the tiers, and so leave tasks to shed."""
    assert len(SHED) == 10 and sum(1 for n in SHED.values() if n > 0) >= 5, SHED


def test_a_case_reopened_again_and_again_keeps_a_state_of_one_passes_size(
    spec, serializer, monkeypatch
):
    def reopened(times: int):
        """Accepted, then `times` rounds of resolved and unsatisfied (no supervision fires: see
        the next test), waiting at handle."""
        outcome = step(spec, None, Open(dict(OPENED)), START)
        now = START
        for name in ["accept"] + ["handle", "feedback"] * times:
            (task_id,) = ready_user_tasks(outcome.workflow)
            data = dict(ACCEPT_NORMAL) if name == "accept" else dict(FINISH[name])
            if name == "feedback":
                data = {"satisfaction": "unsatisfied"}
            now += timedelta(hours=1)
            outcome = step(spec, outcome.workflow, Complete(task_id, name, data), now)
        assert outcome.facts.reopen_count == times
        return outcome.workflow

    # From the second reopening on, each climbs a tier (DESIGN §2), so the first few differ; from
    # the town on, the tree holds the same tasks however often the case comes back.
    once, six, twelve = reopened(1), reopened(6), reopened(12)
    assert len(twelve.tasks) == len(six.tasks) < 1.5 * len(once.tasks)
    assert len(serializer.serialize_json(twelve)) <= len(serializer.serialize_json(six)) * 1.05
    unshed(monkeypatch)  # without it, every reopening adds a pass
    assert len(reopened(12).tasks) > 3 * len(once.tasks)


def test_a_supervised_pass_leaves_only_its_branch_end_behind(spec, monkeypatch):
    """At town, each round: supervised (80 %) and marked overdue, resolved, unsatisfied. The
    finished supervision branch of a shed pass leaves its end behind (end event and end-join
    task: the end join merges their data), two tasks a round, against a whole pass without the
    shedding (found in review: the growth is accepted, and bounded by this)."""
    up = {"outcome": "refer_up", "note": "up"}
    to_town = [("complete", "accept", ACCEPT_NORMAL), *[("complete", "handle", up)] * 3]
    round_ = [
        ("fire", 1),
        ("fire", 1),
        ("complete", "handle", FINISH["handle"]),
        ("complete", "feedback", {"satisfaction": "unsatisfied"}),
    ]

    def size(rounds: int) -> int:
        outcome, _said = scripted(spec, to_town + round_ * rounds)
        return len(outcome.workflow.tasks)

    assert size(8) - size(4) <= 2 * 4
    unshed(monkeypatch)
    assert size(8) - size(4) >= 20 * 4


PARALLEL = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d"
    targetNamespace="http://gridloop.test/parallel">
  <bpmn:process id="case_loop" isExecutable="true">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="fork"/>
    <bpmn:parallelGateway id="fork"/>
    <bpmn:sequenceFlow id="f1" sourceRef="fork" targetRef="a"/>
    <bpmn:sequenceFlow id="f2" sourceRef="fork" targetRef="b"/>
    <bpmn:userTask id="a"/>
    <bpmn:userTask id="b"/>
    <bpmn:sequenceFlow id="f3" sourceRef="a" targetRef="join"/>
    <bpmn:sequenceFlow id="f4" sourceRef="b" targetRef="join"/>
    <bpmn:parallelGateway id="join"/>
    <bpmn:sequenceFlow id="f5" sourceRef="join" targetRef="end"/>
    <bpmn:endEvent id="end"/>
  </bpmn:process>
</bpmn:definitions>
"""


def test_only_a_process_whose_joins_read_no_earlier_pass_sheds(spec):
    assert spec.loops_shed  # the case loop: boundary events' joins and the end's only
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(PARALLEL.encode())
    assert not sheds_loops(parser.get_spec("case_loop"), {})


def scripted(spec, script, serializer=None):
    """A case driven by `script`: ("complete", task, data), ("transfer", task) or ("fire",
    minutes after the first due timer). Returns the last outcome and what every step said."""
    now = START
    outcome = step(spec, None, Open(dict(OPENED)), now)
    said = [said_by(outcome)]
    for action, *args in script:
        workflow = outcome.workflow
        if serializer is not None:
            workflow = serializer.deserialize_json(serializer.serialize_json(workflow))
        if action == "fire":
            waiting = [t for t in workflow.tasks.values() if t.state == TaskState.WAITING]
            due = min(at for at, _kind, _name in step_module._timers_of(waiting))
            now = max(now, due) + timedelta(minutes=args[0])
            outcome = step(spec, workflow, Fire(), now)
        else:
            ready = ready_user_tasks(workflow).items()
            (task_id,) = [i for i, t in ready if spec.tasks[t.task_spec.name].task == args[0]]
            now += timedelta(hours=1)
            if action == "transfer":
                command = Transfer(task_id, args[0], {"from": "a", "to": "b", "note": ""})
            else:
                command = Complete(task_id, args[0], dict(args[1]))
            outcome = step(spec, workflow, command, now)
        said.append(said_by(outcome))
    return outcome, said


def test_what_finished_branches_gave_the_process_reaches_the_closed_cases_facts(
    bundle, monkeypatch
):
    """The process's end join merges the data of every finished branch's end into the
    workflow's, which a closed case's facts read. A diagram whose supervision branch sets a word
    the main path never sets: a first accept pass supervised at its deadline, transferred (a
    second pass of accept), supervised again, and rejected. The first pass goes; what its branch
    set still reaches the facts (found in review)."""
    text = bundle.files[BPMN]
    text = text.replace(
        'sourceRef="due_accept" targetRef="end_supervised_accept"',
        'sourceRef="due_accept" targetRef="note_due_accept"',
    )
    noted = """<bpmn:scriptTask id="note_due_accept" name="记录督办层级">
      <bpmn:incoming>f_due_accept__end_supervised_accept</bpmn:incoming>
      <bpmn:outgoing>f_note_due_accept__end</bpmn:outgoing>
      <bpmn:script>tier = "grid_leader"</bpmn:script>
    </bpmn:scriptTask>
    <bpmn:sequenceFlow id="f_note_due_accept__end" sourceRef="note_due_accept"
      targetRef="end_supervised_accept" />
    """
    text = text.replace(
        '<bpmn:endEvent id="end_supervised_accept"',
        noted + '<bpmn:endEvent id="end_supervised_accept"',
    )
    text = text.replace(
        "<bpmn:incoming>f_due_accept__end_supervised_accept</bpmn:incoming>\n    </bpmn:endEvent>",
        "<bpmn:incoming>f_note_due_accept__end</bpmn:incoming>\n    </bpmn:endEvent>",
    )
    text = text.replace(
        "<bpmn:flowNodeRef>due_accept</bpmn:flowNodeRef>",
        "<bpmn:flowNodeRef>due_accept</bpmn:flowNodeRef>\n"
        "        <bpmn:flowNodeRef>note_due_accept</bpmn:flowNodeRef>",
    )
    noting = Bundle({**bundle.files, BPMN: text})
    assert validate(noting, now=START) == []
    spec = parse_bundle(noting)
    reject = {"valid": False, "category": "resident_request", "severity": "normal"}
    script = [("fire", 600), ("transfer", "accept"), ("fire", 1), ("complete", "accept", reject)]
    shed, shed_said = scripted(spec, script)
    unshed(monkeypatch)
    kept, kept_said = scripted(spec, script)
    assert shed.facts.closed and shed.facts.tier == kept.facts.tier == "grid_leader"
    assert shed_said == kept_said
    assert shed.workflow.data == kept.workflow.data
    assert len(shed.workflow.tasks) < len(kept.workflow.tasks)  # the first pass went


def without_overdue_town(bundle) -> Bundle:
    """The town's daily supervision goes straight to its end: `overdue_town` is removed."""
    text = bundle.files[BPMN]
    text = re.sub(
        r'\s*<bpmn:scriptTask id="overdue_town".*?</bpmn:scriptTask>', "", text, flags=re.S
    )
    text = text.replace("<bpmn:flowNodeRef>overdue_town</bpmn:flowNodeRef>", "")
    text = re.sub(r'\s*<bpmn:sequenceFlow id="f_overdue_town__end_due_town"[^>]*/>', "", text)
    text = re.sub(
        r'\s*<bpmndi:BPMNShape id="overdue_town_di".*?</bpmndi:BPMNShape>', "", text, flags=re.S
    )
    text = re.sub(
        r'\s*<bpmndi:BPMNEdge id="f_overdue_town__end_due_town_di".*?</bpmndi:BPMNEdge>',
        "",
        text,
        flags=re.S,
    )
    text = text.replace(
        "<bpmn:incoming>f_overdue_town__end_due_town</bpmn:incoming>",
        "<bpmn:incoming>f_due_town__overdue_town</bpmn:incoming>",
    )
    text = text.replace(
        'sourceRef="due_town" targetRef="overdue_town"',
        'sourceRef="due_town" targetRef="end_due_town"',
    )
    assert 'id="overdue_town"' not in text
    return Bundle({**bundle.files, BPMN: text})


def test_a_case_that_passed_an_element_in_a_shed_pass_cannot_move_to_a_version_without_it(
    spec, bundle, monkeypatch
):
    """Referred up to town, supervised there as overdue (`overdue_town`), reopened once and
    handled again: the first town pass, and the overdue branch off it, are shed. A version
    without `overdue_town` would rewrite history the case has passed, with or without the
    shedding (found in review)."""
    target = parse_bundle(without_overdue_town(bundle))
    up = {"outcome": "refer_up", "note": "up"}
    script = [
        ("complete", "accept", ACCEPT_NORMAL),
        *[("complete", "handle", up)] * 3,
        ("fire", 1),
        ("fire", 1),
        ("complete", "handle", FINISH["handle"]),
        ("complete", "feedback", {"satisfaction": "unsatisfied"}),
        ("complete", "handle", FINISH["handle"]),
    ]
    refusals = []
    for shedding in (True, False):
        if not shedding:
            unshed(monkeypatch)
        outcome, _said = scripted(spec, script)
        names = {t.task_spec.name for t in outcome.workflow.tasks.values()}
        assert ("overdue_town" in names) is not shedding  # the shed pass held the only one
        with pytest.raises(Unmovable) as refused:
            check_workflow(outcome.workflow, spec, target)
        refusals.append((refused.value.reason, refused.value.element, str(refused.value)))
    assert refusals[0] == refusals[1]
    assert refusals[0][:2] == ("history_removed", "overdue_town")


@pytest.mark.parametrize("first, then", [(False, True), (True, False)], ids=["upgrade", "rollback"])
def test_cases_stepped_by_a_build_without_shedding_and_one_with_it_replay(
    gl, monkeypatch, first, then
):
    """An upgrade meets cases half way: their first steps were taken without shedding, the rest
    with it, and the auditors' replay (with it) must find every one as stored; and the same the
    other way round, for a rollback to the build before."""
    real = step_module._shed_passed_loops

    def build(shedding: bool) -> None:
        monkeypatch.setattr(
            step_module, "_shed_passed_loops", real if shedding else lambda workflow, ran: None
        )

    rng = random.Random(5)
    build(first)
    cases = []
    for n in range(24):
        grid = GRIDS[n % len(GRIDS)]
        case = gl.open(OFFICER[grid], grid, title=f"案件{n}")
        _walk(gl, rng, case, steps=rng.randint(4, 16))
        cases.append(case)
    gl.runtime._hot.clear()  # the new build's processes read every case from its blob
    build(then)
    for case in cases:
        _walk(gl, rng, case, steps=40)
    cases = [gl.reload(case) for case in cases]
    assert sum(1 for case in cases if case.reopen_count) >= 3
    for case in cases:
        assert verify(gl.session, case).ok
        result = replay(gl.session, case, gl.runtime.registry)
        assert result.ok, (case.number, result.as_json())
