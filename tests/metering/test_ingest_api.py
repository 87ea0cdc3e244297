"""The event door: content types, validation, limits, tokens, deduplication."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from django.utils import timezone

from metering.cloudevents import MAX_BATCH_EVENTS, MAX_BODY_BYTES, MAX_EVENT_BYTES
from metering.models import ApiToken, Event
from metering.services.tokens import api_token_revoke
from tests.builders import api_request_event, bearer, body, llm_event

pytestmark = pytest.mark.django_db

CE = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
JSON = "application/json"


def post(api, token, payload, content_type=CE_BATCH, path="/api/v1/events", **extra):
    data = payload if isinstance(payload, bytes) else body(payload)
    return api.generic("POST", path, data, content_type=content_type, **bearer(token), **extra)


def assert_problem(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["title"]
    return problem


# --- content types and body shapes --------------------------------------------------------------------

def test_single_cloudevent(api, ingest_token):
    event = llm_event(tokens=24)
    response = post(api, ingest_token, event, content_type=CE)
    assert response.status_code == 204
    assert response.content == b""
    assert response.fast_route  # the suite's clients meet the ingest fast route first (tests/ingest_route_client.py)
    stored = Event.objects.get()
    assert (stored.source, stored.event_id, stored.type, stored.subject) == (
        "kong-gateway", event["id"], "kong.llm_request", "kong-air")
    assert stored.data == event["data"]
    assert stored.time == dt.datetime(2026, 11, 3, 10, 15, 2, 123000, tzinfo=dt.UTC)


def test_batch_cloudevents(api, ingest_token):
    events = [llm_event(tokens=n) for n in range(1, 6)]
    assert post(api, ingest_token, events, content_type=CE_BATCH).status_code == 204
    assert sorted(Event.objects.values_list("data__tokens", flat=True)) == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("shape", ["object", "array"])
def test_application_json_takes_an_object_or_an_array(api, ingest_token, shape):
    events = [llm_event(), llm_event()]
    payload = events[0] if shape == "object" else events
    assert post(api, ingest_token, payload, content_type=JSON).status_code == 204
    assert Event.objects.count() == (1 if shape == "object" else 2)


@pytest.mark.parametrize("content_type", [
    "application/cloudevents-batch+json; charset=utf-8",
    "Application/CloudEvents-Batch+JSON;charset=UTF-8",
    "application/json; charset=utf-8",
])
def test_media_type_parameters_are_accepted(api, ingest_token, content_type):
    assert post(api, ingest_token, [llm_event()], content_type=content_type).status_code == 204
    assert Event.objects.count() == 1


@pytest.mark.parametrize("path", ["/api/v3/openmeter/events", "/v3/openmeter/events"])
def test_kong_paths_answer_202(api, ingest_token, path):
    assert post(api, ingest_token, [llm_event()], path=path).status_code == 202
    assert Event.objects.count() == 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml", ""])
def test_other_content_types_are_415(api, ingest_token, content_type):
    response = post(api, ingest_token, [llm_event()], content_type=content_type)
    problem = assert_problem(response, 415)
    assert "application/cloudevents+json" in problem["detail"]
    assert Event.objects.count() == 0


def test_single_event_media_type_refuses_an_array(api, ingest_token):
    problem = assert_problem(post(api, ingest_token, [llm_event()], content_type=CE), 400)
    assert "JSON object" in problem["errors"][0]["message"]


def test_batch_media_type_refuses_an_object(api, ingest_token):
    problem = assert_problem(post(api, ingest_token, llm_event(), content_type=CE_BATCH), 400)
    assert "array" in problem["errors"][0]["message"]


def test_malformed_json_is_400(api, ingest_token):
    problem = assert_problem(post(api, ingest_token, b'[{"id": "x",', content_type=CE_BATCH), 400)
    assert "malformed JSON" in problem["errors"][0]["message"]


def test_kong_fixture_events_as_is(api, ingest_token, kong_fixtures):
    events = kong_fixtures["events"]
    assert post(api, ingest_token, events, path="/v3/openmeter/events").status_code == 202
    stored = {e.event_id: e for e in Event.objects.all()}
    assert set(stored) == {e["id"] for e in events}
    for event in events:
        assert stored[event["id"]].data == event["data"]
        assert stored[event["id"]].subject == "consumer:8f3c2a10-5b1e-4c7d-9e21-3a4b5c6d7e8f"


def test_empty_batch_is_accepted_and_stores_nothing(api, ingest_token):
    assert post(api, ingest_token, []).status_code == 204
    assert Event.objects.count() == 0


# --- validation ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["id", "source", "specversion", "type", "subject"])
def test_missing_required_field_names_index_and_field(api, ingest_token, field):
    events = [llm_event(), llm_event(), llm_event()]
    del events[1][field]
    problem = assert_problem(post(api, ingest_token, events), 400)
    assert problem["errors"] == [{"index": 1, "field": field, "message": f"{field} is required"}]
    assert Event.objects.count() == 0


@pytest.mark.parametrize("field", ["id", "source", "specversion", "type", "subject"])
@pytest.mark.parametrize("value, expected", [
    (42, "must be a string, not a number"),
    ("", "must not be empty"),
    (None, "is required"),
    (["a"], "must be a string, not an array"),
    ("x" * 256, "must be at most 255 characters"),
])
def test_wrong_typed_or_empty_field(api, ingest_token, field, value, expected):
    events = [llm_event(), llm_event()]
    events[0][field] = value
    problem = assert_problem(post(api, ingest_token, events), 400)
    assert problem["errors"] == [{"index": 0, "field": field, "message": f"{field} {expected}"}]
    assert Event.objects.count() == 0


def test_specversion_must_be_1_0(api, ingest_token):
    event = llm_event()
    event["specversion"] = "0.3"
    problem = assert_problem(post(api, ingest_token, [event]), 400)
    assert problem["errors"] == [
        {"index": 0, "field": "specversion", "message": 'specversion must be "1.0", not "0.3"'}
    ]


@pytest.mark.parametrize(
    "bad_time", ["yesterday", "2026-11-03", "2026-11-03T10:15:02", "2026-13-03T10:15:02Z", 1700000000]
)
def test_bad_time(api, ingest_token, bad_time):
    problem = assert_problem(post(api, ingest_token, [llm_event(), llm_event(time=bad_time)]), 400)
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [(1, "time")]
    assert Event.objects.count() == 0


def test_time_with_offset_is_stored_in_utc(api, ingest_token):
    post(api, ingest_token, [llm_event(time="2026-11-03T12:15:02.5+02:00")])
    assert Event.objects.get().time == dt.datetime(2026, 11, 3, 10, 15, 2, 500000, tzinfo=dt.UTC)


def test_nanosecond_time_is_accepted(api, ingest_token):
    post(api, ingest_token, [llm_event(time="2026-11-03T10:15:02.123456789Z")])
    assert Event.objects.get().time.microsecond == 123457


def test_missing_time_means_now(api, ingest_token):
    before = timezone.now()
    post(api, ingest_token, [llm_event(time=None)])
    assert before <= Event.objects.get().time <= timezone.now()


@pytest.mark.parametrize("data, kind", [([1, 2], "an array"), ("tokens=5", "a string"), (7, "a number"),
                                        (True, "a boolean")])
def test_data_must_be_an_object(api, ingest_token, data, kind):
    event = llm_event()
    event["data"] = data
    problem = assert_problem(post(api, ingest_token, [event]), 400)
    message = f"data must be a JSON object or null, not {kind}"
    assert problem["errors"] == [{"index": 0, "field": "data", "message": message}]


def test_data_null_or_absent_is_accepted(api, ingest_token):
    with_null, absent = llm_event(), llm_event()
    with_null["data"] = None
    del absent["data"]
    assert post(api, ingest_token, [with_null, absent]).status_code == 204
    assert list(Event.objects.values_list("data", flat=True)) == [None, None]


def test_nul_characters_are_rejected_everywhere(api, ingest_token):
    in_data, in_subject = llm_event(note="a\u0000b"), llm_event(subject="kong\u0000air")
    problem = assert_problem(post(api, ingest_token, [in_data, in_subject]), 400)
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [(0, "data"), (1, "subject")]


def test_escaped_backslash_before_u0000_text_is_fine(api, ingest_token):
    event = llm_event(note="C:\\u0000dir")  # a literal backslash, not a NUL
    assert post(api, ingest_token, [event]).status_code == 204
    data = Event.objects.get().data
    assert data is not None
    assert data["note"] == "C:\\u0000dir"


def test_every_bad_event_and_field_is_reported_and_nothing_is_stored(api, ingest_token):
    events: list[Any] = [llm_event() for _ in range(5)]
    del events[1]["id"]
    events[1]["subject"] = ""
    events[3]["time"] = "not a time"
    events[4] = "not an event"
    problem = assert_problem(post(api, ingest_token, events), 400)
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [(1, "id"), (1, "subject"), (3, "time"), (4, None)]
    assert Event.objects.count() == 0


# --- limits --------------------------------------------------------------------------------------------

def test_body_over_5_mib_is_413(api, ingest_token):
    payload = b"[" + b" " * MAX_BODY_BYTES + b"]"
    problem = assert_problem(post(api, ingest_token, payload), 413)
    assert "5,242,880" in problem["detail"]


def test_batch_over_10000_events_is_413(api, ingest_token):
    events = [{"specversion": "1.0", "id": str(i), "source": "s", "type": "t", "subject": "x"}
              for i in range(MAX_BATCH_EVENTS + 1)]
    problem = assert_problem(post(api, ingest_token, events), 413)
    assert "10,000" in problem["detail"]
    assert Event.objects.count() == 0


def test_batch_of_exactly_10000_events_is_accepted(api, ingest_token):
    events = [{"specversion": "1.0", "id": str(i), "source": "s", "type": "t", "subject": "x"}
              for i in range(MAX_BATCH_EVENTS)]
    assert post(api, ingest_token, events).status_code == 204
    assert Event.objects.count() == MAX_BATCH_EVENTS


def test_event_over_64_kib_is_400(api, ingest_token):
    big = llm_event(padding="x" * MAX_EVENT_BYTES)
    problem = assert_problem(post(api, ingest_token, [llm_event(), big]), 400)
    assert problem["errors"][0]["index"] == 1
    assert "65,536" in problem["errors"][0]["message"]
    assert Event.objects.count() == 0


# --- tokens --------------------------------------------------------------------------------------------

def test_missing_token_is_401(api):
    response = api.generic("POST", "/api/v1/events", body([llm_event()]), content_type=CE_BATCH)
    assert_problem(response, 401)
    assert response["WWW-Authenticate"] == "Bearer"
    assert Event.objects.count() == 0


def test_unknown_token_is_401(api):
    assert_problem(post(api, "bbo_not-a-real-token", [llm_event()]), 401)


def test_empty_bearer_is_401(api):
    response = api.generic("POST", "/api/v1/events", body([llm_event()]), content_type=CE_BATCH,
                           HTTP_AUTHORIZATION="Bearer ")
    assert_problem(response, 401)


def test_revoked_token_is_401(api, ingest_token):
    assert post(api, ingest_token, [llm_event()]).status_code == 204
    api_token_revoke(token=ApiToken.objects.get())
    assert_problem(post(api, ingest_token, [llm_event()]), 401)
    assert Event.objects.count() == 1


def test_token_without_ingest_scope_is_403(api, read_token):
    problem = assert_problem(post(api, read_token, [llm_event()]), 403)
    assert "ingest" in problem["detail"]
    assert Event.objects.count() == 0


def test_last_used_is_recorded(api, ingest_token):
    token = ApiToken.objects.get()
    assert token.last_used_at is None
    before = timezone.now()
    post(api, ingest_token, [llm_event()])
    token.refresh_from_db()
    assert token.last_used_at is not None and token.last_used_at >= before


# --- deduplication -------------------------------------------------------------------------------------

def test_duplicates_within_a_batch_count_once_first_wins(api, ingest_token):
    first = llm_event(event_id="dup-1", tokens=10)
    again = llm_event(event_id="dup-1", tokens=99)
    assert post(api, ingest_token, [first, again, llm_event()]).status_code == 204
    assert Event.objects.count() == 2
    data = Event.objects.get(event_id="dup-1").data
    assert data is not None
    assert data["tokens"] == 10


def test_duplicates_across_batches_are_accepted_and_ignored(api, ingest_token):
    events = [llm_event() for _ in range(3)]
    assert post(api, ingest_token, events).status_code == 204
    assert post(api, ingest_token, events + [llm_event()]).status_code == 204
    assert post(api, ingest_token, events[0], content_type=CE).status_code == 204
    assert Event.objects.count() == 4


def test_same_id_from_another_source_counts_separately(api, ingest_token):
    post(api, ingest_token, [llm_event(event_id="e-1", source="kong-eu"), llm_event(event_id="e-1", source="kong-us")])
    assert Event.objects.count() == 2


def test_large_batches_use_the_bulk_path_and_dedupe(api, ingest_token):
    events = [api_request_event() for _ in range(500)]
    assert post(api, ingest_token, events).status_code == 204
    assert post(api, ingest_token, events[250:] + [api_request_event() for _ in range(10)]).status_code == 204
    assert Event.objects.count() == 510


@pytest.mark.django_db(transaction=True)  # each request commits its own transaction
def test_each_batch_gets_one_ingest_transaction_number(api, ingest_token):
    post(api, ingest_token, [llm_event(), llm_event()])
    post(api, ingest_token, [llm_event()])
    txs = list(Event.objects.order_by("id").values_list("ingest_tx", flat=True))
    assert txs[0] == txs[1] < txs[2]


def test_problem_json_body_is_json(api, ingest_token):
    response = post(api, ingest_token, [{"id": 1}])
    problem = json.loads(response.content)
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"id", "source", "specversion", "type", "subject"}
