"use strict";
// Starts Redoc on /api/redoc/ (a file, not an inline script, for the Content-Security-Policy).
(function () {
  const container = document.getElementById("redoc-container");
  Redoc.init(container.dataset.schemaUrl, JSON.parse(container.dataset.settings || "{}"), container);
})();
