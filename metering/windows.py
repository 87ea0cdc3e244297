"""Query windows in a time zone (DST-correct), and their decomposition onto rollup granularities.

A DAY window in Europe/Berlin is local midnight to local midnight: 23 hours on the spring-forward day,
25 on the fall-back day. A query's ``from``/``to`` need not be aligned to the window size (like OpenMeter):
the windows are the calendar windows of the time zone, the first and last clipped to ``[from, to)``, and
each window's bounds are the clipped ones (``from=2026-03-27T00:00:00Z``, DAY in Europe/Berlin: the first
window is 00:00Z–23:00Z, the Berlin day that started at 23:00Z the evening before, from ``from`` on).

Window bounds are computed in Python with ``zoneinfo``, then each window is cut into pieces the database can
answer from rollups:

- whole UTC days → ``DailyUsage``;
- whole UTC hours → ``HourlyUsage``;
- the rest (less than an hour at either end, e.g. a billing period starting 13:45) → raw events.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

WINDOW_SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")
MINUTE = dt.timedelta(minutes=1)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
MAX_WINDOWS = 50_000
# The longest a window of each size can be (a DST change adds at most an hour; Lord Howe adds 30 minutes), so
# ``span / longest`` windows are needed at least: far too many is refused before any is computed.
LONGEST = {"MINUTE": MINUTE, "HOUR": HOUR + dt.timedelta(minutes=30), "DAY": DAY + HOUR,
           "MONTH": dt.timedelta(days=31, hours=1)}


class WindowError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@functools.cache
def time_zone_names() -> tuple[str, ...]:
    """The IANA time zone names a query accepts (the OpenAPI schema's enum)."""
    return tuple(sorted(available_timezones() | {"UTC"}))


def time_zone(name: str | None) -> ZoneInfo:
    """The zone of an IANA name (none or empty: UTC). Only the names of :func:`time_zone_names`: zoneinfo would
    also open other files of the system's zoneinfo folder (``posixrules``, ``right/UTC``)."""
    if not name:
        return ZoneInfo("UTC")
    if not isinstance(name, str) or name not in time_zone_names():
        raise WindowError("windowTimeZone", f'"{name}" is not an IANA time zone (e.g. Europe/Berlin)')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError("windowTimeZone", f'"{name}" is not an IANA time zone (e.g. Europe/Berlin)') from None


def _localize(naive: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    return naive.replace(tzinfo=tz).astimezone(dt.UTC)


def floor_to_window(instant: dt.datetime, size: str, tz: ZoneInfo) -> dt.datetime:
    """The start of the window (of ``size`` in ``tz``) that contains ``instant``, in UTC.

    :class:`WindowError` when that start is not a representable instant (the first local days of year 1 in a
    zone behind UTC)."""
    try:
        return _floor_to_window(instant, size, tz)
    except (OverflowError, ValueError):
        raise WindowError("from", f"{instant.isoformat()} is out of range for {size} windows in {tz.key}") from None


def _floor_to_window(instant: dt.datetime, size: str, tz: ZoneInfo) -> dt.datetime:
    local = instant.astimezone(tz).replace(tzinfo=None)  # keeps ``fold`` for the repeated DST hour
    if size == "MINUTE":
        local = local.replace(second=0, microsecond=0)
    elif size == "HOUR":
        local = local.replace(minute=0, second=0, microsecond=0)
    elif size == "DAY":
        local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif size == "MONTH":
        local = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    floored = _localize(local, tz)
    if floored > instant:  # a local midnight that does not exist (DST starting at 00:00): step back
        floored = _localize(local.replace(fold=1 - local.fold), tz)
    return floored


def next_window_start(start: dt.datetime, size: str, tz: ZoneInfo) -> dt.datetime:
    """The start of the window after the one starting at ``start`` (an aligned start), in UTC; raises
    ``OverflowError`` (or ``ValueError``) past year 9999."""
    local = start.astimezone(tz).replace(tzinfo=None)
    if size == "MINUTE":
        return start + dt.timedelta(minutes=1)
    if size == "HOUR":
        return floor_to_window(start + HOUR + dt.timedelta(minutes=1), "HOUR", tz)
    if size == "DAY":
        nxt = (local + DAY).replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
        nxt = local.replace(year=year, month=month, day=1, hour=0, minute=0, second=0, microsecond=0)
    return _localize(nxt, tz)


def windows(
    start: dt.datetime, end: dt.datetime, size: str | None, tz: ZoneInfo
) -> list[tuple[dt.datetime, dt.datetime]]:
    """The windows covering ``[start, end)``: the calendar windows of ``size`` in ``tz``, the first and last
    clipped to ``[start, end)``; one window ``(start, end)`` without a size."""
    if end <= start:
        raise WindowError("to", "to must be after from")
    if size is None:
        return [(start, end)]
    if size not in WINDOW_SIZES:
        raise WindowError("windowSize", f"windowSize must be one of {', '.join(WINDOW_SIZES)}")
    if (end - start) // LONGEST[size] > MAX_WINDOWS:
        raise _too_many()
    result: list[tuple[dt.datetime, dt.datetime]] = []
    cursor = floor_to_window(start, size, tz)
    while cursor < end:
        try:
            nxt = next_window_start(cursor, size, tz)
        except (OverflowError, ValueError):  # the last window of year 9999
            nxt = end
        result.append((max(cursor, start), min(nxt, end)))
        cursor = nxt
        if len(result) > MAX_WINDOWS:
            raise _too_many()
    return result


def _too_many() -> WindowError:
    return WindowError("windowSize", f"more than {MAX_WINDOWS:,} windows: use a larger windowSize or a shorter range")


@dataclass(frozen=True)
class Piece:
    """Part of window ``index``: ``kind`` is D (daily rollups), H (hourly rollups) or R (raw events)."""

    index: int
    start: dt.datetime
    end: dt.datetime
    kind: str
    subject: str | None = None


def _ceil(instant: dt.datetime, step: dt.timedelta) -> dt.datetime:
    floored = _floor(instant, step)
    if floored == instant:
        return floored
    try:
        return floored + step
    except OverflowError:  # in the last hour or day of year 9999: no whole one follows
        return dt.datetime.max.replace(tzinfo=dt.UTC)


def _floor(instant: dt.datetime, step: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + ((instant - epoch) // step) * step


def decompose(index: int, start: dt.datetime, end: dt.datetime, subject: str | None = None) -> list[Piece]:
    """Cut ``[start, end)`` into raw edges, whole UTC hours and whole UTC days."""
    pieces: list[Piece] = []
    first_hour, last_hour = _ceil(start, HOUR), _floor(end, HOUR)
    if first_hour >= last_hour:
        return [Piece(index, start, end, "R", subject)]
    if start < first_hour:
        pieces.append(Piece(index, start, first_hour, "R", subject))
    first_day, last_day = _ceil(first_hour, DAY), _floor(last_hour, DAY)
    if first_day < last_day:
        if first_hour < first_day:
            pieces.append(Piece(index, first_hour, first_day, "H", subject))
        pieces.append(Piece(index, first_day, last_day, "D", subject))
        if last_day < last_hour:
            pieces.append(Piece(index, last_day, last_hour, "H", subject))
    else:
        pieces.append(Piece(index, first_hour, last_hour, "H", subject))
    if last_hour < end:
        pieces.append(Piece(index, last_hour, end, "R", subject))
    return pieces
