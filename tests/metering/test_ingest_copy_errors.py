"""Errors of a batch stored through the staging COPY (PostgreSQL, more than SMALL_BATCH events) are Django's
database errors, like those of every other statement: a number jsonb cannot hold is a 400 (as in a small
batch), and a connection lost during the COPY is Django's OperationalError (found by the fault soak,
bench/soak.py: a raw ``psycopg.OperationalError`` escaped the service)."""

from __future__ import annotations

import json

import psycopg
import pytest
from django.db import OperationalError, connection
from django.utils import timezone

from metering.cloudevents import MEDIA_BATCH, parse_events
from metering.models import Event
from metering.services.ingest import SMALL_BATCH, events_ingest
from tests.builders import bearer, llm_event

BIG = SMALL_BATCH + 8  # the staging COPY path on PostgreSQL


def batch_with_poison(size: int) -> bytes:
    """``size`` events, the last one's tokens a number PostgreSQL's jsonb cannot hold."""
    events = json.dumps([llm_event(event_id=f"ok-{i}", tokens=1, time=None) for i in range(size - 1)])
    poison = json.dumps(llm_event(event_id="poison", tokens=1, time=None)).replace('"tokens": 1', '"tokens": 1e400000')
    assert "1e400000" in poison
    return (events[:-1] + ", " + poison + "]").encode()


@pytest.mark.django_db
@pytest.mark.parametrize("size", [2, BIG])
def test_a_number_jsonb_cannot_hold_is_400_in_a_batch_of_any_size(api, ingest_token, size):
    response = api.generic("POST", "/api/v1/events", batch_with_poison(size), content_type=MEDIA_BATCH,
                           **bearer(ingest_token))
    if connection.vendor != "postgresql":  # SQLite stores the text; the meter flags it (test_value_bound)
        assert response.status_code == 204
        return
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    error = response.json()["errors"][0]
    assert (error["index"], error["field"]) == (size - 1, "data")
    assert Event.objects.count() == 0  # all or nothing


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_connection_lost_during_the_copy_is_djangos_operational_error(monkeypatch):
    def lost(self, row):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(psycopg.Copy, "write", lost)
    now = timezone.now()
    body = json.dumps([llm_event(event_id=f"e-{i}", tokens=1, time=None) for i in range(BIG)]).encode()
    rows = parse_events(body, MEDIA_BATCH, now=now)
    with pytest.raises(OperationalError) as caught:
        events_ingest(rows=rows, received_at=now)
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
