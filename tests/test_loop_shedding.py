"""A step drops what earlier passes of a loop left in the task tree (engine/step.py
`_shed_passed_loops`): a case reopened again and again keeps a state of one pass's size, and
every step says exactly what it says without the shedding.

No database: the workflows come from the step function (tests/test_step.py's helpers).
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from conftest import ACCEPT_NORMAL
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from test_step import FINISH, OPENED, START, step

from engine import step as step_module
from engine.serializer import make_serializer
from engine.specs import SpecRegistry, parse_bundle, sheds_loops
from engine.step import Complete, Fire, Open, ready_user_tasks


@pytest.fixture(scope="module")
def spec(bundle):
    return parse_bundle(bundle)


@pytest.fixture(scope="module")
def serializer(spec):
    registry = SpecRegistry()
    registry.add(spec)
    return make_serializer(registry)


def drive(spec, serializer, seed: int, reopen: float = 0.5, steps: int = 80):
    """A case driven at random until archived: items completed (feedback unsatisfied with
    probability `reopen`, which reopens it), timers fired at their instants. Choices go by element
    name, never by task id, so two runs with one seed take the same path. The workflow goes
    through its stored form after every step, as when no process holds it. Returns what every
    step said, and the size of the tree after every step."""
    rng = random.Random(seed)
    now = START
    outcome = step(spec, None, Open(dict(OPENED)), now)
    said, sizes = [said_by(outcome)], [len(outcome.workflow.tasks)]
    for _ in range(steps):
        ready = ready_user_tasks(outcome.workflow)
        if not ready:
            break
        workflow = serializer.deserialize_json(serializer.serialize_json(outcome.workflow))
        dues = sorted(t for t, _kind, _name in outcome.timers) if outcome.timers else []
        if dues and rng.random() < 0.3:
            now = max(now, dues[0]) + timedelta(minutes=1)
            outcome = step(spec, workflow, Fire(), now)
        else:
            task_id, task = min(ready.items(), key=lambda item: item[1].task_spec.name)
            name = spec.tasks[task.task_spec.name].task
            data = dict(ACCEPT_NORMAL) if name == "accept" else dict(FINISH[name])
            if name == "feedback" and rng.random() < reopen:
                data = {"satisfaction": "unsatisfied"}
            now += timedelta(hours=1)
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
        """Accepted, then `times` rounds of resolved and unsatisfied, waiting at handle."""
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
