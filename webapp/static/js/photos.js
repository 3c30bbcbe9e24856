/* Photos (照片) of a form: each chosen photo is uploaded at once (POST data-upload-url, with the
 * page's CSRF token), with a progress bar; once stored, a thumbnail and a hidden input
 * `data-name` = its sha256 join the form, which then sends only the hashes. The form's submit
 * buttons wait while an upload runs.
 *
 * Markup: templates/photos/_macros.html (picker). Messages come from the page, already
 * translated (data-msg-*); this file holds no user-visible words. */
(function () {
  "use strict";

  function message(picker, name) {
    return picker.getAttribute("data-msg-" + name) || "";
  }

  function submits(form) {
    return form ? form.querySelectorAll("button[type=submit], input[type=submit]") : [];
  }

  function setBusy(picker) {
    var form = picker.closest("form");
    var busy = picker.querySelectorAll("li[data-uploading]").length > 0;
    Array.prototype.forEach.call(submits(form), function (button) {
      button.disabled = busy;
    });
    picker.setAttribute("data-busy", busy ? "1" : "0");
  }

  function removeButton(picker, item) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "link";
    button.setAttribute("data-photo-remove", "");
    button.textContent = message(picker, "remove");
    item.appendChild(button);
  }

  function label(picker, n) {
    return message(picker, "photo").replace("{n}", String(n));
  }

  function count(picker) {
    return picker.querySelectorAll("li.photo").length;
  }

  function upload(picker, file, keep) {
    var list = picker.querySelector("[data-photo-list]");
    var item = document.createElement("li");
    item.className = "photo uploading";
    item.setAttribute("data-uploading", "");
    var note = document.createElement("span");
    note.className = "photo-note";
    note.textContent = message(picker, "uploading");
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    item.appendChild(note);
    item.appendChild(bar);
    list.appendChild(item);
    setBusy(picker);

    var body = new FormData();
    body.append("file", file);
    body.append("keep_location", keep ? "true" : "false");
    var request = new XMLHttpRequest();
    request.open("POST", picker.getAttribute("data-upload-url"));
    var token = document.querySelector("meta[name=csrf-token]");
    if (token) request.setRequestHeader("X-CSRFToken", token.getAttribute("content"));
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", function (event) {
      if (event.lengthComputable) bar.value = Math.round((event.loaded / event.total) * 100);
    });
    request.addEventListener("load", function () {
      var answer = null;
      try {
        answer = JSON.parse(request.responseText);
      } catch (ignored) {
        answer = null;
      }
      if (request.status === 201 && answer && answer.sha256) {
        done(picker, item, answer);
      } else if (request.status === 413) {
        failed(picker, item, message(picker, "too-large"));
      } else {
        failed(picker, item, (answer && answer.error && answer.error.message) || message(picker, "failed"));
      }
    });
    request.addEventListener("error", function () {
      failed(picker, item, message(picker, "failed"));
    });
    request.send(body);
  }

  function done(picker, item, answer) {
    while (item.firstChild) item.removeChild(item.firstChild);
    item.removeAttribute("data-uploading");
    item.className = "photo";
    item.setAttribute("data-sha256", answer.sha256);
    var image = document.createElement("img");
    image.src = answer.url;
    image.width = 88;
    image.height = 88;
    image.alt = label(picker, count(picker));
    var hidden = document.createElement("input");
    hidden.type = "hidden";
    hidden.name = picker.getAttribute("data-name");
    hidden.value = answer.sha256;
    item.appendChild(image);
    item.appendChild(hidden);
    removeButton(picker, item);
    setBusy(picker);
  }

  function failed(picker, item, text) {
    while (item.firstChild) item.removeChild(item.firstChild);
    item.removeAttribute("data-uploading");
    item.className = "photo-failed";
    var note = document.createElement("span");
    note.className = "field-error";
    note.setAttribute("role", "alert");
    note.textContent = text;
    item.appendChild(note);
    removeButton(picker, item);
    setBusy(picker);
  }

  function start(picker) {
    var input = picker.querySelector("[data-photo-file]");
    var keep = picker.querySelector("[data-photo-keep]");
    var max = parseInt(picker.getAttribute("data-max"), 10) || 6;
    if (!input || typeof window.FormData !== "function") return;
    input.addEventListener("change", function () {
      Array.prototype.forEach.call(input.files || [], function (file) {
        if (count(picker) >= max) {
          var list = picker.querySelector("[data-photo-list]");
          var item = document.createElement("li");
          list.appendChild(item);
          failed(picker, item, message(picker, "too-many"));
          return;
        }
        upload(picker, file, keep && keep.checked);
      });
      input.value = "";  // choosing the same photo again uploads it again
    });
    picker.addEventListener("click", function (event) {
      var button = event.target.closest("[data-photo-remove]");
      if (!button) return;
      var item = button.closest("li");
      if (item) item.parentNode.removeChild(item);
      setBusy(picker);
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-photo-picker]"), start);
})();
