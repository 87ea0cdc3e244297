"""OpenMeter's own Python client against the live server: exact status codes and shapes."""

from __future__ import annotations

import pytest
from openmeter import Client
from openmeter.models import Event as OpenMeterEvent

from metering.models import Event
from metering.services.tokens import api_token_create
from tests.builders import ingest, iso, llm_event, utc

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(live_server):
    _, token = api_token_create(name="om", scopes=["ingest", "read"])
    return Client(endpoint=live_server.url, token=token)


def test_ingest_event_ingest_events_and_json(client):
    client.events.ingest_event(llm_event(event_id="om-1", time=None))  # raises unless 204
    client.events.ingest_events([llm_event(event_id="om-2", time=None), llm_event(event_id="om-3", time=None)])
    client.events.ingest_events_json([llm_event(event_id="om-4", time=None)])
    # ingest_events_json serializes a single event only when given the client's model
    client.events.ingest_events_json(OpenMeterEvent(llm_event(event_id="om-5", time=None)))
    client.events.ingest_event(llm_event(event_id="om-1", time=None))  # duplicate: accepted, ignored
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["om-1", "om-2", "om-3", "om-4", "om-5"]


def test_events_list(client):
    client.events.ingest_events([llm_event(event_id="om-a", time=None, tokens=7)])
    listed = client.events.list(limit=10)
    assert [e.event.id for e in listed] == ["om-a"]
    assert listed[0].event.data["tokens"] == 7
    assert listed[0].ingested_at is not None
    assert listed[0].event.subject == "kong-air"


def test_meters_create_list_and_query_json(live_server):
    import datetime as dt


    _, token = api_token_create(name="om-admin", scopes=["read", "manage"])
    om = Client(endpoint=live_server.url, token=token)
    created = om.meters.create({"slug": "llm_tokens", "name": "AI Gateway Tokens", "eventType": "kong.llm_request",
                                "aggregation": "SUM", "valueProperty": "$.tokens",
                                "groupBy": {"model": "$.model", "type": "$.type"}})
    assert created.slug == "llm_tokens" and created.event_type == "kong.llm_request"
    assert [m.slug for m in om.meters.list()] == ["llm_tokens"]
    ingest([llm_event(tokens=10, time=iso(utc(2026, 11, 3, 10))),
            llm_event(tokens=4, kind="response", time=iso(utc(2026, 11, 3, 12))),
            llm_event(tokens=6, subject="acme", time=iso(utc(2026, 11, 4, 1)))])
    result = om.meters.query_json(
        "llm_tokens", from_parameter=dt.datetime(2026, 11, 3, tzinfo=dt.UTC),
        to=dt.datetime(2026, 11, 5, tzinfo=dt.UTC), window_size="DAY", subject=["kong-air"],
        # ignore: the client types this as FilterString models, but only sends plain dicts (a model fails to serialize)
        advanced_meter_group_by_filters={"type": {"$eq": "request"}},  # type: ignore[dict-item]
        group_by=["type"],
    )
    assert [(row.value, row.window_start.day, row.subject, row.group_by) for row in result.data] == [
        (10, 3, "kong-air", {"type": "request"})]
    filtered = om.meters.query_json("llm_tokens", from_parameter=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
                                    to=dt.datetime(2026, 12, 1, tzinfo=dt.UTC), filter_group_by={"type": "response"})
    assert [row.value for row in filtered.data] == [4]
