/* The campaign launch form (templates/campaigns/new.html), made handier where scripts run.
 *
 * Without this file the page still works: the checklist's rows are plain fields (item-N-label,
 * item-N-type, item-N-opens) and a "more rows" button asks the server for blank ones. With it:
 * - rows are added and removed in place, and a text row cannot tick "opens a case";
 * - on submit the rows become the checklist's JSON Schema in the hidden `checklist` field
 *   (type object; properties item_1.. each with its title, a boolean with x-opens-case where
 *   ticked, or a string of at most 500 characters; nothing required), which the server reads;
 * - ticking the town, a village or a district ticks and locks everything under it: it covers
 *   its grids, so only the unit itself is sent.
 */
(function () {
  "use strict";
  var form = document.getElementById("cp-form");
  if (!form) return;
  var list = document.getElementById("cp-items");
  var hidden = document.getElementById("cp-checklist");
  var addButton = document.getElementById("cp-add");
  var more = form.querySelector(".cp-more");
  var ROW = /^item-(\d+)-(label|type|opens)$/;
  var TEXT_MAX = 500;

  function rows() {
    return Array.prototype.slice.call(list.querySelectorAll(".cp-item"));
  }

  function field(row, role) {
    return row.querySelector('[data-role="' + role + '"]');
  }

  function syncRow(row) {
    var opens = field(row, "opens");
    var text = field(row, "type").value === "string";
    opens.disabled = text;
    if (text) opens.checked = false;
  }

  function nextIndex() {
    var top = 0;
    Array.prototype.forEach.call(list.querySelectorAll("[name]"), function (el) {
      var match = ROW.exec(el.name);
      if (match) top = Math.max(top, parseInt(match[1], 10));
    });
    return top + 1;
  }

  function wire(row) {
    var remove = field(row, "remove");
    remove.hidden = false;
    remove.addEventListener("click", function () {
      if (rows().length > 1) {
        row.remove();
      } else {
        field(row, "label").value = "";
        field(row, "opens").checked = false;
      }
    });
    field(row, "type").addEventListener("change", function () {
      syncRow(row);
    });
    syncRow(row);
  }

  function addRow() {
    var last = rows()[rows().length - 1];
    var row = last.cloneNode(true);
    var n = nextIndex();
    row.classList.remove("has-error");
    Array.prototype.forEach.call(row.querySelectorAll(".field-error"), function (el) {
      el.remove();
    });
    Array.prototype.forEach.call(row.querySelectorAll("[name], [id], [for]"), function (el) {
      ["name", "id", "for"].forEach(function (attr) {
        var value = el.getAttribute(attr);
        if (value) el.setAttribute(attr, value.replace(/^item-\d+-/, "item-" + n + "-"));
      });
      el.removeAttribute("aria-invalid");
      el.removeAttribute("aria-describedby");
    });
    field(row, "label").value = "";
    field(row, "type").value = "boolean";
    field(row, "opens").checked = false;
    list.appendChild(row);
    wire(row);
    field(row, "label").focus();
  }

  function schema() {
    var properties = {};
    var count = 0;
    rows().forEach(function (row) {
      var label = field(row, "label").value.trim();
      var type = field(row, "type").value;
      var opens = field(row, "opens").checked;
      if (!label && !opens) return; // a blank row
      count += 1;
      var item = { title: label, type: type };
      if (type === "string") item.maxLength = TEXT_MAX;
      if (opens && type === "boolean") item["x-opens-case"] = true;
      properties["item_" + count] = item;
    });
    return { type: "object", properties: properties };
  }

  rows().forEach(wire);
  addButton.hidden = false;
  addButton.addEventListener("click", addRow);
  // Rows are added here instead; gone, it can no longer be the button Enter presses.
  if (more) more.remove();
  form.addEventListener("submit", function () {
    hidden.value = JSON.stringify(schema());
  });

  // ---- the targets' tree: a unit covers what is under it
  var town = form.querySelector('.cp-town input[name="targets"]');
  var tree = form.querySelector(".cp-tree");

  function under(box) {
    if (box === town) return tree.querySelectorAll('input[name="targets"]');
    var holder = box.closest("li");
    return holder ? holder.querySelectorAll('input[name="targets"]') : [];
  }

  function cover(box) {
    Array.prototype.forEach.call(under(box), function (other) {
      if (other === box) return;
      other.checked = box.checked;
      other.disabled = box.checked;
    });
  }

  var boxes = form.querySelectorAll('input[name="targets"]');
  Array.prototype.forEach.call(boxes, function (box) {
    box.addEventListener("change", function () {
      cover(box);
    });
  });
  Array.prototype.forEach.call(boxes, function (box) {
    if (box.checked && !box.disabled) cover(box);
  });
})();
