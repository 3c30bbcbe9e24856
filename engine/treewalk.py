"""SpiffWorkflow's walk of a task tree, done faster on the workflows Gridloop steps.

SpiffWorkflow 3.2 finds tasks by walking the whole tree with `TaskIterator`, a general iterator
(filters, depth bookkeeping, a list popped from the front) that takes about a third of a bare
step: `do_engine_steps` walks the tree for READY tasks at least twice a pass, and every task that
completes walks it again for WAITING ones (`update_waiting_tasks`). Those two are the walks a
step makes in bulk, and both ask for the tasks in a state from the root. For them, `bind` gives a
workflow a walk that yields the same tasks in the same order as TaskIterator: depth first, each
task before its children, not descending below a task in a predicted state when the filter wants
definite or finished ones, nor below depth 1000 (its `max_depth`), and keeping a task when its
state is in the mask. The order matters: the events a step records follow it, and replay
recomputes them. Every other call, and every call on a workflow with subprocesses, goes to
SpiffWorkflow's own walk. tests/test_treewalk.py compares the two on every state a case reaches.
A bound workflow cannot be pickled; Gridloop never pickles one (the blob is its stored form).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MethodType

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.task import Task
from SpiffWorkflow.util.task import TaskState

MAX_DEPTH = 1000  # TaskIterator's default max_depth


def bind(workflow: BpmnWorkflow) -> None:
    """Make `workflow` walk its tree with `walk` where SpiffWorkflow's walk would give the same."""
    workflow.get_tasks_iterator = MethodType(_tasks_iterator, workflow)
    workflow.update_waiting_tasks = MethodType(_update_waiting_tasks, workflow)


def walk(workflow: BpmnWorkflow, state: int = TaskState.ANY_MASK) -> Iterator[Task]:
    """The tasks of `workflow` (its own, not its subprocesses') in `state`, in TaskIterator's
    order. A task's children are read when the task is reached, before it is yielded, and the
    depth is counted as TaskIterator counts it: a caller that changes the tree while walking
    (update_waiting_tasks fires timers) sees what it would see with TaskIterator."""
    if state & TaskState.PREDICTED_MASK:
        floor = TaskState.MAYBE
    elif state & TaskState.DEFINITE_MASK:
        floor = TaskState.FUTURE
    else:
        floor = TaskState.COMPLETED
    tasks = workflow.tasks
    stack = [workflow.task_tree]
    depth = 0  # kept as TaskIterator keeps it, which differs from a task's true depth only
    while stack:  # when a caller removes the parent of a task still to come
        task = stack.pop()
        if task._children and task._state >= floor and depth < MAX_DEPTH:
            stack.extend([tasks.get(child) for child in reversed(task._children)])
            depth += 1
        elif stack:  # a leaf: climb to the parent of the next task
            ancestor, current = stack[-1].parent, task.parent
            while current is not None and current is not ancestor:
                current = current.parent
                depth -= 1
        if task._state & state and task.last_state_change >= 0:
            yield task


def _tasks_iterator(self: BpmnWorkflow, first_task=None, **kwargs):
    if first_task is None and kwargs.keys() <= {"state"} and not self.subprocesses:
        return walk(self, kwargs.get("state", TaskState.ANY_MASK))
    return type(self).get_tasks_iterator(self, first_task, **kwargs)


def _update_waiting_tasks(self: BpmnWorkflow) -> None:
    if self.subprocesses:
        type(self).update_waiting_tasks(self)
        return
    for task in walk(self, TaskState.WAITING):
        task.task_spec._update(task)
