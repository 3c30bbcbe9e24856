"""The stored workflow: Gridloop's own task conversion and orjson write the same blob as
SpiffWorkflow 3.2's serializer, read what it wrote, and hand data that is not plain JSON back to it.

No database: the workflows come from the step function (tests/test_step.py's helpers).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.spiff.parser.process import SpiffBpmnParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState
from test_step import FINISH, open_and_accept, step, supervised_daily

from engine import serializer as serializer_module
from engine.serializer import make_serializer
from engine.specs import Spec, SpecRegistry
from engine.step import Complete, Fire, ready_user_tasks


@pytest.fixture(scope="module")
def registry(spec):
    registry = SpecRegistry()
    registry.add(spec)
    return registry


@pytest.fixture(scope="module")
def ours(registry):
    return make_serializer(registry)


@pytest.fixture(scope="module")
def stock(registry):
    return _stock(registry)


def _stock(registry):
    """SpiffWorkflow's own serializer, with only the spec stored by reference (as before)."""
    config = dict(SPIFF_CONFIG)
    config[BpmnWorkflow] = serializer_module._SpecByReference
    converters = BpmnWorkflowSerializer.configure(config)
    converters.gridloop_specs = registry
    return BpmnWorkflowSerializer(converters)


def a_whole_loop(spec):
    """A case's workflow after each of its steps (the step changes it in place, so each is to be
    read before the next): accepted, escalated to town and supervised for three days, then
    worked to its archive."""
    _opened, outcome = open_and_accept(spec)
    yield outcome.workflow
    outcome = supervised_daily(spec, 3)[0]
    yield outcome.workflow
    now = datetime(2026, 6, 1, 2, tzinfo=UTC)
    while ready := ready_user_tasks(outcome.workflow):
        task_id, task = next(iter(ready.items()))
        name = spec.tasks[task.task_spec.name].task
        now += timedelta(hours=1)
        outcome = step(spec, outcome.workflow, Complete(task_id, name, FINISH[name]), now)
        yield outcome.workflow
    assert outcome.facts.closed


def test_the_blob_is_spiffworkflows_own_field_for_field(spec, ours, stock):
    steps = 0
    for workflow in a_whole_loop(spec):
        steps += 1
        written = ours.serialize_json(workflow)
        assert json.loads(written) == json.loads(stock.serialize_json(workflow))
        assert ": " not in written[:200]  # written by orjson, not by the json module
    assert steps >= 6


def test_what_either_wrote_reads_back_to_the_same_workflow(spec, ours, stock):
    for workflow in a_whole_loop(spec):
        expected = json.loads(stock.serialize_json(workflow))
        # A blob an earlier release wrote (the json module, SpiffWorkflow's converters)...
        from_old = ours.deserialize_json(stock.serialize_json(workflow))
        assert json.loads(stock.serialize_json(from_old)) == expected
        # ...and one of ours, read by SpiffWorkflow and by us.
        by_spiff = stock.deserialize_json(ours.serialize_json(workflow))
        assert json.loads(stock.serialize_json(by_spiff)) == expected
        mine = ours.deserialize_json(ours.serialize_json(workflow))
        assert json.loads(stock.serialize_json(mine)) == expected
        # The restored tasks are whole: same states, data and ids, and they go on stepping.
        assert {t.id: (t.state, t.data) for t in mine.get_tasks()} == {
            t.id: (t.state, t.data) for t in workflow.get_tasks()
        }


def test_data_that_is_not_plain_json_takes_spiffworkflows_path(spec, ours, stock):
    _opened, outcome = open_and_accept(spec)
    workflow = outcome.workflow
    task = next(iter(ready_user_tasks(workflow).values()))
    when = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    task.data["seen_at"] = when  # what a script might leave behind
    task.internal_data["span"] = timedelta(hours=3)
    written = ours.serialize_json(workflow)
    assert json.loads(written) == json.loads(stock.serialize_json(workflow))
    back = ours.deserialize_json(written)
    again = next(t for t in back.get_tasks() if t.id == task.id)
    assert again.data["seen_at"] == when and again.internal_data["span"] == timedelta(hours=3)

    task.data["ratio"] = float("nan")  # json writes NaN; orjson would write null
    written = ours.serialize_json(workflow)
    assert "NaN" in written
    back = ours.deserialize_json(written)  # orjson refuses NaN: read by the json module
    ratio = next(t for t in back.get_tasks() if t.id == task.id).data["ratio"]
    assert ratio != ratio


def test_a_fired_timer_steps_the_same_on_a_restored_workflow(spec, ours):
    _opened, accepted = open_and_accept(spec)
    due = accepted.ready[0].due_at
    direct = step(spec, accepted.workflow, Fire(), due)
    _opened, accepted = open_and_accept(spec)
    restored = ours.deserialize_json(ours.serialize_json(accepted.workflow))
    again = step(spec, restored, Fire(), due)
    assert again.events == direct.events and again.facts == direct.facts
    assert sorted(again.timers) == sorted(direct.timers)


def test_threads_sharing_the_serializer_each_get_their_own_blob(spec, ours, stock):
    """A web process's threads share one serializer: a blob with a datetime in it must never be
    written by orjson because another thread's blob was plain, nor the other way round."""
    _opened, plain_case = open_and_accept(spec)
    _opened, dated_case = open_and_accept(spec)
    task = next(iter(ready_user_tasks(dated_case.workflow).values()))
    task.data["seen_at"] = datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    expected = {
        "plain": json.loads(stock.serialize_json(plain_case.workflow)),
        "dated": json.loads(stock.serialize_json(dated_case.workflow)),
    }
    wrong: list[str] = []

    def write(name, workflow):
        for _ in range(300):
            if json.loads(ours.serialize_json(workflow)) != expected[name]:
                wrong.append(name)

    threads = [
        threading.Thread(target=write, args=("plain", plain_case.workflow)),
        threading.Thread(target=write, args=("dated", dated_case.workflow)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def data_of(workflow, task_id) -> dict:
    return next(t for t in workflow.get_tasks() if t.id == task_id).data


def test_what_orjson_reads_or_writes_otherwise_takes_the_json_module(spec, ours, stock):
    """orjson reads an integer beyond 64 bits as a float, and refuses to write a lone surrogate
    (json.loads of a request body accepts one) or nesting deeper than 255: each would lose data
    or leave a case that can never be written again."""
    _opened, outcome = open_and_accept(spec)
    workflow = outcome.workflow
    task = next(iter(ready_user_tasks(workflow).values()))
    task.data.update(big=10**30, low=-(2**63) - 1, edge=2**64)
    for written in (stock.serialize_json(workflow), ours.serialize_json(workflow)):
        back = data_of(ours.deserialize_json(written), task.id)
        assert (back["big"], back["low"], back["edge"]) == (10**30, -(2**63) - 1, 2**64)
        assert all(type(back[k]) is int for k in ("big", "low", "edge"))

    nested: list = []
    for _ in range(300):
        nested = [nested]
    task.data.update(note="x\ud800", tree=nested)
    restored = ours.deserialize_json(stock.serialize_json(workflow))  # an earlier release's blob
    written = ours.serialize_json(restored)
    assert json.loads(written) == json.loads(stock.serialize_json(workflow))
    assert data_of(ours.deserialize_json(written), task.id)["note"] == "x\ud800"
    # The same text with the surrogate unescaped (json.dumps(..., ensure_ascii=False)) reads too.
    raw = json.dumps(json.loads(written), ensure_ascii=False)
    assert "\ud800" in raw
    assert data_of(ours.deserialize_json(raw), task.id)["note"] == "x\ud800"


def test_objects_in_pending_events_are_written_as_spiffworkflow_writes_them(spec, ours, stock):
    """The json module's path runs in SpiffWorkflow's encoder mode, as its own serializer does."""
    from SpiffWorkflow.bpmn.util import BpmnEvent
    from SpiffWorkflow.spiff.specs.event_definitions import SignalEventDefinition

    for payload in ({"a": {"f": len}}, {"s": {datetime(2026, 1, 1, tzinfo=UTC)}}):
        _opened, outcome = open_and_accept(spec)
        workflow = outcome.workflow
        workflow.bpmn_events.append(BpmnEvent(SignalEventDefinition("m"), payload, {}))
        assert json.loads(ours.serialize_json(workflow)) == json.loads(
            stock.serialize_json(workflow)
        )


SUBPROCESS_BPMN = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    id="defs" targetNamespace="http://gridloop.test/subprocess">
  <bpmn:process id="case_loop" isExecutable="true">
    <bpmn:startEvent id="start"/>
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="inner"/>
    <bpmn:subProcess id="inner">
      <bpmn:startEvent id="inner_start"/>
      <bpmn:sequenceFlow id="f2" sourceRef="inner_start" targetRef="look"/>
      <bpmn:userTask id="look"/>
      <bpmn:sequenceFlow id="f3" sourceRef="look" targetRef="inner_end"/>
      <bpmn:endEvent id="inner_end"/>
    </bpmn:subProcess>
    <bpmn:sequenceFlow id="f4" sourceRef="inner" targetRef="end"/>
    <bpmn:endEvent id="end"/>
  </bpmn:process>
</bpmn:definitions>
"""


def test_a_workflow_inside_a_subprocess_is_written_as_spiffworkflow_writes_it():
    """A bundle may hold an embedded subprocess; its workflow goes through the json module, which
    must get every task id as text, the subprocess's tasks included."""
    parser = SpiffBpmnParser()
    parser.add_bpmn_str(SUBPROCESS_BPMN.encode())
    spec = Spec(
        "s" * 64, parser.get_spec("case_loop"), parser.get_subprocess_specs("case_loop"), {}, {}
    )
    registry = SpecRegistry()
    registry.add(spec)
    ours, stock = make_serializer(registry), _stock(registry)
    workflow = BpmnWorkflow(spec.process, spec.subprocesses)
    workflow.do_engine_steps()
    assert workflow.subprocesses, "the workflow waits inside its subprocess"
    (waiting,) = [
        t for t in workflow.get_tasks(state=TaskState.READY) if t.task_spec.name == "look"
    ]
    written = ours.serialize_json(workflow)
    assert json.loads(written) == json.loads(stock.serialize_json(workflow))
    restored = ours.deserialize_json(written)
    assert json.loads(ours.serialize_json(restored)) == json.loads(written)
    restored.run_task_from_id(waiting.id)
    restored.do_engine_steps()
    assert restored.is_completed()
