"""The JSONPath subset meters use for ``value_property`` and ``group_by``.

Supported: a ``$`` root followed by any number of

- ``.name``  — an object member; names are letters, digits, ``_`` and ``-``, not starting with a digit
  or ``-`` (``$.tokens``, ``$.usage.input_tokens``);
- ``["name"]`` — an object member with any other characters (``$["x.y"]``);
- ``[N]`` — an array element, N ≥ 0 (``$.choices[0].tokens``).

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
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INDEX = re.compile(r"\[(\d+)\]")
_QUOTED = re.compile(r'\[\s*"((?:[^"\\]|\\.)+)"\s*\]')
# Numbers, or strings that are numbers: optional sign, digits with optional fraction, optional exponent.
NUMERIC_TEXT = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")
NUMERIC_TEXT_SQL = r"^\s*[-+]?([0-9]+([.][0-9]*)?|[.][0-9]+)([eE][-+]?[0-9]+)?\s*$"


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


def numeric_value(path: JsonPath, data: Any) -> tuple[Decimal | None, str | None]:
    """The meter value of an event, or (None, the reason it is not counted)."""
    value = extract(path, data)
    if value is _MISSING or value is None:
        return None, f"value at {path.text} is missing"
    if isinstance(value, bool):
        return None, f"value at {path.text} is not a number"
    if isinstance(value, int | float):
        return Decimal(str(value)), None
    if isinstance(value, str) and NUMERIC_TEXT.match(value):
        try:
            return Decimal(value.strip()), None
        except InvalidOperation:
            pass
    return None, f"value at {path.text} is not a number"


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
