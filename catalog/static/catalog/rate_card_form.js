/*
 * The rate card form shows only what the chosen price and entitlement types use (the plan page's rate card
 * inlines and the rate card's own page). The table of which type uses which field is the server's
 * (catalog.rules.PRICE_FIELDS / ENTITLEMENT_FIELDS, in the selects' data-fields attribute): a field another type
 * uses is hidden and disabled, so it is not posted (the server refuses values in fields the type does not use);
 * switching back shows what was typed. "More" opens by itself when one of its fields holds a value.
 */
(function () {
  "use strict";

  function containerOf(element) {
    return element.closest(".inline-related") || element.closest("form");
  }

  function allNames(table) {
    var names = {};
    Object.keys(table).forEach(function (key) {
      table[key].forEach(function (name) { names[name] = true; });
    });
    return Object.keys(names);
  }

  function targets(container, name) {
    var found = Array.prototype.slice.call(container.querySelectorAll(".form-row.field-" + name +
      ", .fieldBox.field-" + name));
    if (name === "tiers") {
      found = found.concat(Array.prototype.slice.call(container.querySelectorAll(".form-row.field-tiers_shown")));
      var group = document.getElementById("tiers-group");
      if (group && container.contains(group)) {
        found.push(group);
      }
    }
    return found;
  }

  function setShown(element, shown, disableInputs) {
    element.hidden = !shown;
    element.classList.toggle("not-for-this-type", !shown);
    if (disableInputs) {
      Array.prototype.forEach.call(element.querySelectorAll("input, select, textarea"), function (input) {
        input.disabled = !shown;
      });
    }
  }

  function apply(select) {
    var table;
    try {
      table = JSON.parse(select.dataset.fields);
    } catch (error) {
      return;
    }
    var container = containerOf(select);
    if (!container) {
      return;
    }
    var used = table[select.value] || [];
    allNames(table).forEach(function (name) {
      var shown = used.indexOf(name) !== -1;
      targets(container, name).forEach(function (element) {
        // The tier table keeps its management form posted; its rows are only hidden.
        setShown(element, shown, element.id !== "tiers-group");
      });
    });
    // A multi-field line (minimum and maximum spend) disappears when all of its boxes do.
    Array.prototype.forEach.call(container.querySelectorAll(".form-row"), function (row) {
      var boxes = row.querySelectorAll(".fieldBox");
      if (!boxes.length) {
        return;
      }
      var anyShown = Array.prototype.some.call(boxes, function (box) { return !box.hidden; });
      row.hidden = !anyShown;
    });
  }

  function openMoreWithValues(root) {
    Array.prototype.forEach.call(root.querySelectorAll("fieldset.rate-card-more, details.rate-card-more"),
      function (fieldset) {
        var details = fieldset.tagName === "DETAILS" ? fieldset : fieldset.querySelector("details");
        if (!details) {
          return;
        }
        var filled = Array.prototype.some.call(fieldset.querySelectorAll("input[type=text]"), function (input) {
          return input.value.trim() !== "";
        });
        if (filled) {
          details.open = true;
        }
      });
  }

  function applyAll(root) {
    Array.prototype.forEach.call(root.querySelectorAll("select[data-fields]"), function (select) {
      if (!select.closest(".empty-form")) {
        apply(select);
      }
    });
    openMoreWithValues(root);
  }

  document.addEventListener("change", function (event) {
    if (event.target && event.target.matches && event.target.matches("select[data-fields]")) {
      apply(event.target);
    }
  });
  document.addEventListener("formset:added", function (event) {
    if (event.target) {
      applyAll(event.target);
    }
  });
  document.addEventListener("DOMContentLoaded", function () { applyAll(document); });
})();
