"""Key/value pairs typed by people (meter group-by, feature filters, customer metadata): a table of name/value
rows with add/remove buttons (``static/billing/key-value.js``) instead of a raw JSON text area.

The widget posts ``<name>-key`` and ``<name>-value`` repeated, one pair per row; :class:`KeyValueField` reads
them into a ``dict`` (or refuses them with a form error naming the row). A post that still carries the whole
value as JSON text under ``<name>`` (scripts, older forms) is read as before. Whatever comes out is then checked
by the rules of the form that uses it (``validate_meter``, ``feature_filter_problems``, ``customer_problems``).

Suggestions — the names and values seen in recent events or records — are offered through ``<datalist>``s from a
callable given to the widget, so the page proposes what the data holds without limiting what may be typed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from itertools import zip_longest
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

MAX_PAIRS = 100
MAX_TEXT = 200
Suggestions = Callable[[], tuple[Iterable[str], Iterable[str]]]


def _pairs_of(value: Any) -> list[tuple[str, str]]:
    """What to show in the rows: a dict, posted pairs, or JSON text (shown as pairs when it is an object)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            return []
    if isinstance(value, dict):
        return [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [(str(k), str(v)) for k, v in value]
    return []


class KeyValueWidget(forms.Widget):
    template_name = "admin/widgets/key_value.html"

    def __init__(self, attrs: dict[str, Any] | None = None, *, key_label: str = "name", value_label: str = "value",
                 suggestions: Suggestions | None = None) -> None:
        super().__init__(attrs)
        self.key_label, self.value_label, self.suggestions = key_label, value_label, suggestions

    class Media:
        js = ("billing/key-value.js",)
        css = {"all": ("billing/admin.css",)}

    def format_value(self, value: Any) -> Any:
        return _pairs_of(value)

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        keys: list[str] = []
        values: list[str] = []
        if self.suggestions is not None:
            found_keys, found_values = self.suggestions()
            keys, values = sorted(set(found_keys))[:MAX_PAIRS * 2], sorted(set(found_values))[:MAX_PAIRS * 2]
        widget = context["widget"]
        widget.update({"pairs": widget["value"] or [], "key_label": self.key_label, "value_label": self.value_label,
                       "key_options": keys, "value_options": values})
        return context

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if f"{name}-key" in data or f"{name}-value" in data:
            keys, values = data.getlist(f"{name}-key"), data.getlist(f"{name}-value")
            return [(k or "", v or "") for k, v in zip_longest(keys, values)]
        return data.get(name)

    def value_omitted_from_data(self, data: Any, files: Any, name: str) -> bool:
        return name not in data and f"{name}-key" not in data and f"{name}-value" not in data


class KeyValueField(forms.Field):
    """A ``dict`` of name → text from :class:`KeyValueWidget` rows (or JSON text). Empty rows are skipped;
    a value without a name, a repeated name, NUL characters, over-long text and more than ``MAX_PAIRS`` rows
    are form errors."""

    widget = KeyValueWidget
    default_error_messages = {
        "json": "Enter the pairs in the rows (or a JSON object of name → value).",
        "too_many": f"At most {MAX_PAIRS} pairs.",
    }

    def __init__(self, *, suggestions: Suggestions | None = None, key_label: str = "name",
                 value_label: str = "value", **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", KeyValueWidget(suggestions=suggestions, key_label=key_label,
                                                   value_label=value_label))
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        return value

    def to_python(self, value: Any) -> dict[str, Any]:
        if value in (None, ""):
            return {}
        if isinstance(value, dict):
            return value
        if isinstance(value, str):  # the whole value as JSON text
            if len(value) > MAX_PAIRS * MAX_TEXT * 2 or "\x00" in value:
                raise ValidationError(self.error_messages["json"], code="json")
            try:
                parsed = json.loads(value)
            except ValueError:
                raise ValidationError(self.error_messages["json"], code="json") from None
            if not isinstance(parsed, dict):
                raise ValidationError(self.error_messages["json"], code="json")
            return parsed
        if not isinstance(value, list | tuple):
            raise ValidationError(self.error_messages["json"], code="json")
        if len(value) > MAX_PAIRS + 1:  # the rows shown plus one empty row to type in
            raise ValidationError(self.error_messages["too_many"], code="too_many")
        result: dict[str, str] = {}
        errors: list[str] = []
        for row, (raw_key, raw_value) in enumerate(value, start=1):
            key, text = str(raw_key).strip(), str(raw_value).strip()
            if not key and not text:
                continue
            if "\x00" in key or "\x00" in text:
                errors.append(f"row {row}: remove the NUL character")
            elif len(key) > MAX_TEXT or len(text) > MAX_TEXT:
                errors.append(f"row {row}: at most {MAX_TEXT} characters each")
            elif not key:
                errors.append(f"row {row}: the value “{text}” needs a name")
            elif key in result:
                errors.append(f"row {row}: “{key}” is already above")
            else:
                result[key] = text
        if len(result) > MAX_PAIRS:
            errors.append(str(self.error_messages["too_many"]))
        if errors:
            raise ValidationError(errors, code="invalid")
        return result

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return self.to_python(data) != (initial or {})
        except ValidationError:
            return True
