/* 走访: the grid's walk (templates/campaigns/walk.html, webapp/campaign_walk.py).
 *
 * Each save becomes a visit with a client id made here, put in a queue in localStorage FIRST and
 * only then sent as JSON (X-CSRFToken header). The server answers a client id it knows with the
 * visit it already has, so a resend never doubles a visit. A visit leaves the queue when the
 * server has it (201/200) or refuses it for good (400 per field, 403, 404, 409: shown on its
 * household). A network failure or a server error keeps the queue, shows "离线：N 条待发送", and
 * the queue is sent again on the `online` event, on page load and every half minute. An expired
 * CSRF token is renewed once from the page's token route; an ended sign-in keeps the queue and
 * shows a sign-in link that comes back here, where the queue is sent on load.
 *
 * Messages come from the page, already translated (data-msg-*); this file holds no user-visible
 * words. */
(function () {
  "use strict";

  var root = document.getElementById("walk");
  if (!root) return;
  var KEY = root.getAttribute("data-queue-key");
  var GRID = root.getAttribute("data-grid");
  var RETRY_MS = 30000;
  var sending = false;
  var signedOut = false;
  var csrfToken = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function msg(name) {
    return root.getAttribute("data-msg-" + name) || "";
  }

  function fill(text, values) {
    return text.replace(/\{(\w+)\}/g, function (all, name) {
      return Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : all;
    });
  }

  function clientId() {
    if (window.crypto && typeof window.crypto.randomUUID === "function") {
      return window.crypto.randomUUID();
    }
    var bytes = new Uint8Array(16);
    if (window.crypto && window.crypto.getRandomValues) {
      window.crypto.getRandomValues(bytes);
    } else {
      for (var i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    return Array.prototype.map
      .call(bytes, function (b) {
        return (b + 256).toString(16).slice(1);
      })
      .join("");
  }

  // ------------------------------------------------------------------ the queue

  var memory = []; // when localStorage is unavailable (private mode): this page's life only

  function load() {
    try {
      var text = window.localStorage.getItem(KEY);
      var list = text ? JSON.parse(text) : [];
      return Array.isArray(list) ? list : [];
    } catch (e) {
      return memory.slice();
    }
  }

  function store(list) {
    memory = list.slice();
    try {
      if (list.length) window.localStorage.setItem(KEY, JSON.stringify(list));
      else window.localStorage.removeItem(KEY);
    } catch (e) {
      /* full or blocked: the in-memory copy still sends */
    }
  }

  function drop(id) {
    store(
      load().filter(function (v) {
        return v.client_id !== id;
      })
    );
  }

  function showQueue() {
    var banner = root.querySelector('[data-testid="queue"]');
    var count = load().length;
    if (count && !sending) {
      banner.textContent = fill(msg("queued"), { n: count });
      banner.hidden = false;
    } else if (count) {
      banner.textContent = msg("sending");
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
    root.setAttribute("data-queued", String(count));
    Array.prototype.forEach.call(document.querySelectorAll('[data-testid="household"]'), function (row) {
      var waiting = load().some(function (v) {
        return String(v.household.number) === row.getAttribute("data-number");
      });
      row.classList.toggle("walk-pending", waiting);
    });
  }

  // ------------------------------------------------------------------ the page

  function rowOf(number) {
    return document.querySelector('[data-testid="household"][data-number="' + number + '"]');
  }

  function status(row, text) {
    var line = row && row.querySelector('[data-testid="status"]');
    if (line) line.textContent = text;
  }

  function clearErrors(row) {
    Array.prototype.forEach.call(row.querySelectorAll(".field-error"), function (p) {
      p.hidden = true;
      p.textContent = "";
    });
    Array.prototype.forEach.call(row.querySelectorAll(".has-error"), function (el) {
      el.classList.remove("has-error");
    });
    var top = row.querySelector('[data-testid="form-errors"]');
    if (top) top.remove();
  }

  function showErrors(row, error) {
    var fields = (error && error.fields) || {};
    var placed = false;
    Object.keys(fields).forEach(function (key) {
      var name = key.replace(/^data\./, "");
      var slot = row.querySelector('.field-error[data-field="' + name + '"]');
      if (slot) {
        slot.textContent = fields[key];
        slot.hidden = false;
        slot.setAttribute("data-testid", "error-" + name);
        var box = slot.previousElementSibling;
        if (box) box.classList.add("has-error");
        placed = true;
      }
    });
    status(row, msg("refused") + " " + ((error && error.message) || ""));
    return placed;
  }

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  // The town's time, as the server writes it on the page (Asia/Shanghai: UTC+8, no summer
  // time), whatever zone the phone is set to.
  var SHANGHAI_MS = 8 * 3600 * 1000;

  function shortTime(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    d = new Date(d.getTime() + SHANGHAI_MS);
    return (
      d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes())
    );
  }

  function markDone(row, visit) {
    row.setAttribute("data-done", "yes");
    row.classList.add("walk-done");
    var mark = row.querySelector('[data-testid="mark"]');
    if (mark) {
      mark.textContent = msg("visited");
      mark.className = "badge ok";
    }
    var by = row.querySelector('[data-testid="visited-by"]');
    if (by) {
      by.textContent = fill(msg("done-by"), {
        name: visit.recorded_by_name || visit.recorded_by,
        time: shortTime(visit.at),
      });
    }
    if (visit.case) {
      var cases = row.querySelector('[data-testid="cases"]');
      var known = Array.prototype.some.call(cases.querySelectorAll("a"), function (a) {
        return a.textContent === visit.case;
      });
      if (!known) {
        var link = document.createElement("a");
        link.href = root.getAttribute("data-case-url").replace("NUMBER", encodeURIComponent(visit.case));
        link.textContent = visit.case;
        link.setAttribute("data-testid", "case-link");
        cases.appendChild(document.createTextNode(" "));
        cases.appendChild(link);
      }
      cases.hidden = false;
    }
    status(row, msg("saved"));
  }

  function showProgress(progress) {
    if (!progress) return;
    var box = root.querySelector('[data-testid="progress"]');
    box.setAttribute("data-covered", progress.covered);
    box.setAttribute("data-total", progress.total);
    box.querySelector('[data-testid="progress-text"]').textContent = fill(msg("progress"), {
      done: progress.covered,
      total: progress.total,
    });
    var bar = box.querySelector("progress");
    bar.max = progress.total || 1;
    bar.value = progress.covered;
  }

  function showSignedOut() {
    signedOut = true;
    root.querySelector('[data-testid="signin"]').hidden = false;
  }

  // ------------------------------------------------------------------ sending

  function post(visit) {
    return fetch(root.getAttribute("data-visits-url"), {
      method: "POST",
      credentials: "same-origin",
      redirect: "manual",
      headers: {
        "Content-Type": "application/json",
        Accept: "application/json",
        "X-CSRFToken": csrfToken,
      },
      body: JSON.stringify({ household: visit.household, data: visit.data, client_id: visit.client_id }),
    });
  }

  function answer(response) {
    var type = response.headers.get("Content-Type") || "";
    if (type.indexOf("application/json") === -1) return Promise.resolve({ status: response.status, body: null, type: response.type });
    return response.json().then(
      function (body) {
        return { status: response.status, body: body, type: response.type };
      },
      function () {
        return { status: response.status, body: null, type: response.type };
      }
    );
  }

  function renewToken() {
    return fetch(root.getAttribute("data-token-url"), {
      credentials: "same-origin",
      redirect: "manual",
      headers: { Accept: "application/json" },
    })
      .then(answer)
      .then(function (got) {
        if (got.status === 200 && got.body && got.body.csrf) {
          csrfToken = got.body.csrf;
          var meta = document.querySelector('meta[name="csrf-token"]');
          if (meta) meta.content = csrfToken;
          return true;
        }
        if (got.status === 401 || got.type === "opaqueredirect") showSignedOut();
        return false;
      });
  }

  // One visit: resolves "sent", "refused", "keep" (try later) or "stop" (signed out).
  function sendOne(visit, renewed) {
    var row = rowOf(visit.household.number);
    return post(visit)
      .then(answer)
      .then(function (got) {
        var code = got.body && got.body.error && got.body.error.code;
        if (got.status === 200 || got.status === 201) {
          drop(visit.client_id);
          if (row) {
            clearErrors(row);
            markDone(row, got.body);
            reset(row.querySelector("form[data-walk-form]"));
          }
          showProgress(got.body.progress);
          return "sent";
        }
        if (got.status === 401 || got.type === "opaqueredirect") {
          showSignedOut();
          return "stop";
        }
        if (got.status === 400 && code === "csrf") {
          if (renewed) return "keep";
          return renewToken().then(function (ok) {
            return ok ? sendOne(visit, true) : signedOut ? "stop" : "keep";
          });
        }
        if (got.status === 409 && code !== "client_id_taken") {
          return "keep"; // the grid was busy (others saving at once): send it again later
        }
        if (got.status >= 400 && got.status < 500 && got.status !== 408 && got.status !== 429 && got.body) {
          drop(visit.client_id); // refused for good: sending it again changes nothing
          if (row) {
            clearErrors(row);
            restore(row.querySelector("form[data-walk-form]"), visit.data);
            showErrors(row, got.body.error);
          }
          return "refused";
        }
        return "keep"; // a server error or a proxy's page: later
      })
      .catch(function () {
        return "keep"; // the network is gone
      });
  }

  function flush() {
    if (sending || signedOut) return Promise.resolve();
    var queue = load();
    if (!queue.length) {
      showQueue();
      return Promise.resolve();
    }
    sending = true;
    showQueue();
    var i = 0;
    var stopped = false;
    var tried = queue.map(function (v) {
      return v.client_id;
    });
    function next() {
      if (i >= queue.length) return Promise.resolve();
      var visit = queue[i++];
      return sendOne(visit, false).then(function (outcome) {
        if (outcome === "keep" || outcome === "stop") {
          stopped = true;
          var row = rowOf(visit.household.number);
          if (outcome === "keep") status(row, msg("waiting"));
          return;
        }
        return next();
      });
    }
    return next().then(function () {
      sending = false;
      showQueue();
      var more = load().some(function (v) {
        return tried.indexOf(v.client_id) === -1;
      });
      if (more && !stopped) return flush(); // saved while these were on their way
    });
  }

  // ------------------------------------------------------------------ the forms

  function collect(form) {
    var data = {};
    Array.prototype.forEach.call(form.querySelectorAll("[data-item]"), function (input) {
      var name = input.getAttribute("data-item");
      if (input.getAttribute("data-kind") === "boolean") {
        data[name] = input.checked;
      } else {
        var text = input.value.replace(/\r\n/g, "\n").trim();
        if (text) data[name] = text;
      }
    });
    return data;
  }

  function restore(form, data) {
    if (!form) return;
    Array.prototype.forEach.call(form.querySelectorAll("[data-item]"), function (input) {
      var value = data ? data[input.getAttribute("data-item")] : undefined;
      if (input.getAttribute("data-kind") === "boolean") input.checked = value === true;
      else input.value = typeof value === "string" ? value : "";
    });
  }

  function reset(form) {
    restore(form, null);
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[data-walk-form]"), function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var number = parseInt(form.querySelector('input[name="number"]').value, 10);
      var visit = {
        household: { grid: GRID, number: number },
        data: collect(form),
        client_id: clientId(),
        saved_at: new Date().toISOString(),
      };
      var queue = load();
      queue.push(visit);
      store(queue); // first on the phone, then to the server
      var row = rowOf(number);
      clearErrors(row);
      status(row, msg("sending"));
      showQueue();
      flush();
    });
  });

  window.addEventListener("online", function () {
    flush();
  });
  window.setInterval(function () {
    if (load().length) flush();
  }, RETRY_MS);
  showQueue();
  flush();
})();
