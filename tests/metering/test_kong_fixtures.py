"""The sample Kong events the repository ships (metering/data/kong_events.json): their shape, and the meters they
recommend, measured on them. The copy in ../shared/fixtures/ is compared too where it is checked out."""

import datetime as dt
import json
from pathlib import Path

import pytest
from django.utils import timezone

from metering.cloudevents import parse_events
from metering.meter_rules import KONG_PRESETS, validate_meter
from metering.services.meters import meter_create
from tests.builders import KONG_FIXTURES_FILE, bearer, body, ingest, kong_fixtures

SHARED_COPY = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "kong_events.json"
EVENT_TYPES = {"kong.api_request", "kong.llm_request"}


def test_the_events_are_cloudevents_of_one_ai_call():
    fixtures = kong_fixtures()
    assert set(fixtures) == {"_about", "events", "recommended_meters"}
    events = fixtures["events"]
    rows = parse_events(body(events), "application/cloudevents-batch+json", now=timezone.now())
    assert [(row.event_id, row.type, row.subject) for row in rows] == [
        (event["id"], event["type"], event["subject"]) for event in events]
    assert len({event["id"] for event in events}) == len(events)
    assert all(event["specversion"] == "1.0" and event["type"] in EVENT_TYPES for event in events)
    assert all(event["data"]["subject_type"] == "consumer_id" for event in events)
    assert len({event["subject"] for event in events}) == 1  # one consumer
    (request,) = [event for event in events if event["type"] == "kong.api_request"]
    llm = [event for event in events if event["type"] == "kong.llm_request"]
    assert sorted(event["data"]["type"] for event in llm) == ["request", "response"]
    assert {event["data"]["api_request_id"] for event in llm} == {request["id"]}
    assert all(isinstance(event["data"]["tokens"], int) and event["data"]["tokens"] > 0 for event in llm)
    assert all(dt.datetime.fromisoformat(event["time"]).tzinfo is not None for event in events)


def test_the_recommended_meters_are_valid_and_are_the_admins_presets():
    meters = kong_fixtures()["recommended_meters"]
    assert [meter["slug"] for meter in meters] == list(KONG_PRESETS)
    for meter in meters:
        assert validate_meter(
            slug=meter["slug"], name=meter["name"], event_type=meter["event_type"],
            aggregation=meter["aggregation"], value_property=meter.get("value_property", ""),
            group_by=meter["group_by"],
        ) == {}
        preset = KONG_PRESETS[meter["slug"]]
        assert {key: preset[key] for key in ("name", "event_type", "aggregation", "group_by")} == {
            key: meter[key] for key in ("name", "event_type", "aggregation", "group_by")}
        assert preset["value_property"] == meter.get("value_property", "")
    assert {meter["event_type"] for meter in meters} == EVENT_TYPES


@pytest.mark.django_db
def test_the_recommended_meters_measure_the_sample_events(api, read_token):
    fixtures = kong_fixtures()
    for meter in fixtures["recommended_meters"]:
        meter_create(**meter)
    ingest(fixtures["events"])
    window = {"from": "2026-11-03T00:00:00Z", "to": "2026-11-04T00:00:00Z"}

    def query(slug: str, **params) -> list[tuple]:
        response = api.get(f"/api/v1/meters/{slug}/query", {**window, **params}, **bearer(read_token))
        assert response.status_code == 200, response.content
        return [(row["groupBy"], row["value"]) for row in response.json()["data"]]

    assert query("llm_tokens", groupBy=["type"]) == [({"type": "request"}, 24), ({"type": "response"}, 9)]
    assert query("llm_tokens", groupBy=["model", "provider"]) == [({"model": "gpt-4o", "provider": "openai"}, 33)]
    assert query("api_requests", groupBy=["route_name", "status"]) == [({"route_name": "ai-chat", "status": "200"}, 1)]


@pytest.mark.skipif(not SHARED_COPY.exists(), reason="../shared is not checked out beside the repo here")
def test_the_repo_copy_matches_the_shared_contract():
    assert json.loads(KONG_FIXTURES_FILE.read_text()) == json.loads(SHARED_COPY.read_text())
