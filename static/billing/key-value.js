/*
 * Key/value rows (common/key_value.py): "Add a row" appends an empty row, "×" removes one (the last row left is
 * emptied instead). The rows post <name>-key and <name>-value; the server reads and checks them.
 */
(function () {
  "use strict";

  function emptyRow(table) {
    var rows = table.querySelectorAll("tr.key-value-row");
    var row = rows[rows.length - 1].cloneNode(true);
    Array.prototype.forEach.call(row.querySelectorAll("input"), function (input) { input.value = ""; });
    return row;
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!target || !target.closest) {
      return;
    }
    var box = target.closest(".key-value");
    if (!box) {
      return;
    }
    var body = box.querySelector("tbody");
    if (target.classList.contains("key-value-add")) {
      event.preventDefault();
      var row = emptyRow(box);
      body.appendChild(row);
      row.querySelector("input").focus();
      box.dispatchEvent(new Event("input", {bubbles: true})); // live previews read the rows again
    } else if (target.classList.contains("key-value-remove")) {
      event.preventDefault();
      var current = target.closest("tr");
      if (body.querySelectorAll("tr.key-value-row").length > 1) {
        current.remove();
      } else {
        Array.prototype.forEach.call(current.querySelectorAll("input"), function (input) { input.value = ""; });
      }
      box.dispatchEvent(new Event("input", {bubbles: true}));
    }
  });
})();
