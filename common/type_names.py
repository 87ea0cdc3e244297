"""The name of a value's type in an error message: ``must be a string, not a number``.

One helper for every reader of outside input. JSON readers (the ingest API) say ``an array`` and ``an object``;
YAML readers (``billing_apply``) say ``a list`` and ``a mapping``, the words of their own format.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

_COLLECTIONS = {
    "yaml": {list: "a list", dict: "a mapping"},
    "json": {list: "an array", dict: "an object"},
}


def type_name(value: Any, *, vocabulary: str = "yaml") -> str:
    """``null``, ``a boolean``, ``a number``, ``a string``, ``a list``/``an array``, ``a mapping``/``an object``,
    ``a date``; any other type by its Python name."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | Decimal):
        return "a number"
    if isinstance(value, str):
        return "a string"
    for kind, name in _COLLECTIONS[vocabulary].items():
        if isinstance(value, kind):
            return name
    if isinstance(value, dt.date):  # a datetime is a date too
        return "a date"
    return type(value).__name__


def json_type_name(value: Any) -> str:
    """:func:`type_name` in JSON's words (``an array``, ``an object``)."""
    return type_name(value, vocabulary="json")
