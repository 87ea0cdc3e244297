/*
 * Change lists keep each cell on one line (static/billing/admin.css); a cell whose text is cut with an ellipsis
 * gets its whole text as a title (shown on hover).
 */
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    var cells = document.querySelectorAll("#changelist table tbody td, #changelist table tbody th");
    Array.prototype.forEach.call(cells, function (cell) {
      if (cell.scrollWidth > cell.clientWidth && !cell.title) {
        cell.title = cell.textContent.trim();
      }
    });
  });
})();
