"""Usage for the gateway's hot path: the settled part remembered per process, only the newest events read live.

An entitlement check (and a credit check's pending usage) wants a customer's usage over a whole period, many times
a second. Most of that usage is settled: the aggregator has folded it into rollups, and an event's ``ingest_tx`` is
below the meter's ``rollup_low`` for good once rolled up. So a total is split in two (additive aggregations, SUM
and COUNT):

- the **settled** part, the events below the ``rollup_low`` one statement saw (rollups plus raw partial hours,
  :func:`~metering.selectors.usage.usage_rows` ``part="settled"``). No later ingest changes it, because
  every event stored later has a higher ``ingest_tx``, and events are never edited or deleted; it is remembered
  per process with that ``low``;
- the **newest** events, ``ingest_tx >= low``, read live by time on every call (``part="since"``): an event
  counts the moment it is committed, as in :func:`~metering.selectors.usage.usage_total_for_periods`.

On PostgreSQL the remembered part also grows: the newest statement tells which of its events lie below its
snapshot's xmin (every transaction below it has ended, so no event below it can still appear), and those are added
to the remembered part, whose mark (``high``) moves up to that xmin. The next call reads only the events from
there: those committed since (or still running then), not every event the aggregator has yet to fold in.

The sum is exact whenever it is taken. A remembered part is read again when the meter's rollups were reset
(``rollup_low`` went down), after ``USAGE_SETTLED_MAX_SECONDS`` in any case (each part at a time drawn between half
of it and all of it, so parts remembered together, as a restarted worker's, are not all read again at once), and,
where it cannot grow (SQLite), once the aggregator has moved on and it is older than
``USAGE_SETTLED_REFRESH_SECONDS``, so the newest events read live stay few. Its key holds the
meter's definition, the subjects' periods and the filters, so a changed definition or attribution is a new entry.
Totals may be split by some group-by values (a dimensional price's table keys), each group summed the same way.
Other aggregations (MIN, MAX, AVG, LATEST, UNIQUE_COUNT) are read whole each time.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from common.caches import ProcessCache

from ..models import Meter
from ..windows import Piece, decompose
from .usage import UsageRow, UsageRows, equality_filters, usage_rows

ADDITIVE = frozenset({Meter.Aggregation.SUM, Meter.Aggregation.COUNT})

SubjectPeriods = tuple[tuple[str, dt.datetime, dt.datetime], ...]


@dataclass(frozen=True)
class LiveUsage:
    """One usage asked of :func:`usage_groups_live`: the subjects, each counted in its own ``[start, end)``, and
    equality filters on the meter's group-by values; with ``dimensions``, split by those group-by values."""

    subject_periods: SubjectPeriods
    filters: tuple[tuple[str, str], ...] = ()
    dimensions: tuple[str, ...] = ()

    @classmethod
    def of(cls, subject_periods: Sequence[tuple[str, dt.datetime, dt.datetime]],
           filters: dict[str, str] | None = None, dimensions: Sequence[str] = ()) -> LiveUsage:
        return cls(tuple(sorted((s, a, b) for s, a, b in subject_periods if a < b)),
                   tuple(sorted((str(k), str(v)) for k, v in (filters or {}).items())), tuple(dimensions))


Groups = dict[tuple[str | None, ...], Decimal]  # the dimensions' values (None: missing) → usage


@dataclass(frozen=True)
class _Settled:
    low: int  # the meter's rollup_low the settled statement saw
    groups: Groups  # the usage of the events below ``high``
    stored: float  # time.monotonic() of the settled statement
    high: int  # ≥ low: the newest events below it were added to ``groups`` (PostgreSQL), else ``low``
    expires: float  # time.monotonic() after which it is read again


# By (meter definition, request). Each process has its own: one that has not read a total yet reads it whole.
_SETTLED: ProcessCache[_Settled] = ProcessCache(maxsize=settings.USAGE_SETTLED_CACHE_SIZE,
                                                ttl=settings.USAGE_SETTLED_MAX_SECONDS)


def forget_settled_usage() -> None:
    _SETTLED.clear()


def _definition_key(meter: Meter) -> tuple:
    return (meter.pk, meter.event_type, meter.aggregation, meter.value_property or "", meter.value_absent,
            json.dumps(meter.group_by or {}, sort_keys=True))


def usage_groups_live(*, meter: Meter, requests: Sequence[LiveUsage]) -> list[Groups]:
    """Each request's usage by its dimensions' values (``{(): total}`` without dimensions; groups without usage
    left out), equal to the whole query's at this moment (see the module)."""
    unique = list(dict.fromkeys(requests))  # the entitlement's own usage is often one of the pending usage's
    if len(unique) < len(requests):
        found = dict(zip(unique, usage_groups_live(meter=meter, requests=unique), strict=True))
        return [dict(found[request]) for request in requests]
    if meter.aggregation not in ADDITIVE:
        return [_whole(meter, request) for request in requests]
    definition = _definition_key(meter)
    settled: list[_Settled | None] = []
    now = time.monotonic()
    unknown: list[int] = []  # the positions whose settled part is read now
    for position, request in enumerate(requests):
        entry = _SETTLED.get((definition, request)) if request.subject_periods else None
        if request.subject_periods and (entry is None or now >= entry.expires):
            # (a grown entry was set again: the cache's own TTL restarted)
            unknown.append(position)
        settled.append(entry)
    if unknown:  # one statement for all of them
        for position, entry in zip(unknown, _settled_parts(meter, [requests[p] for p in unknown]), strict=True):
            _SETTLED.set((definition, requests[position]), entry)
            settled[position] = entry
    results: list[Groups] = [dict(entry.groups) if entry is not None else {} for entry in settled]
    positions = [position for position, entry in enumerate(settled) if entry is not None]
    if positions:  # one statement, each request from its own mark
        newest = _newest_part(meter, [requests[p] for p in positions],
                              [entry.high for entry in settled if entry is not None])
        for position, live, final in zip(positions, newest.live, newest.final, strict=True):
            _add(results[position], live)
            _add(results[position], final)
            entry = settled[position]
            assert entry is not None
            key = (definition, requests[position])
            stale = (not newest.high and newest.low > entry.low
                     and now - entry.stored >= settings.USAGE_SETTLED_REFRESH_SECONDS)
            if stale or newest.low < entry.low:  # moved on (read the settled part again next time), or reset
                _SETTLED.forget(key)
            elif newest.high > entry.high:  # the newest events below the snapshot's xmin are settled now
                grown = dict(entry.groups)
                _add(grown, final)
                _SETTLED.set(key, _Settled(entry.low, grown, entry.stored, newest.high, entry.expires))
    return results


def _add(groups: Groups, more: Groups) -> None:
    for values, value in more.items():
        _count(groups, values, value)


def _count(groups: Groups, values: tuple[str | None, ...], value: Decimal) -> None:
    groups[values] = groups.get(values, Decimal(0)) + value


def _bounds(request: LiveUsage) -> tuple[dt.datetime, dt.datetime]:
    return min(a for _, a, _ in request.subject_periods), max(b for _, _, b in request.subject_periods)


def _subjects(requests: Sequence[LiveUsage]) -> list[str]:
    return sorted({s for request in requests for s, _, _ in request.subject_periods})


def _whole(meter: Meter, request: LiveUsage) -> Groups:
    """One statement: the request's whole usage by its dimensions, its filters applied in SQL (an aggregation that
    is not additive cannot be summed over more groups than asked)."""
    if not request.subject_periods:
        return {}
    pieces = [piece for subject, a, b in request.subject_periods for piece in decompose(0, a, b, subject)]
    rows = usage_rows(meter=meter, pieces=pieces, window_bounds=[_bounds(request)],
                      group_by=list(request.dimensions), subjects=_subjects([request]),
                      filters=equality_filters(dict(request.filters)), part="all")
    groups: Groups = {}
    for row in rows:
        _count(groups, tuple(row.group_by.get(name) for name in request.dimensions), row.value)
    return groups


def _settled_parts(meter: Meter, requests: list[LiveUsage]) -> list[_Settled]:
    """Each request's settled part, read in one statement (a cold credit check asks two: its entitlement's usage
    period and its billing period), grouped by request and by every dimension and filter key (SUM and COUNT add
    up over those groups)."""
    rows = _rows_by_request(meter, requests, "settled")
    groups: list[Groups] = [{} for _ in requests]
    for row in rows:
        values = _counted_as(requests[row.index], row)
        if values is not None:
            _count(groups[row.index], values, row.value)
    now = time.monotonic()
    return [_Settled(rows.low, found, now, rows.low,
                     now + settings.USAGE_SETTLED_MAX_SECONDS * random.uniform(0.5, 1.0)) for found in groups]


def _counted_as(request: LiveUsage, row: UsageRow) -> tuple[str | None, ...] | None:
    """The request's dimension values of a row of :func:`_rows_by_request`, or None when its filters leave it out."""
    if all(row.group_by.get(key) == value for key, value in request.filters):
        return tuple(row.group_by.get(name) for name in request.dimensions)
    return None


def _rows_by_request(meter: Meter, requests: list[LiveUsage], part: str, since: list[int] | None = None) -> UsageRows:
    """One statement of ``part`` for several requests: each row's index is its request's position; grouped by every
    dimension and filter key of them, the filters left to the caller."""
    pieces = [piece for position, request in enumerate(requests) for subject, a, b in request.subject_periods
              for piece in (decompose(position, a, b, subject) if part == "settled"
                            else [Piece(position, a, b, "R", subject)])]
    keys = sorted({key for request in requests for key in (*request.dimensions, *(k for k, _ in request.filters))})
    return usage_rows(meter=meter, pieces=pieces, window_bounds=[_bounds(r) for r in requests], group_by=keys,
                      subjects=_subjects(requests), part=part, since_tx=since or 0)


@dataclass
class _Newest:
    """The newest events' usage per request: ``final`` below ``high`` (the snapshot's xmin; 0 and nothing final
    but on PostgreSQL), ``live`` the rest; ``low`` the meter's ``rollup_low`` the statement saw."""

    live: list[Groups]
    final: list[Groups]
    low: int
    high: int


def _newest_part(meter: Meter, requests: list[LiveUsage], since: list[int]) -> _Newest:
    """Each request's usage of the raw events with ``ingest_tx`` at or above its ``since`` in its periods, by its
    dimensions (one statement for all, grouped by request and by every dimension and filter key)."""
    rows = _rows_by_request(meter, requests, "since", since)
    newest = _Newest([{} for _ in requests], [{} for _ in requests], rows.low, rows.high)
    for row in rows:
        values = _counted_as(requests[row.index], row)
        if values is not None:
            _count((newest.final if row.final else newest.live)[row.index], values, row.value)
    return newest
