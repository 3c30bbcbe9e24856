/* Lanes drawn with the tiers' names. A lane's name is the tier SpiffWorkflow reads (grid_leader),
 * and it stays that in the diagram and in the properties panel; the canvas shows the tier as
 * people call it (网格长), as every other page does (DESIGN §1). The renderer lends bpmn-js's own
 * lane drawing the display name for the moment of drawing, so the label is laid out for it. */

import BaseRenderer from "diagram-js/lib/draw/BaseRenderer";
import { is } from "bpmn-js/lib/util/ModelUtil";

const PRIORITY = 1500; // before bpmn-js's renderer (1000)

class LaneNameRenderer extends BaseRenderer {
  constructor(eventBus, bpmnRenderer, gridloopBundle) {
    super(eventBus, PRIORITY);
    this._bpmnRenderer = bpmnRenderer;
    this._names = gridloopBundle.tiers || {};
  }

  canRender(element) {
    return is(element, "bpmn:Lane") && Object.prototype.hasOwnProperty.call(this._names, element.businessObject.name);
  }

  drawShape(parentGfx, element) {
    const bo = element.businessObject;
    const raw = bo.name;
    bo.name = this._names[raw];
    try {
      return this._bpmnRenderer.drawShape(parentGfx, element);
    } finally {
      bo.name = raw;
    }
  }

  getShapePath(shape) {
    return this._bpmnRenderer.getShapePath(shape);
  }
}
LaneNameRenderer.$inject = ["eventBus", "bpmnRenderer", "gridloopBundle"];

export default {
  __init__: ["laneNameRenderer"],
  laneNameRenderer: ["type", LaneNameRenderer],
};
