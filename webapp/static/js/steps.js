/* The step-through viewer (templates/steps/show.html, webapp/steps.py): a case's events one at a
 * time on its BPMN diagram, drawn with bpmn-js's NavigatedViewer.
 *
 * Markup: an element [data-stepper] with data-frames-url (steps.json), data-diagram-url (the
 * case's BPMN) and the messages this file may show (data-msg-*), already translated: this file
 * holds no user-visible words. Inside it, elements named by data-role receive what a frame says
 * (see show.html), and buttons carry data-action="prev|play|next".
 *
 * Each frame marks the diagram: gl-done on every element run so far, gl-ran on what ran in this
 * event's step, gl-active on the user tasks open after it. After each draw the diagram box carries
 * data-seq (the event's number) and data-active (the open tasks' element ids, comma-joined), so a
 * test can check the marks against the event. Without the viewer (not installed, blocked, an old
 * browser) the box says so and the rest of the frame still steps. */
(function () {
  "use strict";

  var PLAY_EVERY_MS = 1200;
  var NARROW_PX = 600; // below this the diagram follows the open task at a readable size
  var READABLE_ZOOM = 0.7;

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      });
  }

  function getText(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/xml" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      });
  }

  /* A form field has the keys to itself: typing in it never steps the case. */
  function typing(target) {
    if (!target || !target.tagName) return false;
    var tag = target.tagName.toUpperCase();
    return tag === "INPUT" || tag === "SELECT" || tag === "TEXTAREA" || target.isContentEditable;
  }

  function Stepper(root) {
    this.root = root;
    this.box = root.querySelector("[data-role=diagram]");
    this.slider = root.querySelector("[data-role=slider]");
    this.playButton = root.querySelector("[data-action=play]");
    this.frames = [];
    this.events = 0;
    this.index = -1;
    this.timer = null;
    this.viewer = null;
    this.marked = [];
    this.zoomed = false;
  }

  Stepper.prototype.msg = function (name) {
    return this.root.getAttribute("data-msg-" + name) || "";
  };

  Stepper.prototype.part = function (role) {
    return this.root.querySelector("[data-role=" + role + "]");
  };

  Stepper.prototype.say = function (text, state) {
    clear(this.box);
    this.box.appendChild(element("p", "diagram-note", text));
    this.box.setAttribute("data-state", state);
  };

  Stepper.prototype.start = function () {
    var self = this;
    var diagramUrl = this.root.getAttribute("data-diagram-url");
    var framesUrl = this.root.getAttribute("data-frames-url");
    if (typeof window.fetch !== "function") {
      this.say(this.msg("unavailable"), "unavailable");
      return;
    }
    var viewerReady = typeof window.BpmnJS === "function" && diagramUrl;
    var diagram = viewerReady ? getText(diagramUrl).then(null, function () { return null; }) : null;
    Promise.all([getJSON(framesUrl), diagram])
      .then(function (loaded) {
        var body = loaded[0];
        self.frames = body.frames || [];
        self.events = body.events || self.frames.length;
        self.divergence(body.divergence);
        return self.importDiagram(viewerReady, loaded[1]);
      })
      .then(function () {
        self.wire();
        self.go(0);
        self.root.setAttribute("data-state", "ready");
      })
      .then(null, function () {
        self.say(self.msg("failed"), "failed");
        self.root.setAttribute("data-state", "failed");
      });
  };

  Stepper.prototype.importDiagram = function (viewerReady, xml) {
    var self = this;
    if (!viewerReady) {
      this.say(this.msg("unavailable"), "unavailable");
      return null;
    }
    if (xml === null) {
      this.say(this.msg("failed"), "failed");
      return null;
    }
    clear(this.box);
    var viewer = new window.BpmnJS({ container: this.box });
    return viewer.importXML(xml).then(
      function () {
        viewer.get("canvas").zoom("fit-viewport", "auto");
        self.viewer = viewer;
        self.box.setAttribute("data-state", "ready");
      },
      function () {
        self.say(self.msg("failed"), "failed"); // the frames still step, without the drawing
      }
    );
  };

  Stepper.prototype.divergence = function (divergence) {
    var note = this.part("divergence");
    if (!note || !divergence) return;
    note.textContent = divergence.text || "";
    note.hidden = false;
  };

  Stepper.prototype.wire = function () {
    var self = this;
    var last = Math.max(this.frames.length, 1);
    this.slider.min = "1";
    this.slider.max = String(last);
    this.slider.disabled = this.frames.length < 2;
    this.slider.addEventListener("input", function () {
      self.pause();
      self.go(parseInt(self.slider.value, 10) - 1);
    });
    this.root.addEventListener("click", function (event) {
      var button = event.target.closest ? event.target.closest("[data-action]") : null;
      if (!button || !self.root.contains(button)) return;
      self.act(button.getAttribute("data-action"));
    });
    document.addEventListener("keydown", function (event) {
      if (event.altKey || event.ctrlKey || event.metaKey || typing(event.target)) return;
      var key = event.key;
      if (key === "ArrowRight" || key === "Right") self.act("next");
      else if (key === "ArrowLeft" || key === "Left") self.act("prev");
      else if ((key === " " || key === "Spacebar") && event.target.tagName !== "BUTTON") {
        self.act("play"); // a focused button answers Space with its own click
      } else return;
      event.preventDefault();
    });
  };

  Stepper.prototype.act = function (action) {
    if (action === "next") {
      this.pause();
      this.go(this.index + 1);
    } else if (action === "prev") {
      this.pause();
      this.go(this.index - 1);
    } else if (action === "play") {
      if (this.timer) this.pause();
      else this.play();
    }
  };

  Stepper.prototype.play = function () {
    var self = this;
    if (this.frames.length < 2) return;
    if (this.index >= this.frames.length - 1) this.go(0); // from the end, play starts again
    this.timer = window.setInterval(function () {
      self.go(self.index + 1);
      if (self.index >= self.frames.length - 1) self.pause();
    }, PLAY_EVERY_MS);
    this.showPlaying(true);
  };

  Stepper.prototype.pause = function () {
    if (this.timer) window.clearInterval(this.timer);
    this.timer = null;
    this.showPlaying(false);
  };

  Stepper.prototype.showPlaying = function (playing) {
    if (!this.playButton) return;
    this.playButton.textContent = this.msg(playing ? "pause" : "play");
    this.playButton.setAttribute("aria-pressed", playing ? "true" : "false");
    this.root.setAttribute("data-playing", playing ? "true" : "false");
  };

  Stepper.prototype.go = function (index) {
    if (!this.frames.length) {
      this.showEmpty();
      return;
    }
    index = Math.max(0, Math.min(this.frames.length - 1, index));
    this.index = index;
    var frame = this.frames[index];
    this.mark(frame);
    this.tell(frame);
    this.slider.value = String(index + 1);
    this.part("position").textContent = frame.seq + " / " + this.events;
    this.root.querySelector("[data-action=prev]").disabled = index === 0;
    this.root.querySelector("[data-action=next]").disabled = index === this.frames.length - 1;
    this.box.setAttribute("data-index", String(index));
    this.box.setAttribute("data-seq", String(frame.seq));
    this.box.setAttribute("data-active", (frame.active || []).join(","));
  };

  Stepper.prototype.showEmpty = function () {
    var buttons = this.root.querySelectorAll("[data-action]");
    for (var i = 0; i < buttons.length; i++) buttons[i].disabled = true;
    this.slider.disabled = true;
    this.part("position").textContent = "0 / " + this.events;
    this.box.setAttribute("data-seq", "");
    this.box.setAttribute("data-active", "");
  };

  /* The diagram as it stood after the frame's event. */
  Stepper.prototype.mark = function (frame) {
    if (!this.viewer) return;
    var canvas = this.viewer.get("canvas");
    var registry = this.viewer.get("elementRegistry");
    var i;
    for (i = 0; i < this.marked.length; i++) {
      canvas.removeMarker(this.marked[i][0], this.marked[i][1]);
    }
    this.marked = [];
    var self = this;
    function add(ids, marker) {
      for (var j = 0; j < (ids || []).length; j++) {
        if (!registry.get(ids[j])) continue; // e.g. the engine's own start and end tasks
        canvas.addMarker(ids[j], marker);
        self.marked.push([ids[j], marker]);
      }
    }
    add(frame.done, "gl-done");
    add(frame.ran, "gl-ran");
    add(frame.active, "gl-active");
    this.follow(frame, registry);
  };

  /* On a phone the whole loop is too small to read: show the open task (or what just ran) at a
   * readable size, as the task page's diagram does; the rest is a drag away. On a wide screen the
   * view moves only when that element is out of sight. */
  Stepper.prototype.follow = function (frame, registry) {
    var focus = null;
    var ids = (frame.active || []).concat((frame.ran || []).slice().reverse());
    for (var i = 0; i < ids.length && !focus; i++) focus = registry.get(ids[i]);
    if (!focus) return;
    var canvas = this.viewer.get("canvas");
    var narrow = this.box.clientWidth < NARROW_PX;
    if (narrow && !this.zoomed) {
      canvas.zoom(READABLE_ZOOM);
      this.zoomed = true;
    }
    var box = canvas.viewbox();
    var cx = focus.x + focus.width / 2;
    var cy = focus.y + focus.height / 2;
    var inside = cx > box.x && cx < box.x + box.width && cy > box.y && cy < box.y + box.height;
    if (!narrow && inside) return;
    canvas.viewbox({
      x: cx - box.width / 2,
      y: cy - box.height / 2,
      width: box.width,
      height: box.height
    });
  };

  /* The frame in words: what happened, who, when, what was submitted, what decided, the
   * deadline in force and the open tasks. */
  Stepper.prototype.tell = function (frame) {
    this.part("summary").textContent = frame.summary || frame.type;
    this.part("time").textContent = frame.at_text || frame.at;
    this.part("time").setAttribute("datetime", frame.at);
    this.part("actor").textContent = frame.actor_name || frame.actor;
    this.list("active", frame.active_names || [], function (name) {
      return element("li", "", name);
    });
    this.part("due").textContent = frame.due_text || this.msg("none");
    this.fields(frame.fields || []);
    this.list("decisions", frame.decisions || [], function (d) {
      var item = element("li", "");
      item.appendChild(element("span", "stepper-rule", d.title));
      if (d.outputs_text) {
        item.appendChild(document.createTextNode(" "));
        item.appendChild(element("code", "", d.outputs_text));
      }
      if (d.description) item.appendChild(element("span", "muted stepper-why", d.description));
      return item;
    });
  };

  Stepper.prototype.list = function (role, items, make) {
    var node = this.part(role);
    clear(node);
    for (var i = 0; i < items.length; i++) node.appendChild(make(items[i]));
    this.showNone(role, items.length === 0);
  };

  Stepper.prototype.fields = function (fields) {
    var node = this.part("fields");
    clear(node);
    for (var i = 0; i < fields.length; i++) {
      node.appendChild(element("dt", "", fields[i].label));
      var value = element("dd", "", fields[i].value);
      value.setAttribute("data-name", fields[i].name);
      node.appendChild(value);
    }
    this.showNone("fields", fields.length === 0);
  };

  Stepper.prototype.showNone = function (role, none) {
    var node = this.part(role);
    var placeholder = this.part(role + "-none");
    node.hidden = none;
    if (placeholder) placeholder.hidden = !none;
  };

  function start() {
    var roots = document.querySelectorAll("[data-stepper]");
    for (var i = 0; i < roots.length; i++) new Stepper(roots[i]).start();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
