"""Reading raw events: the list API and the explorer."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet

from ..jsonpath import JsonPathError, group_value, parse
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


RECENT_EVENTS_SAMPLED = 500
SUGGESTIONS_MAX = 200


def recent_data_keys(*, event_type: str | None = None, sample: int = RECENT_EVENTS_SAMPLED) -> list[str]:
    """The top-level ``data`` keys of the most recent events (of ``event_type``, or any): what a meter may group
    by, offered as ``$.key`` beside the key. A bounded read (the newest ``sample`` events)."""
    events = Event.objects.order_by("-id")
    if event_type:
        events = events.filter(type=event_type)
    keys: set[str] = set()
    for data in events.values_list("data", flat=True)[:sample]:
        if isinstance(data, dict):
            keys.update(str(k) for k in data)
        if len(keys) >= SUGGESTIONS_MAX:
            break
    return sorted(keys)[:SUGGESTIONS_MAX]


def recent_group_values(meters, *, sample: int = RECENT_EVENTS_SAMPLED) -> tuple[list[str], list[str]]:
    """The group-by names of ``meters`` and the values their JSONPaths find in the most recent events of each
    meter's event type (feature filters offer them)."""
    names: set[str] = set()
    values: set[str] = set()
    for meter in meters:
        paths = {}
        for name, path in (meter.group_by or {}).items():
            names.add(str(name))
            try:
                paths[name] = parse(path)
            except JsonPathError:
                continue
        if not paths:
            continue
        for data in Event.objects.filter(type=meter.event_type).order_by("-id").values_list("data", flat=True)[:sample]:
            for parsed in paths.values():
                found = group_value(parsed, data)
                if found is not None and len(found) <= 200:
                    values.add(found)
            if len(values) >= SUGGESTIONS_MAX:
                break
    return sorted(names)[:SUGGESTIONS_MAX], sorted(values)[:SUGGESTIONS_MAX]
