"""What would change, in the file's own words: ``unit_amount 0.00002 -> 0.00003``, ``name "AI Tokens" -> null``."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .values import MISSING, plain_decimal


def show(value: Any) -> str:
    """A value in a diff line, YAML-flow-like: ``0.00002``, ``null``, ``{provider: openai}``, ``"AI Tokens"``."""
    if value is None or value is MISSING:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return plain_decimal(value)
    if isinstance(value, str):
        plain = value and all(c.isalnum() or c in "-_.:$/@+" for c in value)
        return value if plain else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):  # sorted: PostgreSQL's jsonb does not keep the order of keys
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def change(name: str, old: Any, new: Any) -> str:
    """``name old -> new``."""
    return f"{name} {show(old)} -> {show(new)}"


def changed_fields(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``wanted`` whose value differs from ``current``'s."""
    return {name: value for name, value in wanted.items() if current[name] != value}


def changes_text(current: Mapping[str, Any], changes: Mapping[str, Any]) -> str:
    """``name "Kong" -> "Kong Air", email null -> a@b.example``."""
    return ", ".join(change(name, current[name], value) for name, value in changes.items())


def diff_values(old: Any, new: Any, path: str = "") -> list[str]:
    """``path old -> new`` for each differing leaf (mappings and same-length lists are compared inside)."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            changes += diff_values(old.get(key), new.get(key), sub)
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new, strict=True)) for c in diff_values(a, b, f"{path}[{i}]")]
    if old == new and (isinstance(old, bool) == isinstance(new, bool)):
        return []  # numbers compare as numbers (Decimal 49.00 == 49), but true is not 1
    return [change(path, old, new)]


def sorted_json(value: Any) -> Any:
    """JSON with mapping keys sorted, so a dump reads the same on SQLite and PostgreSQL (jsonb reorders keys)."""
    if isinstance(value, dict):
        return {k: sorted_json(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [sorted_json(item) for item in value]
    return value


def without_empty(doc: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    """``doc`` without its ``optional`` fields that are empty (null, ``""``, ``{}``, ``[]``; 0 and false are
    values): a dump leaves them out."""
    return {name: value for name, value in doc.items() if name not in optional or value not in (None, "", {}, [])}
