/* Draws a case's BPMN diagram with bpmn-js's NavigatedViewer and highlights the current task.
 *
 * Markup: <div class="diagram" data-diagram-url="..." data-current="element id"
 *              data-msg-unavailable="..." data-msg-failed="...">fallback text</div>
 * Messages come from the page, already translated; this file holds no user-visible words.
 * Without the viewer (not installed, blocked, old browser) the div shows a message instead. */
(function () {
  "use strict";

  function clear(container) {
    while (container.firstChild) container.removeChild(container.firstChild);
  }

  function say(container, text, state) {
    var note = document.createElement("p");
    note.className = "diagram-note";
    note.textContent = text || "";
    clear(container);
    container.appendChild(note);
    container.setAttribute("data-state", state);
  }

  function draw(container) {
    var url = container.getAttribute("data-diagram-url");
    var current = container.getAttribute("data-current");
    var unavailable = container.getAttribute("data-msg-unavailable");
    var failed = container.getAttribute("data-msg-failed") || unavailable;
    if (typeof window.BpmnJS !== "function" || typeof window.fetch !== "function" || !url) {
      say(container, unavailable, "unavailable");
      return;
    }
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/xml" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (xml) {
        clear(container);
        var viewer = new window.BpmnJS({ container: container });
        return viewer.importXML(xml).then(function () {
          var canvas = viewer.get("canvas");
          canvas.zoom("fit-viewport", "auto");
          var element = current && viewer.get("elementRegistry").get(current);
          if (element) {
            canvas.addMarker(current, "current");
            // On a phone the whole loop is too small to read: show the current step, its lane
            // and its timers at a readable size; the rest is a drag away.
            canvas.zoom(0.7);
            var box = canvas.viewbox();
            canvas.viewbox({
              x: element.x + element.width / 2 - box.width / 2,
              y: element.y + element.height / 2 - box.height / 2,
              width: box.width,
              height: box.height
            });
          }
          container.setAttribute("data-state", "ready");
        });
      })
      .catch(function () {
        say(container, failed, "failed");
      });
  }

  function start() {
    var containers = document.querySelectorAll(".diagram[data-diagram-url]");
    for (var i = 0; i < containers.length; i++) draw(containers[i]);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
