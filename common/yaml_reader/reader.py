"""Typed access to the fields of one mapping of a file, each problem recorded with its location.

``Reader(problems, "plans[0] (token)", data, known_fields)`` checks that ``data`` is a mapping of known fields;
``reader.text("name", required=True)``, ``reader.decimal("amount")``… return the value, or record
``FILE: plans[0] (token).name: must be a string, not a number (put it in quotes)`` and return a default. A reader
never raises: all the problems of a file are reported at once. ``reader.ok`` is False once a field of it (or of a
reader made by :meth:`Reader.nested`) failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, TypeVar

from common.type_names import type_name

from .problems import Problems
from .values import HAS_NUL, MISSING, nested_problem, parse_datetime, to_decimal

T = TypeVar("T")


class Reader:
    """Typed fields of one mapping of the file. Subclasses set the decimal limits of their storage."""

    decimal_places: int | None = None
    decimal_integer_digits: int | None = None

    def __init__(self, problems: Problems, where: str, data: Any, known: Iterable[str],
                 parent: Reader | None = None) -> None:
        self.problems, self.where, self.parent, self.ok = problems, where, parent, True
        known = tuple(known)
        if not isinstance(data, dict):
            self.fail("", f"must be a mapping of fields, not {type_name(data)}")
            data = {}
        self.data: dict = data
        for name in data:
            if name not in known:
                self.fail(str(name), f"unknown field (known: {', '.join(known)})")

    def nested(self, name: str, data: Any, known: Iterable[str]) -> Reader:
        """A reader of a mapping inside this one, at ``name`` (``price``, ``subjects[0]``); its problems make
        this reader fail too."""
        return type(self)(self.problems, self.at(name), data, known, parent=self)

    def at(self, name: str) -> str:
        if not name:
            return self.where
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, message: str) -> None:
        reader: Reader | None = self
        while reader is not None:
            reader.ok, reader = False, reader.parent
        self.problems.add(self.at(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = MISSING) -> Any:
        return self.data.get(name, default)

    def _present(self, name: str, required: bool) -> bool:
        if name not in self.data or (required and self.data[name] is None):
            if required:
                self.fail(name, "is required")
            return False
        return True

    def _text_problem(self, value: str, *, required: bool, choices: tuple[str, ...] | None, max_length: int | None,
                      check: Callable[[str], str | None] | None) -> str | None:
        if required and not value:
            return "must not be empty"
        if value and check is not None and (problem := check(value)):
            return problem
        if "\x00" in value:
            return HAS_NUL
        if choices is not None and value not in choices:
            return f"must be one of {', '.join(choices)}, not {value!r}"
        if max_length is not None and len(value) > max_length:
            return f"must be at most {max_length} characters"
        return None

    def text(self, name: str, *, required: bool = False, default: Any = MISSING, nullable: bool = False,
             choices: Iterable[str] | None = None, strip: bool = True, max_length: int | None = None,
             check: Callable[[str], str | None] | None = None) -> Any:
        """A string; absent → ``default``; null → None when ``nullable``, else ``""`` (clears the field).
        ``check`` is the field's own rule (a message or None), asked before the generic ones."""
        if not self._present(name, required):
            return default
        value = self.data[name]
        if value is None:
            return None if nullable else ""
        if not isinstance(value, str):
            hint = " (put it in quotes)" if isinstance(value, bool | int | float | dt.date) else ""
            self.fail(name, f"must be a string, not {type_name(value)}{hint}")
            return default
        value = value.strip() if strip else value
        problem = self._text_problem(value, required=required, choices=None if choices is None else tuple(choices),
                                     max_length=max_length, check=check)
        if problem:
            self.fail(name, problem)
            return default if "\x00" in value else value
        return value

    def decimal(self, name: str, *, required: bool = False) -> Decimal | None:
        if not self._present(name, required) or self.data[name] is None:
            return None
        try:
            return to_decimal(self.data[name], places=self.decimal_places, integer_digits=self.decimal_integer_digits)
        except ValueError as exc:
            self.fail(name, str(exc))
            return None

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.data.get(name, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, not {type_name(value)}")
            return default
        return value

    def integer(self, name: str, *, maximum: int | None = None) -> Any:
        """A whole number ≥ 0 (and ≤ ``maximum``); absent → MISSING; null → None."""
        value = self.data.get(name, MISSING)
        if value is MISSING or value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(name, f"must be a whole number ≥ 0, not {value!r}")
            return MISSING
        if maximum is not None and value > maximum:
            self.fail(name, f"must be at most {maximum}, not {value}")
            return MISSING
        return value

    def json(self, name: str) -> Any:
        """Any JSON value (no NUL character inside); absent or not JSON → MISSING."""
        value = self.data.get(name, MISSING)
        if value is MISSING:
            return value
        problem = nested_problem(value)
        if problem:
            self.fail(name, problem)
            return MISSING
        return value

    def mapping(self, name: str, *, json_only: bool = False) -> Any:
        """A mapping (without NUL characters; of JSON values only when ``json_only``); absent → MISSING; null →
        None."""
        value = self.data.get(name, MISSING)
        if value is MISSING or value is None:
            return value
        if not isinstance(value, dict):
            self.fail(name, f"must be a mapping, not {type_name(value)}")
            return MISSING
        problem = nested_problem(value, json_only=json_only)
        if problem:
            self.fail(name, problem)
            return MISSING
        return value

    def items(self, name: str, *, required: bool = False) -> list | None:
        """A list; absent or null → None (or a problem when required)."""
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(name, "is required")
            return None
        if not isinstance(value, list):
            self.fail(name, f"must be a list, not {type_name(value)}")
            return None
        return value

    def datetime(self, name: str, *, required: bool = False) -> dt.datetime | None:
        if not self._present(name, required) or self.data[name] is None:
            return None
        try:
            return parse_datetime(self.data[name])
        except ValueError as exc:
            self.fail(name, str(exc))
            return None


def entry_label(kind: str, index: int, data: Any, key_field: str) -> str:
    """``plans[0] (token)``: the entry's position and, when readable, its key."""
    key = data.get(key_field) if isinstance(data, dict) else None
    return f"{kind}[{index}] ({key})" if isinstance(key, str) and key and key.isprintable() else f"{kind}[{index}]"


def entry_list(problems: Problems, document: dict, kind: str) -> list:
    """The entries of a top-level section (absent or null: none)."""
    value = document.get(kind)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(kind, f"must be a list of entries, not {type_name(value)}")
        return []
    return value


def parse_entries(problems: Problems, document: dict, kind: str, parse: Callable[[Problems, str, Any], T | None],
                  *, key_field: str = "", declared: set[str] | None = None,
                  label: Callable[[int, Any], str] | None = None) -> list[T]:
    """The entries of a section that ``parse(problems, where, data)`` accepts, each named by ``label(index,
    data)`` (default ``kind[index] (key)``). ``declared`` gets the key of every entry, valid or not, so that a
    reference to a broken entry is not reported again as unknown."""
    entries = []
    for i, data in enumerate(entry_list(problems, document, kind)):
        if declared is not None and isinstance(data, dict) and isinstance(data.get(key_field), str):
            declared.add(data[key_field].strip())
        entry = parse(problems, label(i, data) if label else entry_label(kind, i, data, key_field), data)
        if entry is not None:
            entries.append(entry)
    return entries


def check_duplicates(problems: Problems, entries: Iterable[Any], key_of: Callable[[Any], Any], what: str) -> None:
    """``ENTRY: duplicate: FIRST has the same WHAT`` for each entry (with ``where``) whose key came before."""
    first: dict[Any, str] = {}
    for entry in entries:
        key = key_of(entry)
        if key in first:
            problems.add(entry.where, f"duplicate: {first[key]} has the same {what}")
        else:
            first[key] = entry.where
