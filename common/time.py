"""Time formats shared by the APIs, documents and commands."""

from __future__ import annotations

import datetime as dt

import msgspec


def format_rfc3339(value: dt.datetime) -> str:
    """UTC, ``Z`` suffix, microseconds only when present."""
    value = value.astimezone(dt.UTC)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")


EARLIEST_INSTANT = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
LATEST_INSTANT = dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)


class TimeValueError(ValueError):
    """A time from outside that cannot be used; the message says why (without the field's name)."""




def parse_rfc3339(value: str) -> dt.datetime:
    """An RFC 3339 date-time with a UTC offset, as an aware UTC datetime; the one parser of times that come
    from outside (query parameters, CloudEvents ``time``, command options).

    :class:`TimeValueError` when it is not RFC 3339, has no offset, or its UTC instant falls outside what
    Python and the databases can hold: :data:`EARLIEST_INSTANT` to :data:`LATEST_INSTANT`
    (``0001-01-01T00:00:00+01:00`` is in year 0 in UTC). PostgreSQL's ``timestamptz`` reaches further (4713 BC
    to 294276 AD); Python ends at the year 9999, and SQLite's date functions (the rollups' hour and day buckets)
    at its last millisecond."""
    try:
        parsed = msgspec.json.decode(msgspec.json.encode(value.strip()), type=dt.datetime)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeEncodeError):
        raise TimeValueError(f'"{value[:64]}" is not an RFC 3339 date-time') from None
    if parsed.tzinfo is None:
        raise TimeValueError(f'"{value[:64]}" needs a UTC offset (e.g. "Z" or "+02:00")')
    try:
        instant = parsed.astimezone(dt.UTC)
    except OverflowError:
        instant = None
    if instant is None or instant > LATEST_INSTANT:
        raise TimeValueError(f'"{value[:64]}" is outside the representable range '
                             "(0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z)") from None
    return instant
