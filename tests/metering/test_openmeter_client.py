"""OpenMeter's own Python client against the live server: exact status codes and shapes."""

from __future__ import annotations

import pytest
from openmeter import Client
from openmeter.models import Event as OpenMeterEvent

from metering.models import Event
from metering.services.tokens import api_token_create
from tests.metering.helpers import llm_event

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
