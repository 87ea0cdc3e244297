"""Converting one value of a file: exact decimals, RFC 3339 date-times, nested JSON. Each raises ValueError (or
returns a message) with the reason, in words a person editing the file understands."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal, InvalidOperation
from typing import Any

from common.type_names import type_name

MISSING: Any = object()  # a field left out of an entry (different from an explicit null)

NOT_JSON = "must hold only JSON values (strings, numbers, booleans, null, lists, mappings)"
HAS_NUL = "must not contain NUL characters"


def plain_decimal(value: Decimal) -> str:
    """An exact decimal without exponent or trailing zeros: ``0.000003``, ``49``."""
    return format(value.normalize(), "f")


def _decimal_of(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be a decimal number, not {type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite decimal number")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"must be a decimal number, not {value!r}") from None
    if not number.is_finite():
        raise ValueError("must be a finite decimal number")
    return number


def to_decimal(value: Any, *, places: int | None = None, integer_digits: int | None = None) -> Decimal:
    """A YAML string or number as an exact Decimal (numbers via ``str``: ``0.1`` is 0.1), with at most ``places``
    decimal places and ``integer_digits`` digits before the point; ValueError with the reason."""
    number = _decimal_of(value)
    normal = number.normalize()
    if normal == 0:
        return number
    if places is not None and -normal.as_tuple().exponent > places:  # type: ignore[operator]
        raise ValueError(f"must have at most {places} decimal places (got {plain_decimal(number)})")
    if integer_digits is not None and normal.adjusted() >= integer_digits:
        raise ValueError(f"must be less than 10^{integer_digits}")
    return number


def parse_datetime(value: Any) -> dt.datetime:
    """RFC 3339 with an offset (a YAML timestamp or a string), in UTC."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"must be an RFC 3339 date-time such as 2026-10-01T00:00:00Z, not {value!r}") from None
    elif isinstance(value, dt.datetime):
        parsed = value
    else:
        raise ValueError(f"must be an RFC 3339 date-time such as 2026-10-01T00:00:00Z, not {type_name(value)}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("needs a time zone offset (e.g. 2026-10-01T00:00:00Z)")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError("is out of range (years 1 to 9999 in UTC)") from None


def _json_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value))


def nested_problem(value: Any, *, json_only: bool = True) -> str | None:
    """Why a nested value cannot be stored: a NUL character anywhere, in a key or a value (PostgreSQL refuses
    it), or, when ``json_only``, something JSON cannot hold (a date, a set, NaN, a key that is not a string)."""
    if isinstance(value, str):
        return HAS_NUL if "\x00" in value else None
    if isinstance(value, dict):
        if json_only and not all(isinstance(key, str) for key in value):
            return NOT_JSON
        children = [*value, *value.values()]
    elif isinstance(value, list):
        children = value
    else:
        return NOT_JSON if json_only and not _json_scalar(value) else None
    return next(filter(None, (nested_problem(child, json_only=json_only) for child in children)), None)
