/* dmn-js's editing manager with one view: the decision table editor. SpiffWorkflow runs decision
 * tables only (their cells hold Python, edited as text), and Gridloop's tables carry no DRD
 * diagram interchange, so the DRD, literal expression and boxed expression editors are left out
 * of the bundle. */

import EditingManager from "dmn-js-shared/lib/base/EditingManager";
import DecisionTableEditor from "dmn-js-decision-table/lib/Editor";
import { is } from "dmn-js-shared/lib/util/ModelUtil";

export default class TableModeler extends EditingManager {
  _getViewProviders() {
    return [
      {
        id: "decisionTable",
        constructor: DecisionTableEditor,
        opens(element) {
          return is(element, "dmn:Decision") && is(element.decisionLogic, "dmn:DecisionTable");
        },
      },
    ];
  }
}
