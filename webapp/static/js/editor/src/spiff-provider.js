/* The properties panel's groups for SpiffWorkflow's extension elements, which Gridloop's diagrams
 * use for everything the engine reads off an element (DESIGN §2): a user task's `task`, `status`
 * and `formKey` as choices, every other spiffworkflow:property as editable name/value rows, a
 * business rule task's called decision, pre- and post-scripts, a script task's script and a
 * sequence flow's condition (Python, checked when the bundle is deployed).
 *
 * Entries are the components of @bpmn-io/properties-panel, called the way bpmn-js-properties-panel
 * calls them; every change is one command on bpmn-js's command stack, so undo covers it. Labels go
 * through `translate` (see translate.js). */

import {
  ListGroup,
  Group,
  SelectEntry,
  TextAreaEntry,
  TextFieldEntry,
  isSelectEntryEdited,
  isTextAreaEntryEdited,
  isTextFieldEntryEdited,
} from "@bpmn-io/properties-panel";
import { useService } from "bpmn-js-properties-panel";
import { getBusinessObject, is } from "bpmn-js/lib/util/ModelUtil";

export const LOGICAL_TASKS = ["accept", "handle", "feedback", "report", "review"];
export const OPEN_STATUSES = ["accepting", "handling", "feedback", "reporting"];
const NAMED = ["task", "status", "formKey"]; // a user task's properties with entries of their own
const MULTI = "properties-panel.multi-command-executor";

// ------------------------------------------------------------------ the model

function extensionsOf(bo) {
  const ext = bo.get("extensionElements");
  return ext ? ext.get("values") : [];
}

function extensionOf(bo, type) {
  return extensionsOf(bo).find((value) => is(value, type));
}

export function propertiesOf(bo) {
  const holder = extensionOf(bo, "spiffworkflow:Properties");
  return holder ? holder.get("values") : [];
}

function propertyValue(bo, name) {
  const found = propertiesOf(bo).find((p) => p.get("name") === name);
  return found ? found.get("value") || "" : "";
}

function update(element, moddleElement, properties) {
  return { cmd: "element.updateModdleProperties", context: { element, moddleElement, properties } };
}

/* The element's bpmn:ExtensionElements, made (with the command that attaches it) when missing. */
function ensureExtensions(element, bo, bpmnFactory, commands) {
  let ext = bo.get("extensionElements");
  if (!ext) {
    ext = bpmnFactory.create("bpmn:ExtensionElements", { values: [] });
    ext.$parent = bo;
    commands.push(update(element, bo, { extensionElements: ext }));
  }
  return ext;
}

function ensureProperties(element, bo, bpmnFactory, commands) {
  const ext = ensureExtensions(element, bo, bpmnFactory, commands);
  let holder = ext.get("values").find((v) => is(v, "spiffworkflow:Properties"));
  if (!holder) {
    holder = bpmnFactory.create("spiffworkflow:Properties", { values: [] });
    holder.$parent = ext;
    commands.push(update(element, ext, { values: [...ext.get("values"), holder] }));
  }
  return holder;
}

/* Set a named spiffworkflow:property; an empty value removes it. */
function setNamedProperty(injector, element, name, value) {
  const bo = getBusinessObject(element);
  const bpmnFactory = injector.get("bpmnFactory");
  const commands = [];
  const existing = propertiesOf(bo).find((p) => p.get("name") === name);
  if (!value) {
    if (existing) removeProperty(element, bo, existing, commands);
  } else if (existing) {
    commands.push(update(element, existing, { value }));
  } else {
    const holder = ensureProperties(element, bo, bpmnFactory, commands);
    const created = bpmnFactory.create("spiffworkflow:Property", { name, value });
    created.$parent = holder;
    commands.push(update(element, holder, { values: [...holder.get("values"), created] }));
  }
  if (commands.length) injector.get("commandStack").execute(MULTI, commands);
}

function removeProperty(element, bo, property, commands) {
  const ext = bo.get("extensionElements");
  const holder = property.$parent;
  const rest = holder.get("values").filter((p) => p !== property);
  commands.push(update(element, holder, { values: rest }));
  if (!rest.length && ext) {
    commands.push(update(element, ext, { values: ext.get("values").filter((v) => v !== holder) }));
  }
}

/* Set the text of a body-only extension element (preScript, calledDecisionId …); empty removes it. */
function setExtensionText(injector, element, type, value) {
  const bo = getBusinessObject(element);
  const bpmnFactory = injector.get("bpmnFactory");
  const commands = [];
  const existing = extensionOf(bo, type);
  if (!value) {
    if (existing) {
      const ext = bo.get("extensionElements");
      commands.push(update(element, ext, { values: ext.get("values").filter((v) => v !== existing) }));
    }
  } else if (existing) {
    commands.push(update(element, existing, { value }));
  } else {
    const ext = ensureExtensions(element, bo, bpmnFactory, commands);
    const created = bpmnFactory.create(type, { value });
    created.$parent = ext;
    commands.push(update(element, ext, { values: [...ext.get("values"), created] }));
  }
  if (commands.length) injector.get("commandStack").execute(MULTI, commands);
}

// ------------------------------------------------------------------ entries

function withCurrent(options, current, translate) {
  if (current && !options.some((o) => o.value === current)) {
    options.push({ value: current, label: current + " " + translate("(not in this bundle)") });
  }
  return options;
}

function NamedSelect(props) {
  const { element, id, name, label, choices } = props;
  const injector = useService("injector");
  const translate = useService("translate");
  const bundle = useService("gridloopBundle");
  const bo = getBusinessObject(element);
  const getOptions = () =>
    withCurrent(
      [{ value: "", label: translate("<none>") }].concat(
        choices(bundle).map((value) => ({ value, label: value })),
      ),
      propertyValue(bo, name),
      translate,
    );
  return SelectEntry({
    element,
    id,
    label,
    getValue: () => propertyValue(bo, name),
    setValue: (value) => setNamedProperty(injector, element, name, value),
    getOptions,
  });
}

function PropertyName(props) {
  const { element, id, property } = props;
  const commandStack = useService("commandStack");
  const translate = useService("translate");
  const debounce = useService("debounceInput");
  return TextFieldEntry({
    element: property,
    id,
    label: translate("Name"),
    getValue: () => property.get("name") || "",
    setValue: (value) =>
      commandStack.execute("element.updateModdleProperties", {
        element,
        moddleElement: property,
        properties: { name: value },
      }),
    debounce,
  });
}

function PropertyValue(props) {
  const { element, id, property } = props;
  const commandStack = useService("commandStack");
  const translate = useService("translate");
  const debounce = useService("debounceInput");
  return TextFieldEntry({
    element: property,
    id,
    label: translate("Value"),
    getValue: () => property.get("value") || "",
    setValue: (value) =>
      commandStack.execute("element.updateModdleProperties", {
        element,
        moddleElement: property,
        properties: { value },
      }),
    debounce,
  });
}

function ExtensionText(props) {
  const { element, id, type, label, rows, select } = props;
  const injector = useService("injector");
  const translate = useService("translate");
  const debounce = useService("debounceInput");
  const bundle = useService("gridloopBundle");
  const bo = getBusinessObject(element);
  const getValue = () => {
    const found = extensionOf(bo, type);
    return found ? found.get("value") || "" : "";
  };
  const setValue = (value) => setExtensionText(injector, element, type, value);
  if (select) {
    return SelectEntry({
      element,
      id,
      label,
      getValue,
      setValue,
      getOptions: () =>
        withCurrent(
          [{ value: "", label: translate("<none>") }].concat(
            select(bundle).map((value) => ({ value, label: value })),
          ),
          getValue(),
          translate,
        ),
    });
  }
  return TextAreaEntry({ element, id, label, getValue, setValue, debounce, rows: rows || 2, monospace: true });
}

function ScriptText(props) {
  const { element, id } = props;
  const modeling = useService("modeling");
  const translate = useService("translate");
  const debounce = useService("debounceInput");
  const bo = getBusinessObject(element);
  return TextAreaEntry({
    element,
    id,
    label: translate("Script (Python)"),
    getValue: () => bo.get("script") || "",
    setValue: (value) => modeling.updateProperties(element, { script: value || undefined }),
    debounce,
    rows: 4,
    monospace: true,
  });
}

function ConditionText(props) {
  const { element, id } = props;
  const modeling = useService("modeling");
  const bpmnFactory = useService("bpmnFactory");
  const translate = useService("translate");
  const debounce = useService("debounceInput");
  const bo = getBusinessObject(element);
  const getValue = () => {
    const expression = bo.get("conditionExpression");
    return expression ? expression.get("body") || "" : "";
  };
  const setValue = (value) => {
    let expression;
    if (value) {
      expression = bpmnFactory.create("bpmn:FormalExpression", { body: value });
      expression.$parent = bo;
    }
    modeling.updateProperties(element, { conditionExpression: expression });
  };
  return TextFieldEntry({ element, id, label: translate("Condition (Python)"), getValue, setValue, debounce });
}

// ------------------------------------------------------------------ groups

function propertyRows(element, injector, translate, skip) {
  const bo = getBusinessObject(element);
  const items = propertiesOf(bo)
    .filter((property) => !skip.includes(property.get("name")))
    .map((property, index) => {
      const id = element.id + "-spiffProperty-" + index;
      return {
        id,
        label: property.get("name") || translate("<empty>"),
        entries: [
          { id: id + "-name", component: PropertyName, property, isEdited: isTextFieldEntryEdited },
          { id: id + "-value", component: PropertyValue, property, isEdited: isTextFieldEntryEdited },
        ],
        autoFocusEntry: id + "-name",
        remove: (event) => {
          event.stopPropagation();
          const commands = [];
          removeProperty(element, bo, property, commands);
          injector.get("commandStack").execute(MULTI, commands);
        },
      };
    });
  const add = (event) => {
    event.stopPropagation();
    const bpmnFactory = injector.get("bpmnFactory");
    const commands = [];
    const holder = ensureProperties(element, bo, bpmnFactory, commands);
    const created = bpmnFactory.create("spiffworkflow:Property", { name: "", value: "" });
    created.$parent = holder;
    commands.push(update(element, holder, { values: [...holder.get("values"), created] }));
    injector.get("commandStack").execute(MULTI, commands);
  };
  return { items, add };
}

export function spiffGroups(element, injector) {
  const translate = injector.get("translate");
  const groups = [];
  const bo = getBusinessObject(element);
  if (!bo || is(element, "bpmn:Process") || element.type === "label") return groups;
  const userTask = is(element, "bpmn:UserTask");

  if (userTask) {
    groups.push({
      id: "gridloop-task",
      label: translate("Gridloop task"),
      component: Group,
      entries: [
        {
          id: "gridloop-task-name",
          component: NamedSelect,
          name: "task",
          label: translate("Task (task)"),
          choices: () => LOGICAL_TASKS,
          isEdited: isSelectEntryEdited,
        },
        {
          id: "gridloop-task-status",
          component: NamedSelect,
          name: "status",
          label: translate("Case status while open (status)"),
          choices: () => OPEN_STATUSES,
          isEdited: isSelectEntryEdited,
        },
        {
          id: "gridloop-task-form",
          component: NamedSelect,
          name: "formKey",
          label: translate("Form (formKey)"),
          choices: (bundle) => bundle.forms(),
          isEdited: isSelectEntryEdited,
        },
      ],
    });
  }

  if (is(element, "bpmn:BusinessRuleTask")) {
    groups.push({
      id: "gridloop-decision",
      label: translate("Decision"),
      component: Group,
      entries: [
        {
          id: "gridloop-called-decision",
          component: ExtensionText,
          type: "spiffworkflow:CalledDecisionId",
          label: translate("Called decision (calledDecisionId)"),
          select: (bundle) => bundle.decisions(),
          isEdited: isSelectEntryEdited,
        },
      ],
    });
  }

  if (is(element, "bpmn:ScriptTask")) {
    groups.push({
      id: "gridloop-script",
      label: translate("Script"),
      component: Group,
      entries: [{ id: "gridloop-script-text", component: ScriptText, isEdited: isTextAreaEntryEdited }],
    });
  }

  if (is(element, "bpmn:Task") || extensionOf(bo, "spiffworkflow:PreScript") || extensionOf(bo, "spiffworkflow:PostScript")) {
    groups.push({
      id: "gridloop-scripts",
      label: translate("Pre- and post-scripts"),
      component: Group,
      entries: [
        {
          id: "gridloop-prescript",
          component: ExtensionText,
          type: "spiffworkflow:PreScript",
          label: translate("Before the task (preScript)"),
          isEdited: isTextAreaEntryEdited,
        },
        {
          id: "gridloop-postscript",
          component: ExtensionText,
          type: "spiffworkflow:PostScript",
          label: translate("After the task (postScript)"),
          isEdited: isTextAreaEntryEdited,
        },
      ],
    });
  }

  if (is(element, "bpmn:SequenceFlow")) {
    const source = bo.get("sourceRef");
    if (source && (is(source, "bpmn:ExclusiveGateway") || is(source, "bpmn:InclusiveGateway"))) {
      groups.push({
        id: "gridloop-condition",
        label: translate("Condition"),
        component: Group,
        entries: [{ id: "gridloop-condition-text", component: ConditionText, isEdited: isTextFieldEntryEdited }],
      });
    }
  }

  if (!is(element, "bpmn:SequenceFlow") || propertiesOf(bo).length) {
    const rows = propertyRows(element, injector, translate, userTask ? NAMED : []);
    groups.push({
      id: "gridloop-properties",
      label: userTask ? translate("Other properties") : translate("Properties"),
      component: ListGroup,
      ...rows,
    });
  }
  return groups;
}

class SpiffPropertiesProvider {
  constructor(propertiesPanel, injector) {
    this._injector = injector;
    propertiesPanel.registerProvider(500, this);
  }

  getGroups(element) {
    // Every group gets the page's `translate` for its buttons' titles (Toggle section …), which
    // the panel otherwise leaves in English.
    const translate = this._injector.get("translate");
    return (groups) =>
      groups.concat(spiffGroups(element, this._injector)).map((group) => ({ translate, ...group }));
  }
}
SpiffPropertiesProvider.$inject = ["propertiesPanel", "injector"];

export default {
  __init__: ["spiffPropertiesProvider"],
  spiffPropertiesProvider: ["type", SpiffPropertiesProvider],
};
