"""Moments in UTC, and their RFC 3339 text as gateways send it."""

from __future__ import annotations

import datetime as dt

__all__ = ["utc", "iso"]


def utc(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


def iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
