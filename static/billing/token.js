"use strict";
// The page that shows a new API token once: a click selects it, "Copy" puts it on the clipboard.
// (A file rather than onclick="" attributes, which the Content-Security-Policy refuses.)
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-select-on-click]").forEach(function (field) {
    field.addEventListener("click", function () { field.select(); });
  });
  document.querySelectorAll("[data-copy-from]").forEach(function (button) {
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(document.getElementById(button.dataset.copyFrom).value);
    });
  });
});
