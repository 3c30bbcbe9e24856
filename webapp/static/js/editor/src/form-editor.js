/* The form editor: a form's JSON Schema in CodeMirror 6, with JSON highlighting, bracket matching,
 * a lint gutter for JSON that does not parse, and the problems the server finds in the schema
 * (the preview endpoint checks it as a deploy would) shown on the same gutter. */

import { EditorState } from "@codemirror/state";
import {
  EditorView,
  drawSelection,
  highlightActiveLine,
  keymap,
  lineNumbers,
} from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { bracketMatching, defaultHighlightStyle, indentOnInput, syntaxHighlighting } from "@codemirror/language";
import { json, jsonParseLinter } from "@codemirror/lang-json";
import { forceLinting, lintGutter, linter } from "@codemirror/lint";

/* createFormEditor(parent, {nonce, label, onChange}) -> {set(text), get(), setProblem(message)} */
export function createFormEditor(parent, options) {
  let serverProblem = null;
  let silent = false;
  const parseLint = jsonParseLinter();
  const lint = linter(
    (view) => {
      const found = parseLint(view);
      if (!found.length && serverProblem) {
        found.push({ from: 0, to: Math.min(1, view.state.doc.length), severity: "error", message: serverProblem });
      }
      return found;
    },
    { delay: 300 },
  );
  const extensions = [
    lineNumbers(),
    history(),
    drawSelection(),
    highlightActiveLine(),
    indentOnInput(),
    bracketMatching(),
    syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
    json(),
    lintGutter(),
    lint,
    keymap.of([...defaultKeymap, ...historyKeymap, indentWithTab]),
    EditorView.lineWrapping,
    EditorView.contentAttributes.of({ "aria-label": options.label || "" }),
    EditorView.updateListener.of((update) => {
      if (update.docChanged && !silent && options.onChange) options.onChange(update.state.doc.toString());
    }),
  ];
  if (options.nonce) extensions.push(EditorView.cspNonce.of(options.nonce));
  const view = new EditorView({ state: EditorState.create({ doc: "", extensions }), parent });

  return {
    view,
    set(text) {
      silent = true;
      serverProblem = null;
      view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: text } });
      silent = false;
    },
    get() {
      return view.state.doc.toString();
    },
    setProblem(message) {
      serverProblem = message || null;
      forceLinting(view);
    },
  };
}
