/* Follows a background job on the page: polls its JSON while it is queued or running, moves the
 * <progress> bar and the status line, and reloads the page when the job ends so the server renders
 * its result. Markup: <div class="job" data-job-url data-state data-msg-running="… {done} … {total}">.
 * This file holds no user-visible words. */
(function () {
  "use strict";

  function follow(box) {
    var url = box.getAttribute("data-job-url");
    var bar = box.querySelector("progress");
    var line = box.querySelector(".job-status");
    var running = box.getAttribute("data-msg-running") || "";
    if (!url || typeof window.fetch !== "function") return;
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (job) {
          if (job.state === "done" || job.state === "failed") {
            window.location.reload();
            return;
          }
          if (bar) { bar.max = job.total || 1; bar.value = job.done; }
          if (line) line.textContent = running.replace("{done}", job.done).replace("{total}", job.total);
          window.setTimeout(poll, 1000);
        })
        .catch(function () { window.setTimeout(poll, 5000); });
    }
    poll();
  }

  function start() {
    var boxes = document.querySelectorAll(".job[data-job-url]");
    for (var i = 0; i < boxes.length; i++) {
      var state = boxes[i].getAttribute("data-state");
      if (state === "queued" || state === "running") follow(boxes[i]);
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
