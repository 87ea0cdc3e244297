"""Query windows in a time zone (DST-correct), and their decomposition onto rollup granularities.

A DAY window in Europe/Berlin is local midnight to local midnight: 23 hours on the spring-forward day,
25 on the fall-back day. Window bounds are computed in Python with ``zoneinfo``, then each window is cut
into pieces the database can answer from rollups:

- whole UTC days → ``DailyUsage``;
- whole UTC hours → ``HourlyUsage``;
- the rest (less than an hour at either end, e.g. a billing period starting 13:45) → raw events.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WINDOW_SIZES = ("MINUTE", "HOUR", "DAY", "MONTH")
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
MAX_WINDOWS = 50_000


class WindowError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def time_zone(name: str | None) -> ZoneInfo:
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise WindowError("windowTimeZone", f'"{name}" is not an IANA time zone (e.g. Europe/Berlin)') from None


def _localize(naive: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    return naive.replace(tzinfo=tz).astimezone(dt.UTC)


def floor_to_window(instant: dt.datetime, size: str, tz: ZoneInfo) -> dt.datetime:
    """The start of the window (of ``size`` in ``tz``) that contains ``instant``, in UTC."""
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
    """The windows covering ``[start, end)``; both bounds must be aligned to the window size in ``tz``."""
    if end <= start:
        raise WindowError("to", "to must be after from")
    if size is None:
        return [(start, end)]
    if size not in WINDOW_SIZES:
        raise WindowError("windowSize", f"windowSize must be one of {', '.join(WINDOW_SIZES)}")
    for field, bound in (("from", start), ("to", end)):
        if floor_to_window(bound, size, tz) != bound:
            raise WindowError(field, f"{field} must be aligned to the window size ({size} in {tz.key}); "
                                     f"e.g. {floor_to_window(bound, size, tz).astimezone(tz).isoformat()}")
    result = []
    cursor = start
    while cursor < end:
        nxt = next_window_start(cursor, size, tz)
        result.append((cursor, min(nxt, end)))
        cursor = nxt
        if len(result) > MAX_WINDOWS:
            raise WindowError("windowSize", f"more than {MAX_WINDOWS:,} windows: use a larger windowSize "
                                            "or a shorter range")
    return result


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
    return floored if floored == instant else floored + step


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
