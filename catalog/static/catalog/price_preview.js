/*
 * Live price preview for the rate card form (its own page) and the plan page's rate card inlines.
 *
 * While someone types, the "price" line under the price fields shows the sentence the server makes from the
 * typed values (catalog.display.price_summary, through the admin's price-preview URL: one rule, no copy of it
 * here), or what is wrong with them ("unit amount: Use a dot as the decimal separator (0.00002)."). Nothing is
 * saved. Without JavaScript the line shows the saved price.
 */
(function () {
  "use strict";

  var FIELDS = ["price_type", "payment_term", "feature", "amount", "unit_amount", "quantity_per_package",
    "free_quantity", "minimum_spend", "maximum_spend"];
  var TIER_FIELDS = ["position", "up_to", "unit_amount", "flat_amount"];
  var timers = new WeakMap();
  var requests = new WeakMap();

  function config() {
    return document.getElementById("price-preview-config");
  }

  function containers(cfg) {
    if (cfg.dataset.mode === "ratecard") {
      var form = document.getElementById("ratecard_form");
      return form ? [form] : [];
    }
    return Array.prototype.slice.call(
      document.querySelectorAll("#rate_cards-group .inline-related:not(.empty-form)"));
  }

  function containerOf(cfg, element) {
    if (cfg.dataset.mode === "ratecard") {
      return element.closest("#ratecard_form");
    }
    return element.closest("#rate_cards-group .inline-related:not(.empty-form)");
  }

  function prefixOf(cfg, container) {
    return cfg.dataset.mode === "ratecard" ? "" : container.id + "-";
  }

  function field(container, name) {
    return container.querySelector('[name="' + name + '"]');
  }

  function pageValue(selector, fallback) {
    var element = document.querySelector(selector);
    return element ? element.value : (fallback || "");
  }

  function query(cfg, container) {
    var prefix = prefixOf(cfg, container);
    if (!field(container, prefix + "price_type")) {
      return null; // read-only page: the saved price is already shown
    }
    var params = new URLSearchParams();
    FIELDS.forEach(function (name) {
      var element = field(container, prefix + name);
      if (element && !element.disabled) { // a field the chosen price type does not use is disabled: not a value
        params.append(name, element.value);
      }
    });
    params.append("currency", pageValue("#id_currency", cfg.dataset.currency));
    params.append("cadence", pageValue("#id_billing_cadence", cfg.dataset.cadence));
    if (cfg.dataset.mode === "ratecard") {
      params.append("rate_card", cfg.dataset.rateCard || "");
      params.append("tiers", "1");
      var rows = document.querySelectorAll("#tiers-group tr.form-row:not(.empty-form)");
      Array.prototype.forEach.call(rows, function (row) {
        var deleted = row.querySelector('input[name$="-DELETE"]');
        if (deleted && deleted.checked) {
          return;
        }
        var values = TIER_FIELDS.map(function (name) {
          var element = row.querySelector('[name="' + row.id + "-" + name + '"]');
          return element ? element.value : "";
        });
        if (!values[1].trim() && !values[2].trim() && !values[3].trim()) {
          return; // an empty new row is not a tier
        }
        TIER_FIELDS.forEach(function (name, i) {
          params.append("tier_" + name, values[i]);
        });
      });
    } else {
      var id = field(container, prefix + "id");
      params.append("rate_card", id ? id.value : "");
      // The plan page's tier table (catalog.forms.TierTableWidget), when the price type shows it.
      var table = container.querySelector(".field-tiers .tier-table");
      if (table && !table.closest("[hidden]")) {
        params.append("tiers", "1");
        Array.prototype.forEach.call(table.querySelectorAll("tr.key-value-row"), function (row) {
          var cells = ["up_to", "unit_amount", "flat_amount"].map(function (name) {
            var element = row.querySelector('[name="' + prefix + "tiers-" + name + '"]');
            return element ? element.value : "";
          });
          if (!cells[0].trim() && !cells[1].trim() && !cells[2].trim()) {
            return;
          }
          params.append("tier_up_to", cells[0]);
          params.append("tier_unit_amount", cells[1]);
          params.append("tier_flat_amount", cells[2]);
        });
      }
    }
    return params;
  }

  function show(container, text, isError) {
    var target = container.querySelector(".field-price_preview .readonly");
    if (!target) {
      return;
    }
    target.textContent = text;
    target.classList.toggle("price-preview-error", isError);
    target.style.color = isError ? "var(--error-fg, #ba2121)" : "";
  }

  function update(cfg, container) {
    var params = query(cfg, container);
    if (!params) {
      return;
    }
    if (!params.get("price_type")) {
      show(container, "no price", false);
      return;
    }
    var previous = requests.get(container);
    if (previous) {
      previous.abort();
    }
    var controller = new AbortController();
    requests.set(container, controller);
    fetch(cfg.dataset.url + "?" + params.toString(), {
      credentials: "same-origin",
      headers: {"Accept": "application/json"},
      signal: controller.signal,
    })
      .then(function (response) { return response.json(); })
      .then(function (body) {
        if (body.errors && body.errors.length) {
          show(container, body.errors.join("; "), true);
        } else {
          show(container, body.summary, false);
        }
      })
      .catch(function (error) {
        if (error.name !== "AbortError") {
          show(container, "(preview unavailable)", true);
        }
      });
  }

  function schedule(cfg, container) {
    clearTimeout(timers.get(container));
    timers.set(container, setTimeout(function () { update(cfg, container); }, 250));
  }

  function onEdit(event) {
    var cfg = config();
    if (!cfg || !event.target || !event.target.closest) {
      return;
    }
    if (event.target.id === "id_currency" || event.target.id === "id_billing_cadence") {
      containers(cfg).forEach(function (container) { schedule(cfg, container); });
      return;
    }
    var container = containerOf(cfg, event.target);
    if (container) {
      schedule(cfg, container);
    }
  }

  document.addEventListener("input", onEdit);
  document.addEventListener("change", onEdit);
  document.addEventListener("formset:added", function (event) {
    var cfg = config();
    var container = cfg && event.target && event.target.closest ? containerOf(cfg, event.target) : null;
    if (container) {
      schedule(cfg, container);
    }
  });
  document.addEventListener("DOMContentLoaded", function () {
    var cfg = config();
    if (cfg) {
      containers(cfg).forEach(function (container) { update(cfg, container); });
    }
  });
})();
