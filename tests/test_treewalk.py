"""Gridloop's walk of a task tree (engine/treewalk.py) gives what SpiffWorkflow's TaskIterator gives,
in the same order, on every state a case reaches; and a step on a workflow walks with it.

No database: the workflows come from the step function (tests/test_step.py's helpers).
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from conftest import ACCEPT_NORMAL
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.util.task import BpmnTaskIterator
from SpiffWorkflow.task import Task
from SpiffWorkflow.util.task import TaskIterator, TaskState
from test_step import (
    FINISH,
    OPENED,
    START,
    step,
    subprocess_timers_spec,
    supervised_daily,
)

from engine import treewalk
from engine.serializer import make_serializer
from engine.specs import SpecRegistry
from engine.step import Complete, Fire, Open, ready_user_tasks

MASKS = [
    TaskState.MAYBE,
    TaskState.LIKELY,
    TaskState.FUTURE,
    TaskState.WAITING,
    TaskState.READY,
    TaskState.STARTED,
    TaskState.COMPLETED,
    TaskState.ERROR,
    TaskState.CANCELLED,
    TaskState.PREDICTED_MASK,
    TaskState.DEFINITE_MASK,
    TaskState.FINISHED_MASK,
    TaskState.NOT_FINISHED_MASK,
    TaskState.ANY_MASK,
]


def assert_walks_alike(workflow) -> None:
    for mask in MASKS:
        ours = [t.id for t in treewalk.walk(workflow, mask)]
        theirs = [t.id for t in BpmnTaskIterator(workflow.task_tree, state=mask)]
        assert ours == theirs, TaskState.get_name(mask)
        assert [t.id for t in workflow.get_tasks(state=mask)] == theirs


def random_case(spec, seed: int):
    """A case driven at random: items completed (feedback sometimes unsatisfied, which reopens
    it), timers fired at their instants (supervision, escalation), until it is archived. Yields
    its workflow after every step."""
    rng = random.Random(seed)
    now = START
    outcome = step(spec, None, Open(dict(OPENED)), now)
    yield outcome.workflow, now
    for _ in range(60):
        ready = ready_user_tasks(outcome.workflow)
        if not ready:
            return
        dues = sorted(t for t, _kind, _name in outcome.timers or ()) if outcome.timers else []
        if dues and rng.random() < 0.4:
            now = max(now, dues[0]) + timedelta(minutes=1)
            outcome = step(spec, outcome.workflow, Fire(), now)
        else:
            task_id, task = rng.choice(sorted(ready.items()))
            name = spec.tasks[task.task_spec.name].task
            data = dict(ACCEPT_NORMAL) if name == "accept" else dict(FINISH[name])
            if name == "feedback" and rng.random() < 0.5:
                data = {"satisfaction": "unsatisfied"}
            now += timedelta(hours=1)
            outcome = step(spec, outcome.workflow, Complete(task_id, name, data), now)
        yield outcome.workflow, now


@pytest.mark.parametrize("seed", range(12))
def test_the_walk_is_spiffworkflows_on_every_state_of_a_case(spec, seed):
    steps = 0
    for workflow, _now in random_case(spec, seed):
        assert_walks_alike(workflow)
        steps += 1
    assert steps > 3


def test_the_walk_is_spiffworkflows_on_a_case_supervised_for_weeks(spec):
    outcome, _history = supervised_daily(spec, 20)
    assert_walks_alike(outcome.workflow)


def test_the_walk_stops_at_the_depth_spiffworkflow_stops_at(spec):
    """TaskIterator does not descend below depth 1000 (a loop run ~333 times); neither may the
    walk, or the two would disagree about which tasks a long chain holds."""
    workflow = BpmnWorkflow(spec.process, spec.subprocesses)
    leaf = workflow.task_tree
    while leaf._children:
        leaf = workflow.tasks[leaf._children[0]]
    for depth in range(1200):
        state = TaskState.READY if depth % 7 == 0 else TaskState.COMPLETED
        leaf = Task(workflow, leaf.task_spec, parent=leaf, state=state)
    assert_walks_alike(workflow)
    ready = [t for t in workflow.tasks.values() if t.state == TaskState.READY]
    assert len(list(treewalk.walk(workflow, TaskState.READY))) < len(ready)


def test_a_step_walks_its_workflow_with_gridloops_walk(spec, monkeypatch):
    """run_step binds the walk; a completion then reads READY and WAITING tasks through it."""
    asked = []
    real = treewalk.walk

    def counting(workflow, state=TaskState.ANY_MASK):
        asked.append(state)
        return real(workflow, state)

    monkeypatch.setattr(treewalk, "walk", counting)
    opened = step(spec, None, Open(dict(OPENED)), START)
    accept = next(iter(ready_user_tasks(opened.workflow)))
    step(spec, opened.workflow, Complete(accept, "accept", dict(ACCEPT_NORMAL)), START)
    assert TaskState.READY in asked and TaskState.WAITING in asked
    # SpiffWorkflow's own iterator is left as it was for everyone else.
    assert type(opened.workflow).get_tasks_iterator is BpmnWorkflow.get_tasks_iterator
    bare = BpmnWorkflow(spec.process, spec.subprocesses)
    assert isinstance(bare.get_tasks_iterator(state=TaskState.READY), TaskIterator)


def test_the_walk_counts_depth_as_spiffworkflow_does_when_the_caller_removes_tasks(spec):
    """TaskIterator's depth is a counter that a caller removing a parent throws off; near depth
    1000 that decides which tasks come out, and the walk must give the same."""
    for walker in ("stock", "ours"):
        workflow = BpmnWorkflow(spec.process, spec.subprocesses)
        root = workflow.task_tree
        workflow.tasks, root._children, root._state = {root.id: root}, [], TaskState.COMPLETED
        removed = Task(workflow, root.task_spec, parent=root, state=TaskState.WAITING)
        Task(workflow, root.task_spec, parent=removed, state=TaskState.WAITING)
        chain = Task(workflow, root.task_spec, parent=root, state=TaskState.COMPLETED)
        for depth in range(2, 1001):
            state = TaskState.WAITING if depth >= 999 else TaskState.COMPLETED
            chain = Task(workflow, root.task_spec, parent=chain, state=state)
        tasks = (
            TaskIterator(workflow.task_tree, state=TaskState.WAITING)
            if walker == "stock"
            else treewalk.walk(workflow, TaskState.WAITING)
        )
        seen = []
        for task in tasks:
            seen.append(task.depth if task.id in workflow.tasks else None)
            if task is removed:
                workflow._remove_task(removed.id)
        if walker == "stock":
            expected = seen
    assert seen == expected == [1, None, 999]


@pytest.mark.parametrize("seed", range(6))
def test_timers_fired_during_the_walk_run_as_spiffworkflow_runs_them(spec, seed, monkeypatch):
    """update_waiting_tasks fires timers while it walks (the walk is lazy, the tree changes under
    it); it runs whenever a task completes. On every state of a case, four days later (its
    warning, its deadline and supervisions due at once), a firing and a completion of an open
    item each make, run and record the same, in the same order, with Gridloop's walk as with
    SpiffWorkflow's."""
    registry = SpecRegistry()
    registry.add(spec)
    serializer = make_serializer(registry)
    several = 0
    for workflow, now in random_case(spec, seed):
        blob = serializer.serialize_json(workflow)
        late = now + timedelta(days=4)
        commands = [Fire()]
        for task_id, task in sorted(ready_user_tasks(workflow).items())[:1]:
            name = spec.tasks[task.task_spec.name].task
            data = dict(ACCEPT_NORMAL) if name == "accept" else dict(FINISH[name])
            commands.append(Complete(task_id, name, data))
        for command in commands:
            runs = []
            for bind in (lambda _workflow: None, treewalk.bind):
                monkeypatch.setattr(treewalk, "bind", bind)
                outcome = step(spec, serializer.deserialize_json(blob), command, late)
                tasks = outcome.workflow.tasks
                runs.append(  # new tasks get new ids: compared by their place in the tree
                    (
                        outcome.events,
                        [(t.task_spec.name, _path(t)) for t in outcome.ran],
                        [(t.task_spec.name, t.state, _path(t)) for t in tasks.values()],
                    )
                )
            assert runs[0] == runs[1], command
            several += len(runs[0][0]) > 1
    assert several > 0


def _path(task) -> list[str]:
    """A task's place in its tree: its spec and its ancestors' specs, with its position among
    its siblings."""
    path = []
    while task.parent is not None:
        path.append(f"{task.task_spec.name}#{task.parent._children.index(task.id)}")
        task = task.parent
    return path


def test_a_workflow_with_a_subprocess_walks_as_spiffworkflow_walks_it():
    """Gridloop's walk reads one workflow's own tasks; one with a subprocess keeps
    SpiffWorkflow's walk, which goes into it."""
    spec = subprocess_timers_spec()
    outcome = step(spec, None, Open({}), START)
    assert outcome.workflow.subprocesses
    for mask in MASKS:
        theirs = [t.id for t in BpmnTaskIterator(outcome.workflow.task_tree, state=mask)]
        assert [t.id for t in outcome.workflow.get_tasks(state=mask)] == theirs
    inner = [t for t in outcome.workflow.get_tasks(state=TaskState.READY)]
    assert "inside" in {t.task_spec.name for t in inner}
