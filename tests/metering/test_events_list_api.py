"""GET /api/v1/events: OpenMeter's list of ingested events."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from tests.builders import bearer, body, llm_event

pytestmark = pytest.mark.django_db


def rfc3339(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def stored(api, ingest_token):
    now = timezone.now().replace(microsecond=0)
    events = [
        llm_event(event_id="old", subject="kong-air", time=rfc3339(now - dt.timedelta(days=5))),
        llm_event(event_id="a-1", subject="kong-air", time=rfc3339(now - dt.timedelta(hours=2))),
        llm_event(event_id="a-2", subject="acme-corp", time=rfc3339(now - dt.timedelta(hours=1))),
        llm_event(event_id="a-3", subject="kong-air", time=rfc3339(now - dt.timedelta(minutes=5))),
    ]
    response = api.generic("POST", "/api/v1/events", body(events), content_type="application/json",
                           **bearer(ingest_token))
    assert response.status_code == 204
    return now


def get(api, token, **params):
    return api.get("/api/v1/events", params, **bearer(token))


def test_default_is_last_72_hours_newest_first(api, read_token, stored):
    response = get(api, read_token)
    assert response.status_code == 200
    items = response.json()
    assert [i["event"]["id"] for i in items] == ["a-3", "a-2", "a-1"]
    first = items[0]
    assert set(first) >= {"event", "ingestedAt", "validationError"}
    assert first["event"]["specversion"] == "1.0"
    assert first["event"]["data"]["tokens"] == 24
    assert first["event"]["time"].endswith("Z")
    assert first["ingestedAt"].endswith("Z")


def test_filters(api, read_token, stored):
    now = stored
    ids = lambda **p: [i["event"]["id"] for i in get(api, read_token, **p).json()]  # noqa: E731
    assert ids(**{"from": rfc3339(now - dt.timedelta(days=6))}) == ["a-3", "a-2", "a-1", "old"]
    assert ids(to=rfc3339(now - dt.timedelta(minutes=30))) == ["a-2", "a-1"]
    assert ids(subject="acme") == ["a-2"]
    assert ids(id="a-") == ["a-3", "a-2", "a-1"]
    assert ids(limit=1) == ["a-3"]
    assert ids(ingestedAtFrom=rfc3339(now + dt.timedelta(hours=1))) == []
    assert ids(ingestedAtTo=rfc3339(now + dt.timedelta(hours=1))) == ["a-3", "a-2", "a-1"]


@pytest.mark.parametrize("field, value", [
    ("from", "yesterday"),
    ("to", "2026-11-03T10:00:00"),
    ("limit", "0"),
    ("limit", "101"),
    ("limit", "ten"),
    ("ingestedAtFrom", "x"),
])
def test_bad_parameters_are_400(api, read_token, field, value):
    response = get(api, read_token, **{field: value})
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == field


def test_read_scope_is_needed(api, ingest_token, stored):
    response = get(api, ingest_token)
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"


def test_unauthenticated_is_401(api, stored):
    assert api.get("/api/v1/events").status_code == 401


def test_staff_session_may_read(api, admin_user, stored):
    api.force_login(admin_user)
    assert len(api.get("/api/v1/events").json()) == 3
