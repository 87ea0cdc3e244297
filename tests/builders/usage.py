"""Usage through the real pipeline: store events with the ingest service, fold them with the real aggregator."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

from django.db import connection
from django.db.models import Max
from django.utils import timezone

from metering.cloudevents import parse_events
from metering.models import Event, Meter
from metering.services.ingest import events_ingest
from metering.services.meters import meter_create
from metering.services.rollups import activity_process_chunk, rollups_catch_up
from metering.usage_sql import safe_high

__all__ = ["ingest", "roll_up", "make_meter", "wait_until_foldable"]


def ingest(events: list[dict], *, now: dt.datetime | None = None) -> None:
    rows = parse_events(json.dumps(events).encode(), "application/json", now=now or timezone.now())
    events_ingest(rows=rows, received_at=now or timezone.now())


def roll_up(meter: Meter | None = None, max_events: int = 500_000, timeout: float = 60.0) -> None:
    """Fold everything stored so far. On PostgreSQL the aggregator only takes transactions older than the
    oldest one still running anywhere in the cluster, so wait for concurrent writers to move past ours (the other
    xdist workers' tests run in the same cluster: the timeout leaves room for their longest transaction)."""
    meters = [meter] if meter else list(Meter.objects.all())
    newest = Event.objects.aggregate(newest=Max("ingest_tx"))["newest"]
    deadline = time.monotonic() + timeout
    for m in meters:
        while True:
            rollups_catch_up(meter_id=m.pk, max_events=max_events)
            m.refresh_from_db()
            if newest is None or m.rollup_low > newest:
                break
            assert time.monotonic() < deadline, "the aggregator did not catch up (a long transaction running?)"
            time.sleep(0.02)
    while True:
        result = activity_process_chunk()
        if newest is None or result.high > newest:
            break
        assert time.monotonic() < deadline, "the activity aggregator did not catch up"
        if result.caught_up:
            time.sleep(0.02)


def make_meter(**overrides: Any) -> Meter:
    fields: dict[str, Any] = {"slug": "llm_tokens", "name": "Tokens", "event_type": "kong.llm_request",
                              "aggregation": "SUM", "value_property": "$.tokens",
                              "group_by": {"model": "$.model", "type": "$.type"}}
    fields.update(overrides)
    return meter_create(**fields)


def wait_until_foldable(timeout: float = 60.0) -> None:
    """Wait until every stored event is below the aggregator's safe bound (other writers on PostgreSQL)."""
    newest = Event.objects.aggregate(newest=Max("ingest_tx"))["newest"] or 0
    deadline = time.monotonic() + timeout
    while True:
        with connection.cursor() as cursor:
            if safe_high(cursor) > newest:
                return
        assert time.monotonic() < deadline, "a long transaction keeps the aggregator from folding"
        time.sleep(0.02)
