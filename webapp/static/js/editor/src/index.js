/* The administrators' process editor (/admin/editor): one page over a whole bundle — the BPMN
 * diagram in bpmn-js's modeler with a properties panel for SpiffWorkflow's extension elements,
 * the DMN decision tables in dmn-js, and each form's JSON Schema in a code editor beside a preview
 * that the server renders with the very templates handlers' task pages use.
 *
 * The page (webapp/templates/editor/index.html) hands over the bundle's files and the URLs in a
 * JSON block (#editor-data). A file is exported from its editor only once it has been changed
 * there: files left alone go back to the server byte for byte, so saving or deploying an
 * unchanged bundle names the same version. Drafts, deploys and previews are JSON posts carrying
 * the page's CSRF token; a refused deploy lists its problems, and each one opens its file and
 * selects its element. This file holds no user-visible words: they come in the JSON block. */

import "bpmn-js/dist/assets/diagram-js.css";
import "bpmn-js/dist/assets/bpmn-js.css";
import "bpmn-js/dist/assets/bpmn-font/css/bpmn.css";
import "@bpmn-io/properties-panel/dist/assets/properties-panel.css";
import "dmn-js/dist/assets/dmn-js-shared.css";
import "dmn-js/dist/assets/dmn-js-decision-table.css";
import "dmn-js/dist/assets/dmn-js-decision-table-controls.css";
import "dmn-js/dist/assets/dmn-font/css/dmn.css";

import BpmnModeler from "bpmn-js/lib/Modeler";
import { BpmnPropertiesPanelModule, BpmnPropertiesProviderModule } from "bpmn-js-properties-panel";

import spiffworkflow from "./spiffworkflow.json";
import LaneNames from "./lane-names";
import SpiffPropertiesProvider from "./spiff-provider";
import TableModeler from "./table-modeler";
import { createFormEditor } from "./form-editor";
import { translateModule } from "./translate";

const NONCE = (document.currentScript && document.currentScript.nonce) || "";

function kindOf(path) {
  if (path.endsWith(".bpmn")) return "bpmn";
  if (path.endsWith(".dmn")) return "dmn";
  if (path.endsWith(".schema.json")) return "form";
  return "other";
}

function baseName(path) {
  return path.slice(path.lastIndexOf("/") + 1);
}

function fill(template, values) {
  return String(template || "").replace(/{(\w+)}/g, (whole, key) => (key in values ? String(values[key]) : whole));
}

function escapeId(id) {
  return window.CSS && CSS.escape ? CSS.escape(id) : id.replace(/["\\]/g, "\\$&");
}

class Editor {
  constructor(root, data) {
    this.root = root;
    this.data = data;
    this.msg = data.messages || {};
    this.process = data.process;
    this.base = data.base || null;
    this.files = Object.assign({}, data.files); // path -> current text
    this.original = Object.assign({}, data.files); // as opened, or as last saved or deployed
    this.dirty = new Set(); // changed in bpmn-js or dmn-js and not exported yet
    this.changedSinceSave = false;
    this.active = null;
    this.watched = new WeakSet();
    this.busy = false;
    this.el = (id) => root.querySelector("#" + id);
    this.status = this.el("editor-status");
    this.problemList = this.el("editor-problems");
  }

  // -------------------------------------------------------------- set-up

  start() {
    const words = this.data.words || {};
    const bundle = {
      forms: () => this.formNames(),
      decisions: () => this.decisionIds(),
      tiers: this.data.tiers || {},
    };
    this.bpmn = new BpmnModeler({
      container: this.el("bpmn-canvas"),
      propertiesPanel: { parent: this.el("bpmn-properties") },
      additionalModules: [
        BpmnPropertiesPanelModule,
        BpmnPropertiesProviderModule,
        SpiffPropertiesProvider,
        LaneNames,
        translateModule(words),
        { gridloopBundle: ["value", bundle] },
      ],
      moddleExtensions: { spiffworkflow },
    });
    this.bpmn.on("commandStack.changed", (event) => {
      if (event.trigger !== "clear") this.markChanged(this.active);
    });
    // A few buttons of the panel take no `translate` (the pop-up editor's): their titles are
    // looked up in the same words whenever the panel draws them.
    const panel = this.el("bpmn-properties");
    new MutationObserver(() => this.translateTitles(panel, words)).observe(panel, {
      subtree: true,
      childList: true,
      attributes: true,
      attributeFilter: ["title"],
    });
    this.dmn = new TableModeler({
      container: this.el("dmn-canvas"),
      // dmn-js hands each view its own options' additionalModules, not the common ones.
      decisionTable: { additionalModules: [translateModule(words)] },
    });
    this.dmn.on("views.changed", () => this.watchDmn());
    this.form = createFormEditor(this.el("form-code"), {
      nonce: NONCE,
      label: this.msg.form_code || "",
      onChange: (text) => {
        this.files[this.active] = text;
        this.markChanged(this.active);
        this.schedulePreview();
      },
    });

    this.el("save-draft").addEventListener("click", () => this.saveDraft());
    this.el("deploy").addEventListener("click", () => this.deploy());
    const discard = this.el("discard-draft");
    if (discard) discard.addEventListener("click", () => this.discardDraft());
    const newForm = this.el("new-form");
    if (newForm) newForm.addEventListener("submit", (event) => this.addForm(event));
    window.addEventListener("beforeunload", (event) => {
      if (this.changedSinceSave) {
        event.preventDefault();
        event.returnValue = "";
      }
    });
    this.renderFiles();
    // The diagram of the process being edited (a bundle holds case_loop and campaign).
    const diagrams = this.paths().filter((p) => kindOf(p) === "bpmn");
    const defines = (p) => new RegExp(`<(?:\\w+:)?process[^>]*\\sid="${this.process}"`).test(this.files[p]);
    const first = diagrams.find(defines) || diagrams[0] || this.paths()[0];
    const wanted = new URLSearchParams(window.location.search).get("file");
    this.root.classList.add("ready");
    return this.open(wanted && wanted in this.files ? wanted : first);
  }

  translateTitles(root, words) {
    for (const el of root.querySelectorAll("[title]")) {
      const title = el.getAttribute("title");
      if (Object.prototype.hasOwnProperty.call(words, title)) el.setAttribute("title", words[title]);
    }
  }

  watchDmn() {
    const viewer = this.dmn.getActiveViewer();
    if (!viewer || this.watched.has(viewer)) return;
    this.watched.add(viewer);
    viewer.get("eventBus").on("commandStack.changed", (event) => {
      if (event.trigger !== "clear") this.markChanged(this.active);
    });
  }

  // -------------------------------------------------------------- files

  paths() {
    return Object.keys(this.files).sort((a, b) => {
      const order = { bpmn: 0, dmn: 1, form: 2, other: 3 };
      return order[kindOf(a)] - order[kindOf(b)] || a.localeCompare(b);
    });
  }

  formNames() {
    return this.paths()
      .filter((p) => kindOf(p) === "form")
      .map((p) => baseName(p).replace(/\.schema\.json$/, ""));
  }

  decisionIds() {
    const found = [];
    for (const path of this.paths()) {
      if (kindOf(path) !== "dmn") continue;
      const pattern = /<(?:\w+:)?decision\b[^>]*\bid="([^"]+)"/g;
      let match;
      while ((match = pattern.exec(this.files[path]))) found.push(match[1]);
    }
    return found;
  }

  isChanged(path) {
    return this.dirty.has(path) || this.files[path] !== this.original[path];
  }

  markChanged(path) {
    if (!path) return;
    if (kindOf(path) === "bpmn" || kindOf(path) === "dmn") this.dirty.add(path);
    this.changedSinceSave = true;
    this.renderFiles();
  }

  renderFiles() {
    const list = this.el("editor-files");
    const groups = { bpmn: this.msg.diagrams, dmn: this.msg.rules, form: this.msg.forms, other: this.msg.other };
    list.textContent = "";
    let current = null;
    let inner = null;
    for (const path of this.paths()) {
      const kind = kindOf(path);
      if (kind !== current) {
        current = kind;
        const group = document.createElement("li");
        group.className = "file-group";
        const heading = document.createElement("span");
        heading.className = "file-group-name";
        heading.textContent = groups[kind] || "";
        inner = document.createElement("ul");
        group.append(heading, inner);
        list.appendChild(group);
      }
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "file" + (path === this.active ? " on" : "");
      button.dataset.path = path;
      button.dataset.testid = "file";
      const name = document.createElement("code"); // a file name, not words to translate
      name.textContent = baseName(path);
      button.appendChild(name);
      if (path === this.active) button.setAttribute("aria-current", "true");
      if (this.isChanged(path)) {
        const mark = document.createElement("span");
        mark.className = "changed";
        mark.textContent = " ●";
        mark.title = this.msg.changed || "";
        button.appendChild(mark);
      }
      button.addEventListener("click", () => this.open(path));
      item.appendChild(button);
      inner.appendChild(item);
    }
  }

  /* Export the active file from its editor when it was changed there. */
  async sync() {
    const path = this.active;
    if (!path || !this.dirty.has(path)) return;
    const kind = kindOf(path);
    const modeler = kind === "bpmn" ? this.bpmn : kind === "dmn" ? this.dmn : null;
    if (!modeler) return;
    const { xml } = await modeler.saveXML({ format: true });
    this.files[path] = xml;
  }

  async open(path) {
    if (!path) return;
    await this.sync();
    this.active = path;
    const kind = kindOf(path);
    for (const pane of this.root.querySelectorAll(".editor-pane")) {
      pane.hidden = pane.dataset.kind !== kind;
    }
    const heading = this.el("editor-file-name");
    heading.textContent = "";
    heading.appendChild(document.createElement("code")).textContent = path;
    this.renderFiles();
    this.root.dataset.active = path;
    try {
      if (kind === "bpmn") {
        await this.bpmn.importXML(this.files[path]);
        this.bpmn.get("canvas").zoom("fit-viewport");
      } else if (kind === "dmn") {
        await this.dmn.importXML(this.files[path]);
        this.watchDmn();
      } else if (kind === "form") {
        this.form.set(this.files[path]);
        this.preview();
      }
      this.root.dataset.opened = path;
    } catch (error) {
      this.say(fill(this.msg.open_failed, { message: error.message || String(error) }), "bad");
    }
  }

  // -------------------------------------------------------------- forms

  schedulePreview() {
    window.clearTimeout(this.previewTimer);
    this.previewTimer = window.setTimeout(() => this.preview(), 400);
  }

  async preview() {
    const path = this.active;
    const target = this.el("form-preview");
    const answer = await this.post(this.data.urls.preview, { schema: this.files[path] });
    if (path !== this.active) return;
    if (answer.ok) {
      target.innerHTML = answer.data.html; // rendered and escaped by the server's templates
      this.form.setProblem(null);
    } else {
      const message = this.errorText(answer);
      const note = document.createElement("p");
      note.className = "preview-problem";
      note.dataset.testid = "preview-problem";
      note.textContent = fill(this.msg.preview_failed, { message });
      target.textContent = "";
      target.appendChild(note);
      this.form.setProblem(message);
    }
  }

  addForm(event) {
    event.preventDefault();
    const input = this.el("new-form-name");
    const name = input.value.trim();
    if (!/^[a-z][a-z0-9_]{0,40}$/.test(name)) {
      this.say(this.msg.form_name_bad, "bad");
      input.focus();
      return;
    }
    const path = "workflows/bpmn/forms/" + name + ".schema.json";
    if (!(path in this.files)) {
      this.files[path] = JSON.stringify({ type: "object", properties: {}, required: [] }, null, 2) + "\n";
      this.changedSinceSave = true;
    }
    input.value = "";
    this.open(path);
  }

  // -------------------------------------------------------------- server

  async post(url, body) {
    const token = document.querySelector("meta[name=csrf-token]");
    try {
      const response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-CSRFToken": token ? token.getAttribute("content") : "",
        },
        body: JSON.stringify(body),
      });
      let data = null;
      try {
        data = await response.json();
      } catch (ignored) {
        data = null;
      }
      return { ok: response.ok, status: response.status, data };
    } catch (error) {
      return { ok: false, status: 0, data: null };
    }
  }

  errorText(answer) {
    if (answer.data && answer.data.error) {
      const fields = answer.data.error.fields || {};
      const details = Object.keys(fields).map((k) => fields[k]);
      return [answer.data.error.message].concat(details).join(" ");
    }
    if (answer.status === 413) return this.msg.too_large;
    return this.msg.failed;
  }

  say(text, tone) {
    this.status.textContent = text;
    this.status.className = "editor-status" + (tone ? " " + tone : "");
  }

  async busyWith(task) {
    if (this.busy) return;
    this.busy = true;
    this.root.classList.add("busy");
    try {
      await task();
    } finally {
      this.busy = false;
      this.root.classList.remove("busy");
    }
  }

  saveDraft() {
    return this.busyWith(async () => {
      await this.sync();
      this.say(this.msg.saving);
      const answer = await this.post(this.data.urls.draft, {
        process: this.process,
        base: this.base,
        files: this.files,
      });
      if (answer.ok) {
        this.changedSinceSave = false;
        this.say(fill(this.msg.saved, { time: answer.data.saved_at_text }), "good");
        this.root.dataset.draft = "saved";
      } else {
        this.say(fill(this.msg.save_failed, { message: this.errorText(answer) }), "bad");
      }
    });
  }

  discardDraft() {
    if (!window.confirm(this.msg.discard_confirm)) return;
    return this.busyWith(async () => {
      const answer = await this.post(this.data.urls.discard, { process: this.process });
      if (answer.ok) {
        this.changedSinceSave = false;
        window.location.assign(this.data.urls.live);
      } else {
        this.say(this.errorText(answer), "bad");
      }
    });
  }

  deploy() {
    return this.busyWith(async () => {
      const commentBox = this.el("deploy-comment");
      const comment = commentBox.value.trim();
      if (!comment) {
        this.say(this.msg.comment_required, "bad");
        commentBox.focus();
        return;
      }
      await this.sync();
      this.showProblems([]);
      this.say(this.msg.deploying);
      const answer = await this.post(this.data.urls.deploy, {
        process: this.process,
        base: this.base,
        files: this.files,
        comment,
      });
      if (answer.ok) {
        const version = answer.data;
        this.original = Object.assign({}, this.files);
        this.dirty.clear();
        this.changedSinceSave = false;
        this.base = version.hash;
        commentBox.value = "";
        this.renderFiles();
        this.sayDeployed(version);
      } else if (answer.data && answer.data.error && answer.data.error.code === "invalid_bundle") {
        const problems = answer.data.error.problems || [];
        this.say(fill(this.msg.refused, { count: problems.length }), "bad");
        this.showProblems(problems);
      } else {
        this.say(fill(this.msg.deploy_failed, { message: this.errorText(answer) }), "bad");
      }
    });
  }

  sayDeployed(version) {
    const template = version.created
      ? this.msg.deployed
      : version.activated
        ? this.msg.reactivated
        : version.live
          ? this.msg.unchanged
          : this.msg.unchanged_not_live;
    const text = fill(template, { hash: version.hash.slice(0, 12) });
    this.say(text, "good");
    this.status.dataset.hash = version.hash;
    if (version.url) {
      const link = document.createElement("a");
      link.href = version.url;
      link.textContent = this.msg.see_version;
      link.dataset.testid = "deployed-version";
      this.status.append(" ", link);
    }
  }

  // -------------------------------------------------------------- problems

  showProblems(problems) {
    const list = this.problemList;
    list.textContent = "";
    list.hidden = !problems.length;
    problems.forEach((problem) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "problem";
      button.dataset.testid = "problem";
      if (problem.element) button.dataset.element = problem.element;
      const file = problem.file && problem.line ? problem.file + ":" + problem.line : problem.file;
      const where = [file, problem.element].filter(Boolean).join(" · ");
      const place = document.createElement("span");
      place.className = "where";
      place.textContent = where || this.msg.whole_bundle;
      const what = document.createElement("span");
      what.className = "what";
      what.textContent = problem.message;
      button.append(place, what);
      button.addEventListener("click", () => this.reveal(problem));
      item.appendChild(button);
      list.appendChild(item);
    });
  }

  /* The file that holds an element with this id, when a problem names no file. */
  locate(element) {
    if (!element) return null;
    const needle = 'id="' + element + '"';
    return this.paths().find((p) => this.files[p].includes(needle)) || null;
  }

  async reveal(problem) {
    let path = problem.file && problem.file in this.files ? problem.file : null;
    const holder = this.locate(problem.element);
    if (!path || (holder && kindOf(path) === kindOf(holder) && !this.files[path].includes('id="' + problem.element + '"'))) {
      path = holder || path;
    }
    if (!path) return;
    if (path !== this.active) await this.open(path);
    const id = problem.element;
    if (!id) return;
    const kind = kindOf(path);
    if (kind === "bpmn") {
      const shape = this.bpmn.get("elementRegistry").get(id);
      if (shape) {
        this.bpmn.get("selection").select(shape);
        this.bpmn.get("canvas").scrollToElement(shape);
      }
    } else if (kind === "dmn") {
      const view = this.dmn.getViews().find((v) => v.element.id === id);
      if (view && view !== this.dmn.getActiveView()) await this.dmn.open(view);
      const canvas = this.el("dmn-canvas");
      for (const old of canvas.querySelectorAll(".gridloop-problem")) old.classList.remove("gridloop-problem");
      const sel = '[data-row-id="' + escapeId(id) + '"], [data-col-id="' + escapeId(id) + '"], [data-element-id="' + escapeId(id) + '"]';
      const cells = canvas.querySelectorAll(sel);
      for (const cell of cells) cell.classList.add("gridloop-problem");
      if (cells.length) cells[0].scrollIntoView({ block: "center", inline: "nearest" });
    }
  }
}

function boot() {
  const root = document.getElementById("editor");
  const block = document.getElementById("editor-data");
  if (!root || !block) return;
  const editor = new Editor(root, JSON.parse(block.textContent));
  window.gridloopEditor = editor; // for the browser tests and the console
  editor.start().catch((error) => editor.say(String(error), "bad"));
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
