"""Metering's figures for the admin home: usage per day of the busiest meters, and events whose value no meter
could read — counted per event, not per meter. Both read the daily rollups (a bounded read, whatever the number
of raw events)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any

from django.db.models import F, Sum

from ..models import DailyUsage, Meter

ADDITIVE = ("SUM", "COUNT")


def unreadable_events(*, since: dt.datetime) -> int:
    """Events since ``since`` whose value a meter could not read. One event feeds every meter of its type, so
    per event type and day the count is the largest of its meters' counts (an event unreadable for two meters
    is one event), not their sum. COUNT meters read no value."""
    rows = (
        DailyUsage.objects.filter(bucket_start__gte=since)
        .exclude(series__meter__aggregation="COUNT")
        .values("series__meter_id", "series__meter__event_type", "bucket_start")
        .annotate(bad=Sum(F("event_count") - F("value_count")))
    )
    worst: dict[tuple[str, dt.datetime], int] = defaultdict(int)
    for row in rows:
        key = (row["series__meter__event_type"], row["bucket_start"])
        worst[key] = max(worst[key], int(row["bad"] or 0))
    return sum(worst.values())


def _unit(meter: Meter) -> str:
    if meter.aggregation == "SUM":
        return (meter.value_property or "").rsplit(".", 1)[-1].strip("[]\"'").replace("_", " ") or "units"
    return "requests" if meter.aggregation == "COUNT" and "request" in meter.event_type else "events"


def usage_per_day_of_top_meters(*, since: dt.datetime, now: dt.datetime, limit: int = 3) -> list[dict[str, Any]]:
    """The ``limit`` meters with the most events since ``since``, each with one point per UTC day up to ``now``:
    the day's total for SUM and COUNT meters, its number of events for the others (two queries)."""
    rows = (
        DailyUsage.objects.filter(bucket_start__gte=since)
        .values("series__meter_id", "bucket_start")
        .annotate(events=Sum("event_count"), total=Sum("value_sum"))
    )
    per_meter: dict[int, dict[dt.date, tuple[int, Decimal]]] = defaultdict(dict)
    events: dict[int, int] = defaultdict(int)
    for row in rows:
        day = row["bucket_start"].astimezone(dt.UTC).date()
        count, total = per_meter[row["series__meter_id"]].get(day, (0, Decimal(0)))
        per_meter[row["series__meter_id"]][day] = (count + int(row["events"] or 0),
                                                   total + Decimal(row["total"] or 0))
        events[row["series__meter_id"]] += int(row["events"] or 0)
    top = sorted(events, key=lambda meter_id: (-events[meter_id], meter_id))[:limit]
    meters = Meter.objects.in_bulk(top)
    first = since.astimezone(dt.UTC).date()
    days = [first + dt.timedelta(days=n) for n in range((now.astimezone(dt.UTC).date() - first).days + 1)]
    found = []
    for meter_id in top:
        meter = meters.get(meter_id)
        if meter is None:
            continue
        by_day = per_meter[meter_id]
        additive = meter.aggregation == "SUM"
        points = []
        for day in days:
            count, total = by_day.get(day, (0, Decimal(0)))
            points.append((f"{day:%b %d}", total.normalize() if additive else Decimal(count)))
        found.append({"meter": meter, "unit": _unit(meter), "points": points})
    return found
