"""Reading raw events: the list API and the explorer."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet

from ..models import Event

DEFAULT_LIST_WINDOW = dt.timedelta(hours=72)
MAX_LIST_LIMIT = 100


def events_list(
    *,
    now: dt.datetime,
    time_from: dt.datetime | None = None,
    time_to: dt.datetime | None = None,
    subject: str | None = None,
    event_id: str | None = None,
    ingested_from: dt.datetime | None = None,
    ingested_to: dt.datetime | None = None,
    limit: int = MAX_LIST_LIMIT,
) -> list[Event]:
    """Newest first. Like OpenMeter: ``from`` defaults to 72 hours before now; bounds are inclusive;
    ``subject`` and ``id`` match partially."""
    if time_from is None:
        time_from = now - DEFAULT_LIST_WINDOW
    events: QuerySet[Event] = Event.objects.filter(time__gte=time_from)
    if time_to is not None:
        events = events.filter(time__lte=time_to)
    if subject:
        events = events.filter(subject__contains=subject)
    if event_id:
        events = events.filter(event_id__contains=event_id)
    if ingested_from is not None:
        events = events.filter(ingested_at__gte=ingested_from)
    if ingested_to is not None:
        events = events.filter(ingested_at__lte=ingested_to)
    return list(events.order_by("-time", "-id")[: max(1, min(limit, MAX_LIST_LIMIT))])


def event_types_seen(*, now: dt.datetime, days: int = 30) -> list[str]:
    """Event types of recent events, for the explorer's filter."""
    since = now - dt.timedelta(days=days)
    return list(
        Event.objects.filter(time__gte=since).order_by("type").values_list("type", flat=True).distinct()[:200]
    )
