"""The admin event explorer."""

from __future__ import annotations

import pytest

from metering.models import Event
from tests.builders import api_request_event, bearer, body, llm_event

pytestmark = pytest.mark.django_db


@pytest.fixture
def events(api, ingest_token):
    payload = [llm_event(subject="kong-air", event_id="evt-llm", time=None), api_request_event(subject="acme-corp")]
    api.generic("POST", "/api/v1/events", body(payload), content_type="application/json", **bearer(ingest_token))
    return payload


def test_explorer_lists_filters_and_searches(admin_client, events):
    page = admin_client.get("/admin/metering/event/")
    assert page.status_code == 200
    assert b"kong.llm_request" in page.content and b"kong.api_request" in page.content
    filtered = admin_client.get("/admin/metering/event/", {"type": "kong.api_request"}).content
    assert b"acme-corp" in filtered and b"evt-llm" not in filtered
    found = admin_client.get("/admin/metering/event/", {"q": "evt-llm"}).content
    assert b"evt-llm" in found and b"acme-corp" not in found
    recent = admin_client.get("/admin/metering/event/", {"within": "1h"}).content
    assert b"evt-llm" in recent and b"acme-corp" not in recent  # the api event is timed in 2026-11-03


def test_explorer_detail_shows_pretty_json_and_is_read_only(admin_client, events):
    event = Event.objects.get(event_id="evt-llm")
    page = admin_client.get(f"/admin/metering/event/{event.pk}/change/")
    assert page.status_code == 200
    assert b"&quot;tokens&quot;: 24" in page.content
    assert b'name="_save"' not in page.content
    assert admin_client.get("/admin/metering/event/add/").status_code == 403


def test_explorer_list_runs_a_bounded_number_of_queries(admin_client, api, ingest_token, django_assert_max_num_queries):
    api.generic("POST", "/api/v1/events", body([llm_event() for _ in range(60)]), content_type="application/json",
                **bearer(ingest_token))
    with django_assert_max_num_queries(12):
        assert admin_client.get("/admin/metering/event/").status_code == 200
