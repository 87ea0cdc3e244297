"""Query-parameter parsing shared by every API: bad values become 400 problem+json naming the parameter."""

from __future__ import annotations

import datetime as dt

import msgspec

from common.problems import Problem


def bad_parameter(name: str, message: str) -> Problem:
    return Problem(400, "Invalid query parameter", f"{name}: {message}",
                   errors=[{"field": name, "message": message}])


def parse_rfc3339(name: str, value: str) -> dt.datetime:
    try:
        parsed = msgspec.json.decode(msgspec.json.encode(value.strip()), type=dt.datetime)
    except msgspec.ValidationError:
        raise bad_parameter(name, f'"{value}" is not an RFC 3339 date-time') from None
    if parsed.tzinfo is None:
        raise bad_parameter(name, f'"{value}" needs a UTC offset (e.g. "Z" or "+02:00")')
    return parsed.astimezone(dt.UTC)


def datetime_param(params, name: str) -> dt.datetime | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    return parse_rfc3339(name, value)


def int_param(params, name: str, *, default: int, minimum: int, maximum: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise bad_parameter(name, f'"{value}" is not an integer') from None
    if not minimum <= number <= maximum:
        raise bad_parameter(name, f"must be between {minimum} and {maximum}")
    return number
