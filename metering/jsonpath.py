"""The JSONPath subset meters use for ``value_property`` and ``group_by``.

Supported: a ``$`` root followed by any number of

- ``.name``  — an object member; names are letters, digits, ``_`` and ``-``, not starting with a digit
  or ``-`` (``$.tokens``, ``$.usage.input_tokens``);
- ``["name"]`` — an object member with any other characters (``$["x.y"]``); inside the quotes a ``"`` or
  ``\\`` is escaped with a backslash (JSON's ``\\/ \\b \\f \\n \\r \\t`` too; no ``\\u`` escapes);
- ``[N]`` — an array element, 0 ≤ N < 10^9 (``$.choices[0].tokens``).

Anything else — wildcards (``*``), recursive descent (``..``), filters (``?()``), slices, negative
indexes, unions — is rejected with a message saying what is supported.

The same compiled path is used three ways: as a PostgreSQL ``#>``/``#>>`` path array, as a SQLite
``json_extract`` path, and in Python (:func:`extract`) for explaining why an event was not counted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

SUPPORTED = 'a "$" root followed by .name, ["name"] or [index] steps, e.g. $.tokens, $.usage.input, $.items[0]'
_NAME_TEXT = r"[A-Za-z_][A-Za-z0-9_-]*"
_QUOTED_TEXT = r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt])+'  # a JSON string's characters, without \u escapes
_NAME = re.compile(_NAME_TEXT)
_INDEX_TEXT = r"\[([0-9]{1,9})\]"  # at most 999,999,999: beyond any array an event holds
_INDEX = re.compile(_INDEX_TEXT)
_QUOTED = re.compile(r'\[\s*"(' + _QUOTED_TEXT + r')"\s*\]')
# The whole grammar as one regular expression (valid in Python and ECMA-262): the OpenAPI schema's pattern.
PATTERN = r'^\s*\$(?:\.' + _NAME_TEXT + r'|\[[0-9]{1,9}\]|\[\s*"' + _QUOTED_TEXT + r'"\s*\])+\s*$'

# --- what a meter value is: ONE rule, used by the SQL (metering.usage_sql) and the Python explanation ------
#
# A value is a JSON number, or a string holding a number (optional sign, digits with an optional fraction,
# an optional exponent, surrounding ASCII whitespace). It is counted only when the rollups can store it, and
# any sum of it, exactly: numeric(40, 12) holds 28 integer digits, so a value is *in range* when
# |value| <= VALUE_BOUND = 10^18 (10^9 events at the bound in one hourly bucket still sum to 10^27).
# Anything else that looks like a number is "out of range" and not counted: beyond the bound, not finite
# (NaN, Infinity), or a numeric string longer than NUMERIC_TEXT_MAX_LENGTH characters or with an exponent of
# more than 3 digits ("1e400000"), which the database could not even cast. Digits beyond 12 decimal places
# are kept as today: the rollup columns round them to 12 places.
#
# An *absent* value (the path leads nowhere, or to JSON null) is "missing", not counted, unless the meter says
# absent means zero (``Meter.value_absent = zero``, for fields a gateway sends only when it has something to
# count, like ``$.cache_read_tokens``): then it is the number 0. Present but not a number stays a problem.
VALUE_BOUND = Decimal(10) ** 18
VALUE_BOUND_SQL = format(VALUE_BOUND, "f")  # as an SQL literal: 1000000000000000000
NUMERIC_TEXT_MAX_LENGTH = 100
_SPACE = r"[ \t\n\r\f\v]*"  # ASCII only: the whitespace both databases' numeric casts skip
# A numeric string the databases can cast (the same pattern for Python, PostgreSQL ~ and SQLite REGEXP).
NUMERIC_TEXT_SQL = rf"^{_SPACE}[-+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]{{1,3}})?{_SPACE}$"
NUMERIC_TEXT = re.compile(NUMERIC_TEXT_SQL)
# Looks like a number but is not one the databases can cast: out of range rather than "not a number".
_NUMBER_LIKE = re.compile(
    rf"^{_SPACE}[-+]?(([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?|nan|inf|infinity){_SPACE}$", re.IGNORECASE)


class JsonPathError(ValueError):
    pass


@dataclass(frozen=True)
class JsonPath:
    text: str
    steps: tuple[str | int, ...]

    @property
    def postgres_path(self) -> list[str]:
        """For ``data #>> %s`` (a text[] of keys and indexes)."""
        return [str(step) for step in self.steps]

    @property
    def sqlite_path(self) -> str:
        """For ``json_extract(data, %s)``."""
        parts = ["$"]
        for step in self.steps:
            if isinstance(step, int):
                parts.append(f"[{step}]")
            elif _NAME.fullmatch(step):
                parts.append(f".{step}")
            else:
                parts.append(".\"" + step.replace("\\", "\\\\").replace('"', '\\"') + "\"")
        return "".join(parts)


def parse(text: str) -> JsonPath:
    """Parse a path of the supported subset, or raise :class:`JsonPathError` saying what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise JsonPathError(f"a JSONPath is required: {SUPPORTED}")
    source = text.strip()
    if not source.startswith("$"):
        raise JsonPathError(f'"{text}" must start with "$": {SUPPORTED}')
    steps: list[str | int] = []
    position = 1
    while position < len(source):
        rest = source[position:]
        if rest.startswith(".."):
            raise JsonPathError(f'"{text}": recursive descent ("..") is not supported; use {SUPPORTED}')
        if rest.startswith("."):
            match = _NAME.match(rest, 1)
            if not match:
                raise JsonPathError(f'"{text}": expected a member name after "." at position {position + 1}; '
                                    f"use {SUPPORTED}")
            steps.append(match.group(0))
            position += match.end()
            continue
        match = _INDEX.match(rest)
        if match:
            steps.append(int(match.group(1)))
            position += match.end()
            continue
        match = _QUOTED.match(rest)
        if match:
            steps.append(json.loads(f'"{match.group(1)}"'))
            position += match.end()
            continue
        raise JsonPathError(f'"{text}": unsupported syntax at "{rest[:20]}"; use {SUPPORTED}')
    if not steps:
        raise JsonPathError(f'"{text}" selects the whole event data; name a property: {SUPPORTED}')
    return JsonPath(source, tuple(steps))


_MISSING = object()


def extract(path: JsonPath, data: Any) -> Any:
    """The value at ``path`` in ``data``, or ``_MISSING``."""
    current = data
    for step in path.steps:
        if isinstance(step, int):
            if not isinstance(current, list) or step >= len(current):
                return _MISSING
            current = current[step]
        else:
            if not isinstance(current, dict) or step not in current:
                return _MISSING
            current = current[step]
    return current


def numeric_value(path: JsonPath, data: Any, *, absent_zero: bool = False) -> tuple[Decimal | None, str | None]:
    """The meter value of an event, or (None, the reason it is not counted): the rule above, as the SQL
    of :func:`metering.usage_sql.value_expr` applies it. ``absent_zero``: a missing or null value is 0."""
    value = extract(path, data)
    if value is _MISSING or value is None:
        if absent_zero:
            return Decimal(0), None
        return None, f"value at {path.text} is missing"
    out_of_range = f"value at {path.text} is out of range"
    if isinstance(value, bool):
        return None, f"value at {path.text} is not a number"
    if isinstance(value, int | float):
        number = Decimal(value) if isinstance(value, int) else Decimal(repr(value))
    elif isinstance(value, str) and len(value) <= NUMERIC_TEXT_MAX_LENGTH and NUMERIC_TEXT.match(value):
        try:
            number = Decimal(value.strip(" \t\n\r\f\v"))
        except InvalidOperation:  # pragma: no cover - the pattern admits only what Decimal reads
            return None, out_of_range
    elif isinstance(value, str) and _NUMBER_LIKE.match(value):
        return None, out_of_range
    else:
        return None, f"value at {path.text} is not a number"
    if not number.is_finite() or abs(number) > VALUE_BOUND:
        return None, out_of_range
    return number, None


def group_value(path: JsonPath, data: Any) -> str | None:
    """A group-by value as the database computes it: text, or None when missing or null."""
    value = extract(path, data)
    if value is _MISSING or value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(", ", ": "))
