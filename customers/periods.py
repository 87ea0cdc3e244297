"""Billing periods, computed from the anchor (never chained), as pure functions.

Boundary n is ``anchor + n × cadence`` for every integer n, with the day of month clamped: an anchor on
Jan 31 gives Jan 31 → Feb 28 (29 in leap years) → Mar 31 → Apr 30. A subscription's periods are those
boundaries clipped to ``[start, cancel_at)``; a clipped period is *partial* and in-advance fees for it are
prorated by exact time: ``fraction = clipped length / full length`` (a Decimal of microseconds).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from dateutil.relativedelta import relativedelta

from catalog.rules import CADENCES, cadence_delta

MEAN_GREGORIAN_YEAR = dt.timedelta(days=146_097) / 400  # 365.2425 days: 146,097 days in every 400 years


def _mean_length(delta: relativedelta) -> dt.timedelta:
    """A cadence's mean length (a month is a twelfth of the mean year: 30.436875 days), exact to the
    microsecond; :func:`index_at` starts from it and steps to the exact boundary."""
    return MEAN_GREGORIAN_YEAR * (delta.years * 12 + delta.months) / 12 + dt.timedelta(days=delta.days)


_APPROX: dict[str, dt.timedelta] = {cadence: _mean_length(delta) for cadence, delta in CADENCES.items()}


@dataclass(frozen=True)
class Period:
    """``[start, end)`` inside the full cadence period ``[full_start, full_end)`` number ``index``."""

    index: int
    start: dt.datetime
    end: dt.datetime
    full_start: dt.datetime
    full_end: dt.datetime

    @property
    def is_partial(self) -> bool:
        return self.start != self.full_start or self.end != self.full_end

    @property
    def fraction(self) -> Decimal:
        covered = (self.end - self.start) // dt.timedelta(microseconds=1)
        full = (self.full_end - self.full_start) // dt.timedelta(microseconds=1)
        return Decimal(covered) / Decimal(full)


def boundary(anchor: dt.datetime, cadence: str, index: int) -> dt.datetime:
    """The index-th period boundary after ``anchor``."""
    return _boundary(anchor, anchor.tzinfo, cadence, index)


@lru_cache(maxsize=65536)
def _boundary(anchor: dt.datetime, zone: dt.tzinfo | None, cadence: str, index: int) -> dt.datetime:
    """Cached: a close asks for the same few boundaries of the same anchors many times, and calendar arithmetic
    is slow. ``zone`` is in the key because equal instants in other zones have other month ends."""
    return anchor + cadence_delta(cadence) * index


def index_at(anchor: dt.datetime, cadence: str, instant: dt.datetime) -> int:
    """The n with ``boundary(n) <= instant < boundary(n + 1)``."""
    index = int((instant - anchor) / _APPROX[cadence])
    while boundary(anchor, cadence, index) > instant:
        index -= 1
    while boundary(anchor, cadence, index + 1) <= instant:
        index += 1
    return index


def periods_between(
    anchor: dt.datetime, cadence: str, start: dt.datetime, end: dt.datetime | None, *, until: dt.datetime
) -> list[Period]:
    """Periods of ``[start, end)`` that begin before ``until`` (the last one may still be running)."""
    stop = min(end, until) if end is not None else until
    if stop <= start:
        return []
    periods = []
    index = index_at(anchor, cadence, start)
    while True:
        full_start, full_end = boundary(anchor, cadence, index), boundary(anchor, cadence, index + 1)
        clipped_start, clipped_end = max(full_start, start), full_end if end is None else min(full_end, end)
        if clipped_start >= stop:
            break
        if clipped_start < clipped_end:
            periods.append(Period(index, clipped_start, clipped_end, full_start, full_end))
        index += 1
    return periods


def period_at(
    anchor: dt.datetime, cadence: str, start: dt.datetime, end: dt.datetime | None, instant: dt.datetime
) -> Period | None:
    """The period containing ``instant``, or None outside ``[start, end)``."""
    if instant < start or (end is not None and instant >= end):
        return None
    index = index_at(anchor, cadence, instant)
    full_start, full_end = boundary(anchor, cadence, index), boundary(anchor, cadence, index + 1)
    return Period(index, max(full_start, start), full_end if end is None else min(full_end, end), full_start, full_end)


def calendar_anchor(start: dt.datetime) -> dt.datetime:
    """Calendar alignment: the 1st of the start's month, 00:00 UTC."""
    start = start.astimezone(dt.UTC)
    return start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def anchor_for(start: dt.datetime, billing_anchor: dt.datetime | str | None) -> dt.datetime:
    """A subscription's anchor: a date-time, ``"calendar"`` (the 1st of the start's month) or None (the start).
    ValueError for anything else."""
    if billing_anchor == "calendar":
        return calendar_anchor(start)
    if billing_anchor is None:
        return start
    if isinstance(billing_anchor, dt.datetime):
        return billing_anchor
    raise ValueError("billing anchor must be a date-time, 'calendar' or empty")
