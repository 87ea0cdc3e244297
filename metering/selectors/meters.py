"""Reading meters."""

from __future__ import annotations

import datetime as dt

from django.db.models import Min

from ..models import DailyUsage, Event, Meter
from ..usage_sql import from_db_datetime


def meter_by_id_or_slug(id_or_slug: str) -> Meter | None:
    """OpenMeter's ``{meterIdOrSlug}``: the slug wins; a number also matches the id."""
    meter = Meter.objects.filter(slug=id_or_slug).first()
    if meter is None and id_or_slug.isascii() and id_or_slug.isdigit():
        meter = Meter.objects.filter(pk=int(id_or_slug)).first()
    return meter


def meter_first_usage_time(meter: Meter) -> dt.datetime | None:
    """The earliest event time the meter counts (rolled-up days, or the raw tail)."""
    first_day = DailyUsage.objects.filter(series__meter=meter).aggregate(first=Min("bucket_start"))["first"]
    first_tail = Event.objects.filter(type=meter.event_type, ingest_tx__gte=meter.rollup_low).aggregate(
        first=Min("time"))["first"]
    candidates = [from_db_datetime(t) for t in (first_day, first_tail) if t is not None]
    return min(candidates) if candidates else None


def meters_with_rollup_errors(*, limit: int = 20) -> list[Meter]:
    """Meters whose last rollup failed (the error recorded on them), oldest failure first; one query."""
    return list(Meter.objects.exclude(rollup_error="").only("pk", "slug", "rollup_error", "rollup_failed_at")
                .order_by("rollup_failed_at", "slug")[:limit])
