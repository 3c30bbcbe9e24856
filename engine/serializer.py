"""Workflow serialization with the spec stored by reference (its bundle hash), not embedded.

The embedded spec is ~70% of a blob and of the time to restore it; the spec is already parsed once
per version in the SpecRegistry, so the blob names it and restoring reuses the parsed object.
"""

from __future__ import annotations

from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

from .specs import PROCESS_ID, SpecRegistry


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


_uuid = UUID


def make_serializer(specs: SpecRegistry) -> BpmnWorkflowSerializer:
    config = dict(SPIFF_CONFIG)
    config[BpmnWorkflow] = _SpecByReference
    registry = BpmnWorkflowSerializer.configure(config)
    registry.gridloop_specs = specs
    return BpmnWorkflowSerializer(registry)
