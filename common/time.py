"""Time formats shared by the APIs, documents and commands."""

from __future__ import annotations

import datetime as dt

import msgspec

from .formatting import format_period


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


def _moment_text(value: dt.datetime, *, with_year: bool) -> str:
    text = f"{value:%b} {value.day}"
    if with_year:
        text += f", {value.year}"
    if (value.hour, value.minute, value.second, value.microsecond) != (0, 0, 0, 0):
        text += f" {value:%H:%M}"
    return text


def period_label(start: dt.datetime, end: dt.datetime) -> str:
    """A half-open period ``[start, end)`` as people read it, inclusive and in UTC: ``Nov 1 – Nov 30, 2026``,
    ``Dec 1, 2026 – Jan 31, 2027``, ``Nov 1, 2026`` (one day); a period cut mid-day shows its times
    (``Nov 1 – Nov 29, 2026 08:31``). Whole days end on the day before ``end``."""
    start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    midnight = (end.hour, end.minute, end.second, end.microsecond) == (0, 0, 0, 0)
    if midnight and start.time() == dt.time(0):
        return format_period(start, end, "en_US")  # whole days read as the documents write them
    last = end - dt.timedelta(days=1) if midnight else end
    if midnight and last.date() == start.date() and start.time() == dt.time(0):
        return _moment_text(start, with_year=True)
    same_year = start.year == last.year
    return f"{_moment_text(start, with_year=not same_year)} – {_moment_text(last, with_year=True)}"


def actor_label(label: str, *, full_name: str = "", username: str = "") -> str:
    """Who did something, as the log shows it: the person's name for an admin action, "scheduled close" for beat
    (stored labels "beat"/"scheduled close"), else the stored label."""
    if full_name.strip() or username:
        return full_name.strip() or username
    return {"beat": "scheduled close", "system": "the system"}.get(label, label)
