"""Time formats shared by the APIs, documents and commands."""

from __future__ import annotations

import datetime as dt


def format_rfc3339(value: dt.datetime) -> str:
    """UTC, ``Z`` suffix, microseconds only when present."""
    value = value.astimezone(dt.UTC)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")
