"""Form fields shared by the apps: money and quantities typed by people.

A browser's ``<input type="number">`` parses what a person types by the browser's locale rules and sends only
what it understood: ``0,00002`` typed into it reached the server as ``2``, a 100,000× price, silently. So every
decimal a person types in this project is a text box (:class:`DecimalTextInput`, ``inputmode="decimal"`` for
a numeric keypad on phones) read by :class:`DecimalTextField`, which accepts exactly one notation: ASCII digits
with at most one dot (``0.00002``, ``1000.50``, ``-3``), surrounding spaces ignored. Anything else is a form error
that says what to type instead: a decimal comma, thousand separators, exponents, NaN/Infinity, more digits or
decimal places than the database column stores. ``PreciseDecimalField`` (``common.fields``) makes these its
form field and widget, so every model form and admin inline gets them without further wiring.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django import forms
from django.contrib.admin.widgets import AdminSplitDateTime
from django.core.exceptions import ValidationError

PLAIN_DECIMAL_RE = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
_DECIMAL_COMMA_RE = re.compile(r"^[+-]?[0-9]*,[0-9]+$")
_GROUPED_RE = re.compile(r"^[+-]?[0-9]{1,3}(?:[,' _\u00a0\u202f][0-9]{3})+(?:\.[0-9]+)?$")
_EXPONENT_RE = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][+-]?[0-9]+$")
_NOT_A_NUMBER = {"nan", "snan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"}
MAX_INPUT_LENGTH = 100


def plain_decimal(value: Decimal) -> str:
    """``Decimal('0.000020000000000')`` → ``'0.00002'``; ``Decimal('1E+3')`` → ``'1000'``: no exponent, no
    trailing zeros, no rounding (``normalize()`` would round to the context's 28 digits)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "+0", "") else text


def plain_number(value: Decimal) -> str:
    """``1000000`` → ``1,000,000``; ``0.5`` → ``0.5`` (no trailing zeros, no exponent, no rounding)."""
    text = plain_decimal(value)
    whole, _, fraction = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    whole = f"{int(whole.lstrip('-') or '0'):,}"
    return sign + whole + (f".{fraction}" if fraction else "")


def parse_plain_decimal(text: object) -> Decimal:
    """Read a decimal typed by a person; raise ``ValidationError`` naming what to type instead.

    Accepted: ASCII digits with at most one dot and an optional sign, surrounding whitespace ignored.
    """
    if not isinstance(text, str):
        text = str(text)
    value = text.strip()
    if len(value) > MAX_INPUT_LENGTH:
        raise ValidationError(f"Too long: at most {MAX_INPUT_LENGTH} characters.", code="too_long")
    if "\x00" in value:
        raise ValidationError("Type digits and one dot only (e.g. 0.00002); this value has a NUL character.",
                              code="invalid")
    if PLAIN_DECIMAL_RE.match(value):
        return Decimal(value)
    if _DECIMAL_COMMA_RE.match(value):
        whole, fraction = value.split(",")
        dotted = f"{whole or '0'}.{fraction}"
        if len(fraction) == 3 and whole.lstrip("+-") and whole.lstrip("+-")[0] != "0":
            raise ValidationError(
                f"“{value}” is ambiguous: use a dot as the decimal separator ({dotted}) and no thousand "
                f"separators ({whole}{fraction}).",
                code="decimal_comma",
            )
        raise ValidationError(f"Use a dot as the decimal separator ({dotted}).", code="decimal_comma")
    if _GROUPED_RE.match(value):
        digits = re.sub(r"[,' _\u00a0\u202f]", "", value)
        raise ValidationError(
            f"Type digits and one dot only, without thousand separators ({digits}).", code="thousand_separator"
        )
    if _EXPONENT_RE.match(value):
        hint = ""
        try:
            number = Decimal(value)
            if abs(number.adjusted()) <= 40:
                hint = f" ({plain_decimal(number)})"
        except InvalidOperation:  # pragma: no cover - the pattern only matches valid exponent notation
            pass
        raise ValidationError(f"Write the number without an exponent{hint}.", code="exponent")
    if value.lower() in _NOT_A_NUMBER:
        raise ValidationError("Enter a number: NaN and Infinity are not amounts.", code="not_finite")
    raise ValidationError(
        "Enter a number with digits and one dot only (e.g. 0.00002 or 1000.50), without spaces, commas or "
        "currency symbols.",
        code="invalid",
    )


class DecimalTextInput(forms.TextInput):
    """A text box for a decimal: the value is shown plain (``0.00002``, never ``2E-5`` or
    ``0.000020000000000``) and phones offer a numeric keypad (``inputmode="decimal"``)."""

    def __init__(self, attrs: dict[str, Any] | None = None) -> None:
        base = {"inputmode": "decimal", "autocomplete": "off", "spellcheck": "false", "class": "decimal-input"}
        super().__init__({**base, **(attrs or {})})

    def format_value(self, value: Any) -> str | None:
        if isinstance(value, Decimal) and value.is_finite():
            return plain_decimal(value)
        return super().format_value(value)


class DecimalTextField(forms.DecimalField):
    """``forms.DecimalField`` read by :func:`parse_plain_decimal` from a :class:`DecimalTextInput`.

    The digit and decimal-place limits (``max_digits``/``decimal_places``) and ``min_value``/``max_value`` are
    Django's; trailing zeros after the dot do not count against them (``0.000020000000000000`` is ``0.00002``).
    """

    widget = DecimalTextInput

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("localize", None)  # one notation for everybody: digits and a dot
        super().__init__(*args, **kwargs)

    # ignore: django-stubs derive forms.DecimalField from IntegerField; its own to_python carries the same ignore.
    def to_python(self, value: Any) -> Decimal | None:  # type: ignore[override]
        if value in self.empty_values or (isinstance(value, str) and not value.strip()):
            return None
        number = value if isinstance(value, Decimal) else parse_plain_decimal(value)
        if not number.is_finite():
            raise ValidationError("Enter a number: NaN and Infinity are not amounts.", code="not_finite")
        if number.as_tuple().exponent < 0:  # type: ignore[operator]  # finite: the exponent is an int
            number = Decimal(plain_decimal(number))  # 0.50000 has 1 decimal place, not 5
        return number

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        attrs = super().widget_attrs(widget)
        attrs.pop("step", None)  # only number inputs have a step
        return attrs


class DateTimePickerWidget(AdminSplitDateTime):
    """The admin's own date and time pickers (calendar and clock) for a form outside a model admin; a post that
    carries the whole value in one field (``start=2026-11-01 00:00:00``, scripts and older forms) is read too."""

    def value_from_datadict(self, data: Any, files: Any, name: str) -> Any:
        if f"{name}_0" not in data and f"{name}_1" not in data and name in data:
            text = str(data.get(name) or "").strip().replace("T", " ", 1)
            date, _, time = text.partition(" ")
            return [date, time or "00:00:00"] if date else ["", ""]
        return super().value_from_datadict(data, files, name)


class DateTimePickerField(forms.SplitDateTimeField):
    """A date and a time, with the admin's pickers (``DateTimePickerWidget``)."""

    widget = DateTimePickerWidget
