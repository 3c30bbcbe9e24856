"""Workflow serialization with the spec stored by reference (its bundle hash), not embedded.

The embedded spec is ~70% of a blob and of the time to restore it; the spec is already parsed once
per version in the SpecRegistry, so the blob names it and restoring reuses the parsed object.

Every step writes its case's blob and every step on a case no process holds reads one, so the
tasks are converted here rather than through SpiffWorkflow's generic registry walk, and the text is
read and written with orjson. The blob is the same JSON, field for field, as SpiffWorkflow 3.2's
own serializer writes (tests/test_serializer.py compares them). What orjson would write or read
otherwise takes the json module and SpiffWorkflow's encoder, as before: data that is not plain JSON
(a datetime a script left, a set, a float that is not finite), an integer beyond 64 bits (orjson
reads it as a float), a lone surrogate or nesting over 255 deep (orjson refuses to write them).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from uuid import UUID

import orjson
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import (
    BpmnWorkflowConverter,
    TaskConverter,
    WorkflowConverter,
)
from SpiffWorkflow.bpmn.specs.mixins.events.event_types import CatchingEvent
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.task import Task, TaskState

from .specs import PROCESS_ID, SpecRegistry

_SCALARS = frozenset({str, bool, type(None)})
# orjson reads an integer outside 64 bits as a float, silently: text with a run of 19 digits or
# more (no float repr, time stamp or UUID group has one) is read by the json module. Found by
# mapping every digit to "9" and looking for nineteen of them: a tenth of the time of the regular
# expression \d{19}, which tried a match at every digit and cost four orjson reads.
_NINES = bytes.maketrans(b"0123456789", b"9999999999")
_LONG_RUN = b"9" * 19


def _has_long_number(text: bytes) -> bool:
    return _LONG_RUN in text.translate(_NINES)


_MUTABLE = (dict, list, set)


def plain(value) -> bool:
    """True when `value` is JSON as it stands: SpiffWorkflow's registry would return it unchanged,
    and orjson writes it exactly as the json module does."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is int:
        return -(2**63) <= value < 2**64  # orjson's range
    if kind is float:
        return math.isfinite(value)  # json writes NaN, orjson null
    if kind is dict:
        return "typename" not in value and all(
            type(k) is str and plain(v) for k, v in value.items()
        )
    if kind is list:
        return all(plain(v) for v in value)
    return False


class _FastTask(TaskConverter):
    """SpiffWorkflow's TaskConverter, the same fields, without its repeated parent lookups and
    registry walks over data that is plain JSON."""

    def to_dict(self, task):
        parent = task.workflow.tasks.get(task._parent)
        internal = task.internal_data
        # As SpiffWorkflow's: in encoder mode the registry only drops callables at the top.
        internal = self.registry.convert(internal) if internal else {}
        if parent is None:
            data, delta = task.data, {}
        else:
            data = {}
            before, after = parent.data, task.data
            delta = {
                "updates": {k: v for k, v in after.items() if k not in before or v != before[k]},
                "deletions": [k for k in before if k not in after],
            }
        return {  # ids stay UUIDs: orjson writes them as str() would, in a tenth of the time
            "id": task.id,
            "parent": task._parent if parent is not None else None,
            "children": list(task._children),
            "last_state_change": task.last_state_change,
            "state": task._state,
            "task_spec": task.task_spec.name,
            "triggered": task.triggered,
            "internal_data": internal,
            "data": data,
            "delta": delta,
        }

    def from_dict(self, dct, workflow):
        task_spec = workflow.spec.task_specs.get(dct["task_spec"])
        task = self.target_class(workflow, task_spec, state=dct["state"], id=_uuid(dct["id"]))
        parent_id = dct["parent"]
        task._parent = _uuid(parent_id) if parent_id is not None else None
        task._children = [_uuid(child) for child in dct["children"]]
        task.last_state_change = dct["last_state_change"]
        task.triggered = dct["triggered"]
        internal = dct["internal_data"]
        task.internal_data = internal if plain(internal) else self.registry.restore(internal)
        if isinstance(task_spec, CatchingEvent) and task._state & TaskState.WAITING:
            workflow.top_workflow.event_manager.add_task(task)
        delta = dct.get("delta")
        parent = workflow.tasks.get(task._parent)
        if delta and parent is not None:
            # DeepMerge.merge({}, parent.data): a copy one level deep
            data = {k: v.copy() if isinstance(v, _MUTABLE) else v for k, v in parent.data.items()}
            updates = delta.get("updates", {})
            data.update(updates if plain(updates) else self.registry.restore(updates))
            for key in delta.get("deletions", {}):
                data.pop(key, None)
        else:
            data = self.registry.restore(dct["data"])
        task.data = data
        return task


class _SpecByReference(BpmnWorkflowConverter):
    def to_dict(self, workflow):
        dct = WorkflowConverter.to_dict(self, workflow)
        spec = self.registry.gridloop_specs.by_process(workflow.spec)
        dct["spec"] = {"sha256": spec.sha256}
        if spec.process_id != PROCESS_ID:  # a campaign's grid instance: the bundle's other process
            dct["spec"]["process"] = spec.process_id
        dct["subprocess_specs"] = {}
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(self, dct):
        ref = dct.pop("spec")
        spec = self.registry.gridloop_specs.by_sha(ref["sha256"], ref.get("process", PROCESS_ID))
        dct.pop("subprocess_specs", None)
        workflow = self.target_class(spec.process, spec.subprocesses, deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], _uuid, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(_uuid(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


class _FastWorkflow(_SpecByReference):
    def mapping_to_dict(self, mapping, **kwargs):
        """The tasks (and subprocesses) keyed by their UUIDs, which orjson writes as text."""
        return {key: self.registry.convert(value, **kwargs) for key, value in mapping.items()}


def _plain_blob(dct: dict) -> bool:
    """Whether every piece of data in a workflow's dict is plain JSON, so that orjson writes what
    the json module would. Looked at after the conversion, not noted during it: the serializer
    is shared by a process's threads."""
    if dct["subprocesses"] or not (
        plain(dct["data"]) and plain(dct["correlations"]) and plain(dct["bpmn_events"])
    ):
        return False
    for task in dct["tasks"].values():
        delta = task["delta"]
        if not (
            plain(task["internal_data"])
            and plain(task["data"])
            and (not delta or plain(delta["updates"]))
        ):
            return False
    return True


def _with_text_ids(dct: dict) -> dict:
    """A workflow's dict as the json module must have it: task ids (keys, `id`, `parent`,
    `children`) as text, in the same places and order, here and in its subprocesses."""
    tasks = {}
    for key, task in dct["tasks"].items():
        parent = task["parent"]
        tasks[str(key)] = {
            **task,
            "id": str(task["id"]),
            "parent": None if parent is None else str(parent),
            "children": [str(child) for child in task["children"]],
        }
    text = {**dct, "tasks": tasks}
    if dct.get("subprocesses"):
        text["subprocesses"] = {
            str(key): _with_text_ids(sub) for key, sub in dct["subprocesses"].items()
        }
    return text


@lru_cache(maxsize=16384)
def _uuid(text: str) -> UUID:
    """A task's id is read three or four times a restore (its own, its parent's, its parent's
    children); UUIDs are immutable, so one object serves them all."""
    return UUID(text)


class _Serializer(BpmnWorkflowSerializer):
    """orjson for the text when everything is plain JSON; the json module otherwise."""

    def serialize_json(self, workflow, use_gzip=False):
        assert not use_gzip
        self.registry._encoder_mode = True  # as SpiffWorkflow's: the encoder converts the rest
        try:
            dct = self.to_dict(workflow)
            dct[self.VERSION_KEY] = self.VERSION
            if _plain_blob(dct):
                try:
                    return orjson.dumps(dct, option=orjson.OPT_NON_STR_KEYS).decode()
                except TypeError:  # a lone surrogate, nesting over 255 deep: json writes them
                    pass
            return json.dumps(_with_text_ids(dct), cls=self._encoder_cls)
        finally:
            self.registry._encoder_mode = False

    def deserialize_json(self, serialization, use_gzip=False):
        assert not use_gzip
        text = serialization
        if isinstance(text, str):  # a raw lone surrogate goes on to the json module, which reads it
            text = text.encode("utf-8", "surrogatepass")
        dct = None
        if not _has_long_number(text):
            try:
                dct = orjson.loads(text)
            except orjson.JSONDecodeError:  # NaN, a lone surrogate: json reads them, orjson not
                pass
        if dct is None:
            dct = json.loads(text)
        self.migrate(dct)
        return self.from_dict(dct)


def make_serializer(specs: SpecRegistry) -> BpmnWorkflowSerializer:
    config = dict(SPIFF_CONFIG)
    config[BpmnWorkflow] = _FastWorkflow
    config[Task] = _FastTask
    registry = BpmnWorkflowSerializer.configure(config)
    registry.gridloop_specs = specs
    return _Serializer(registry)
