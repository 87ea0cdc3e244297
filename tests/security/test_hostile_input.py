"""Hostile and careless input, as an attacker or a broken client sends it: every answer is a 4xx problem+json
(or 503 for an outage), never a 500, and nothing is half-written.

Covers issue 15's list: invalid UTF-8 in an ingest body; JSON nested ≥ 1,000 deep in ingest,
``advancedMeterGroupByFilters``, ``filterGroupBy``, POST query and meter bodies; ``time`` of year 0001 or 9999
with an offset; NUL in a path or query parameter; a DAY query in a negative-offset time zone at year 0001; a
signed Stripe webhook nested 5,000 deep or dated in the future; chunked bodies (test client, Django's
development server, gunicorn sync and gthread); a database or broker outage; CSV formula injection.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import kombu.exceptions
import pytest
import redis.exceptions
from django.db import InterfaceError, OperationalError
from django.db.backends.utils import CursorWrapper

from common.csv import csv_cell, csv_writer
from common.json_body import MAX_DEPTH, JsonBodyError, decode_json
from common.middleware import ChunkedBodyError, read_chunked_body
from common.parsers import MAX_JSON_BODY_BYTES
from invoicing.models import Invoice, StripeWebhookEvent
from invoicing.services.close import close_cycles
from metering.cloudevents import MAX_BODY_BYTES
from metering.models import Event, Meter
from metering.selectors.usage import meter_query
from tests.builders import (
    AFTER_NOV,
    bearer,
    copy_sqlite,
    ingest,
    iso,
    llm_event,
    make_meter,
    process_env,
    roll_up,
    subscribe_with_november_usage,
    utc,
)
from tests.fakes.stripe_server import sign_webhook_payload

ROOT = Path(__file__).resolve().parents[2]
CE = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
DEEP = 1_000


def nested(depth: int, leaf: str = "1") -> str:
    """A JSON value nested ``depth`` levels: ``[[[...1...]]]``."""
    return "[" * depth + leaf + "]" * depth


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["title"]
    return problem


@pytest.fixture
def token(make_token) -> str:
    return make_token("ingest", "read", "manage", name="everything")


def post_events(api, token: str, payload: bytes, content_type: str = CE_BATCH, **extra):
    return api.generic("POST", "/api/v1/events", payload, content_type=content_type, **bearer(token), **extra)


def with_data(event: dict, raw_data: str) -> bytes:
    """``event`` as JSON with ``data`` replaced by raw JSON text."""
    return json.dumps({**event, "data": "@DATA@"}).replace('"@DATA@"', raw_data).encode()


# --- the body decoder itself ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    (nested(MAX_DEPTH + 1).encode(), f"nested deeper than {MAX_DEPTH} levels"),
    (nested(5_000).encode(), f"nested deeper than {MAX_DEPTH} levels"),
    (b'{"a": "\xff"}', "invalid UTF-8 at byte 7"),
    (b'{"a": "x\\u0000"}', "NUL"),
    (b"NaN", "malformed JSON"),
    (b'{"a": 1', "malformed JSON"),
])
def test_decode_json_refuses(text, message):
    with pytest.raises(JsonBodyError, match=message):
        decode_json(text)


def test_decode_json_accepts_the_limit_and_brackets_inside_strings():
    assert decode_json(nested(MAX_DEPTH)) == json.loads(nested(MAX_DEPTH))
    deep_text = '"' + "[{" * 500 + '"'
    assert decode_json(f'{{"a": [{deep_text}, "\\\\u0000"]}}') == {"a": ["[{" * 500, "\\u0000"]}


# --- ingest: UTF-8, depth, time -------------------------------------------------------------------------------

def test_invalid_utf8_in_a_single_event_is_400_naming_it(api, token):
    payload = json.dumps(llm_event()).encode().replace(b"kong-air", b"kong-\xff\xfeair")
    problem = assert_problem(post_events(api, token, payload, CE), 400)
    assert problem["errors"][0]["index"] == 0 and "UTF-8" in problem["errors"][0]["message"]
    assert not Event.objects.exists()


@pytest.mark.parametrize("where", ["subject", "data", "an ignored attribute"])
def test_invalid_utf8_in_a_batch_names_the_event_and_stores_nothing(api, token, where):
    events = [json.dumps(llm_event()).encode() for _ in range(4)]
    bad = {"subject": events[2].replace(b'"kong-air"', b'"kong\xc3("'),
           "data": events[2].replace(b'"gpt-4o"', b'"gpt\xed\xa0\x80"'),  # an encoded surrogate
           "an ignored attribute": events[2].replace(b'"specversion"', b'"ext": "\x80", "specversion"')}[where]
    events[2] = bad
    problem = assert_problem(post_events(api, token, b"[" + b",".join(events) + b"]"), 400)
    assert [e["index"] for e in problem["errors"]] == [2]
    assert "UTF-8" in problem["errors"][0]["message"]
    assert not Event.objects.exists()


def test_invalid_utf8_between_events_is_400(api, token):
    payload = b"[" + json.dumps(llm_event()).encode() + b",\xff" + json.dumps(llm_event()).encode() + b"]"
    assert_problem(post_events(api, token, payload), 400)
    assert not Event.objects.exists()


@pytest.mark.parametrize("depth", [DEEP, 5_000, 100_000])
def test_a_batch_nested_deep_in_one_event_is_400_naming_it(api, token, depth):
    events = [json.dumps(llm_event()).encode() for _ in range(3)]
    events[1] = with_data(llm_event(), '{"x": ' + nested(depth) + "}")
    problem = assert_problem(post_events(api, token, b"[" + b",".join(events) + b"]"), 400)
    assert [e["index"] for e in problem["errors"]] == [1]
    assert f"deeper than {MAX_DEPTH} levels" in problem["errors"][0]["message"]
    assert not Event.objects.exists()


def test_a_single_event_nested_deep_is_400(api, token):
    problem = assert_problem(post_events(api, token, with_data(llm_event(), '{"x": ' + nested(DEEP) + "}"), CE), 400)
    assert problem["errors"][0]["index"] == 0
    assert not Event.objects.exists()


def test_the_depth_limit_counts_from_the_body(api, token):
    """A batch's array is level 1, its event level 2, ``data`` level 3: data may nest 61 more levels."""
    at_limit = with_data(llm_event(), '{"x": ' + nested(MAX_DEPTH - 3) + "}")
    over = with_data(llm_event(), '{"x": ' + nested(MAX_DEPTH - 2) + "}")
    assert post_events(api, token, b"[" + at_limit + b"]").status_code == 204
    assert post_events(api, token, over, CE).status_code == 204  # one level less without the array
    problem = assert_problem(post_events(api, token, b"[" + over + b"]"), 400)
    assert problem["errors"][0]["index"] == 0
    assert Event.objects.count() == 2


def test_an_ignored_attribute_nested_too_deep_is_400(api, token):
    payload = json.dumps({**llm_event(), "ext": "@"}).replace('"@"', nested(100)).encode()
    assert_problem(post_events(api, token, payload, CE), 400)
    assert not Event.objects.exists()


@pytest.mark.parametrize("time", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                  "0001-01-01T00:30:00+00:31", "9999-12-31T23:00:00-23:59",
                                  "9999-12-31T23:59:59.9995Z"])  # past SQLite's last millisecond
def test_a_time_outside_the_calendar_in_utc_is_400_naming_the_field(api, token, time):
    batch = [llm_event(), llm_event(time=time), llm_event()]
    problem = assert_problem(post_events(api, token, json.dumps(batch).encode()), 400)
    assert [(e["index"], e["field"]) for e in problem["errors"]] == [(1, "time")]
    assert "outside the representable range" in problem["errors"][0]["message"]
    assert not Event.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_calendars_edges_themselves_are_stored_and_rolled_up(api, token):
    """The first and last instants both databases hold: stored, and the aggregator folds them (on SQLite an
    instant past 9999-12-31T23:59:59.999 has no hour bucket, which would stop the meter's rollups)."""
    meter = make_meter()
    batch = [llm_event(tokens=1, time="0001-01-01T00:00:00Z"), llm_event(tokens=2, time="9999-12-31T23:59:59.999Z"),
             llm_event(tokens=4, time="0001-01-01T01:00:00+01:00")]
    assert post_events(api, token, json.dumps(batch).encode()).status_code == 204
    times = sorted(Event.objects.values_list("time", flat=True))
    assert (times[0], times[-1]) == (dt.datetime(1, 1, 1, tzinfo=dt.UTC),
                                     dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC))
    roll_up(meter)
    rows = meter_query(meter=meter, start=dt.datetime(1, 1, 1, tzinfo=dt.UTC),
                       end=dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC))
    assert [row.value for row in rows] == [7]


# --- JSON bodies of the other endpoints (the DRF parser) --------------------------------------------------------


@pytest.fixture
def targets(db, token):
    """Every JSON-body endpoint, with a check that nothing changed."""
    invoice = issued_invoice()  # with the meter llm_tokens
    meters = list(Meter.objects.values())

    def unchanged():
        assert list(Meter.objects.values()) == meters
        assert Invoice.objects.get(pk=invoice.pk).status == invoice.status

    return {
        "create meter": ("POST", "/api/v1/meters"),
        "update meter": ("PUT", "/api/v1/meters/llm_tokens"),
        "query": ("POST", "/api/v1/meters/llm_tokens/query"),
        "void invoice": ("POST", f"/api/v1/invoices/{invoice.pk}/void"),
    }, unchanged


BODIES = {
    "nested 1,000": ('{"name": ' + nested(DEEP) + "}").encode(),
    "nested 5,000 in filterGroupBy": ('{"filterGroupBy": {"model": ' + nested(5_000, '"x"') + "}}").encode(),
    "nested 1,000 in advancedMeterGroupByFilters": (
        '{"advancedMeterGroupByFilters": {"model": {"$in": ' + nested(DEEP, '"x"') + "}}}").encode(),
    "invalid UTF-8": b'{"name": "caf\xe9", "reason": "caf\xe9"}',
    "NUL": b'{"name": "a\\u0000b", "reason": "a\\u0000b", "subject": ["a\\u0000b"]}',
}


@pytest.mark.parametrize("body", list(BODIES))
@pytest.mark.parametrize("target", ["create meter", "update meter", "query", "void invoice"])
def test_a_hostile_json_body_is_400_and_changes_nothing(api, token, targets, target, body):
    endpoints, unchanged = targets
    method, path = endpoints[target]
    response = api.generic(method, path, BODIES[body], content_type=JSON, **bearer(token))
    problem = assert_problem(response, 400)
    assert "Malformed request body" in problem["detail"]
    unchanged()


def test_json_bodies_in_another_charset_are_415_and_oversized_ones_413(api, token, targets):
    _, unchanged = targets
    latin = api.generic("POST", "/api/v1/meters", b'{"slug": "x"}', content_type="application/json; charset=latin-1",
                        **bearer(token))
    assert_problem(latin, 415)
    huge = json.dumps({"name": "x" * MAX_JSON_BODY_BYTES}).encode()
    assert_problem(api.generic("PUT", "/api/v1/meters/llm_tokens", huge, content_type=JSON, **bearer(token)), 413)
    unchanged()


def issued_invoice() -> Invoice:
    """November's invoice of Kong Air (usage, a zero line and a platform fee), issued, kept local."""
    subscribe_with_november_usage()
    close_cycles(now=AFTER_NOV)
    return Invoice.objects.get(cycle=1)


def test_wrongly_typed_query_body_fields_are_400(api, token):
    make_meter()
    bodies: list[dict] = [{"from": 5}, {"windowTimeZone": ["UTC"]}, {"windowSize": {"a": 1}},
                          {"filterGroupBy": {"a": {}}}, {"filterGroupBy": []}]
    for body in bodies:
        response = api.post("/api/v1/meters/llm_tokens/query", body, format="json", **bearer(token))
        assert_problem(response, 400)


# --- JSON in query parameters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("advancedMeterGroupByFilters", nested(DEEP)),
    ("advancedMeterGroupByFilters", '{"model": {"$in": ' + nested(5_000, '"x"') + "}}"),
    ("filterGroupBy", nested(DEEP)),
    ("filterGroupBy", '{"model": ' + nested(DEEP, '"x"') + "}"),
    ("filterGroupBy", "{'model': " + nested(150, "'x'") + "}"),  # the Python client's dict literal
    ("filterGroupBy", "{'model': " + nested(DEEP, "'x'") + "}"),
    ("filterGroupBy", "{'model': '\\x00'}"),
    ("filterGroupBy", "{'model': ['x']}"),
])
def test_json_query_parameters_nested_deep_are_400_naming_them(api, token, name, value):
    make_meter()
    response = api.get("/api/v1/meters/llm_tokens/query", {name: value}, **bearer(token))
    problem = assert_problem(response, 400)
    assert problem["errors"][0]["field"] == name


def test_json_query_parameters_still_work(api, token):
    make_meter()
    ingest([llm_event(tokens=7, time=iso(utc(2026, 11, 3)))])
    params = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    for extra in ({"filterGroupBy": "{'model': 'gpt-4o'}"}, {"filterGroupBy": '{"model": "gpt-4o"}'},
                  {"advancedMeterGroupByFilters": '{"model": {"$in": ["gpt-4o"]}}'}):
        response = api.get("/api/v1/meters/llm_tokens/query", {**params, **extra}, **bearer(token))
        assert response.status_code == 200, response.content
        assert [row["value"] for row in response.json()["data"]] == [7]


# --- NUL and broken UTF-8 in paths and query parameters ---------------------------------------------------------

NUL_PATHS = [
    "/api/v1/customers/kong%00air/entitlements/ai-token/value",
    "/api/v1/customers/kong-air/entitlements/ai%00token/value",
    "/api/v1/meters/llm%00tokens",
    "/api/v1/meters/llm%00tokens/query",
    "/api/v1/invoices/INV%00-1",
    "/api/v1/credit-notes/%00",
]


@pytest.mark.parametrize("path", NUL_PATHS)
def test_nul_in_a_path_is_400(api, token, path):
    problem = assert_problem(api.get(path, **bearer(token)), 400)
    assert problem["errors"] == [{"field": "path", "message": "the path must not contain NUL characters"}]


@pytest.mark.parametrize("path", ["/api/v1/invoices/1%00/void", "/api/v1/meters/a%00b"])
def test_nul_in_a_write_path_is_400_before_anything_happens(api, token, path):
    assert_problem(api.post(path, {}, format="json", **bearer(token)), 400)


@pytest.mark.parametrize(("path", "name"), [
    ("/api/v1/events", "subject"),
    ("/api/v1/events", "id"),
    ("/api/v1/invoices", "customer"),
    ("/api/v1/credit-notes", "customer"),
    ("/api/v1/meters/llm_tokens/query", "subject"),
    ("/api/v1/meters/llm_tokens/query", "filterGroupBy[model]"),
    ("/api/v1/meters/llm_tokens/query", "groupBy"),
    ("/api/v1/meters/llm_tokens/query", "windowTimeZone"),
    ("/api/v1/customers/kong-air/entitlements/ai-token/value", "at"),
])
@pytest.mark.parametrize("encoding", ["percent-encoded", "raw"])
def test_nul_in_a_query_parameter_is_400_naming_it(api, token, path, name, encoding):
    make_meter()
    query = f"{name}=a%00b" if encoding == "percent-encoded" else f"{name}=a\x00b"
    problem = assert_problem(api.get(path, QUERY_STRING=query, **bearer(token)), 400)
    assert problem["errors"] == [{"field": name, "message": "must not contain NUL characters"}]


def test_nul_in_a_query_parameters_name_is_400(api, token):
    assert_problem(api.get("/api/v1/events", QUERY_STRING="sub%00ject=x", **bearer(token)), 400)


@pytest.mark.parametrize(("path", "query"), [
    ("/api/v1/meters/llm%FFtokens", ""),
    ("/api/v1/events", "subject=%C3%28"),
    ("/api/v1/events", "subject=%ED%A0%80"),  # an encoded surrogate
    ("/api/v1/meters/llm_tokens/query", "groupBy=%FF"),
])
def test_invalid_utf8_in_a_path_or_parameter_is_400(api, token, path, query):
    make_meter()
    assert_problem(api.get(path, QUERY_STRING=query, **bearer(token)), 400)


def test_a_nul_outside_the_api_is_left_to_the_page(client):
    """The admin has its own form errors; the middleware keeps to API paths."""
    response = client.get("/admin/login/", QUERY_STRING="next=%00")
    assert response.status_code == 200


def test_a_nul_is_refused_before_authentication(api):
    assert_problem(api.get("/api/v1/events", {"subject": "\x00"}), 400)


# --- times in query parameters and meter queries ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("from", "0001-01-01T00:00:00+01:00"), ("to", "9999-12-31T23:59:59-01:00"),
    ("ingestedAtFrom", "0001-01-01T00:00:00+14:00"), ("ingestedAtTo", "9999-12-31T12:00:00-12:00"),
    ("from", "not a time"), ("to", "2026-11-01T00:00:00"),
])
def test_event_list_times_out_of_range_are_400_naming_the_field(api, token, name, value):
    problem = assert_problem(api.get("/api/v1/events", {name: value}, **bearer(token)), 400)
    assert problem["errors"][0]["field"] == name


def query_llm_tokens(api, token: str, params: dict, method: str):
    """The meter query of llm_tokens, its parameters in the query string (GET) or a JSON body (POST)."""
    if method == "GET":
        return api.get("/api/v1/meters/llm_tokens/query", params, **bearer(token))
    return api.post("/api/v1/meters/llm_tokens/query", params, format="json", **bearer(token))


@pytest.mark.parametrize("params", [
    {"from": "0001-01-01T00:00:00Z", "to": "0001-01-03T00:00:00Z", "windowSize": "DAY",
     "windowTimeZone": "America/New_York"},
    {"from": "0001-01-01T00:00:00Z", "to": "0001-01-02T00:00:00Z", "windowSize": "HOUR",
     "windowTimeZone": "America/Los_Angeles"},
    {"from": "0001-01-01T00:00:00+01:00", "windowSize": "DAY"},
    {"to": "9999-12-31T23:59:59-01:00"},
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_meter_queries_at_the_calendars_edges_are_400_never_500(api, token, params, method):
    make_meter()
    response = query_llm_tokens(api, token, params, method)
    problem = assert_problem(response, 400)
    assert problem["errors"][0]["field"] in ("from", "to")


@pytest.mark.parametrize("params", [
    {"from": "9999-12-01T00:00:00Z", "to": "9999-12-31T00:00:00Z", "windowSize": "MONTH",
     "windowTimeZone": "Pacific/Kiritimati"},
    {"from": "9999-12-30T00:00:00Z", "to": "9999-12-31T23:59:59Z"},
])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_meter_queries_ending_in_the_last_day_of_year_9999_are_answered(api, token, params, method):
    """The query range reaches 9999-12-31T23:59:59.999Z; windows that would pass it are clipped, not a 500."""
    make_meter()
    response = query_llm_tokens(api, token, params, method)
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["from"], body["to"], body["data"]) == (params["from"], params["to"], [])


def test_a_meter_query_inside_the_range_is_answered(api, token):
    make_meter()
    ingest([llm_event(tokens=3, time="0001-03-02T10:00:00Z")])
    response = api.get("/api/v1/meters/llm_tokens/query", {
        "from": "0001-03-01T00:00:00Z", "to": "0001-03-05T00:00:00Z", "windowSize": "DAY"}, **bearer(token))
    assert response.status_code == 200, response.content
    assert [(row["windowStart"], row["value"]) for row in response.json()["data"]] == [("0001-03-02T00:00:00Z", 3)]


def test_events_dated_in_year_1_make_an_open_query_400_not_500(api, token):
    make_meter()
    ingest([llm_event(time="0001-01-01T00:00:00Z")])
    response = api.get("/api/v1/meters/llm_tokens/query", {"windowSize": "DAY",
                                                            "windowTimeZone": "America/New_York"}, **bearer(token))
    problem = assert_problem(response, 400)
    assert problem["errors"][0]["field"] == "from"


# --- the Stripe webhook --------------------------------------------------------------------------------------------

SECRET = "whsec_hostile_test"


@pytest.fixture
def webhook_secret(settings):
    settings.STRIPE_WEBHOOK_SECRET = SECRET
    return SECRET


def stripe_event(**extra) -> dict:
    return {"id": "evt_hostile", "object": "event", "type": "customer.created", "created": int(time.time()),
            "data": {"object": {"id": "cus_1", "object": "customer", **extra}}}


def deliver(client, payload: bytes, *, timestamp: int | None = None, signature: str | None = None):
    signature = signature or sign_webhook_payload(payload, SECRET, timestamp=timestamp)
    return client.post("/stripe/webhooks", data=payload, content_type="application/json",
                       HTTP_STRIPE_SIGNATURE=signature)


@pytest.mark.django_db
@pytest.mark.parametrize("depth", [DEEP, 5_000])
def test_a_signed_webhook_nested_deep_is_400_and_stores_nothing(client, webhook_secret, depth):
    payload = json.dumps(stripe_event(metadata="@")).replace('"@"', nested(depth)).encode()
    problem = assert_problem(deliver(client, payload), 400)
    assert f"deeper than {MAX_DEPTH} levels" in problem["detail"]
    assert not StripeWebhookEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("offset", [301, 3600, 365 * 24 * 3600, -301, -365 * 24 * 3600])
def test_a_webhook_signed_outside_the_tolerance_either_way_is_400(client, webhook_secret, offset, monkeypatch):
    now = float(int(time.time()))  # one clock for signing and checking: 301 s must stay 301 s (a second boundary
    monkeypatch.setattr(time, "time", lambda: now)  # passed between them made it 300 s, inside the tolerance)
    payload = json.dumps(stripe_event()).encode()
    problem = assert_problem(deliver(client, payload, timestamp=int(now) + offset), 400)
    assert "tolerance" in problem["detail"].lower()
    assert not StripeWebhookEvent.objects.exists()


@pytest.mark.django_db
def test_a_repeated_timestamp_cannot_hide_a_future_one(client, webhook_secret):
    payload = json.dumps(stripe_event()).encode()
    future = sign_webhook_payload(payload, SECRET, timestamp=int(time.time()) + 365 * 24 * 3600)
    assert_problem(deliver(client, payload, signature=f"t={int(time.time())},{future}"), 400)
    assert not StripeWebhookEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("offset", [-240, 0, 240])
def test_a_webhook_within_the_tolerance_is_received(client, webhook_secret, offset):
    response = deliver(client, json.dumps(stripe_event()).encode(), timestamp=int(time.time()) + offset)
    assert response.status_code == 200, response.content
    assert StripeWebhookEvent.objects.get().event_id == "evt_hostile"


@pytest.mark.django_db
@pytest.mark.parametrize("payload", [b'{"id": "evt_1", "type": "x", "data": {"a": "\\u0000"}}',
                                     b'{"id": "evt_1", "type": "x", "data": {}, "n": NaN}'])
def test_a_signed_webhook_that_cannot_be_stored_is_400(client, webhook_secret, payload):
    assert_problem(deliver(client, payload), 400)
    assert not StripeWebhookEvent.objects.exists()


@pytest.mark.django_db
def test_a_webhook_with_a_bad_content_length_is_400(client, webhook_secret):
    response = client.post("/stripe/webhooks", data=b"{}", content_type="application/json", CONTENT_LENGTH="12x")
    assert response.status_code == 400


# --- chunked bodies: the test client, the development server, gunicorn ----------------------------------------


def chunked(data: bytes, size: int = 100) -> bytes:
    """``data`` in HTTP/1.1 chunked framing, ``size`` bytes a chunk (with a chunk extension and a trailer)."""
    parts = [b"%x;ext=1\r\n%s\r\n" % (len(data[i:i + size]), data[i:i + size]) for i in range(0, len(data), size)]
    return b"".join(parts) + b"0\r\nX-Trailer: yes\r\n\r\n"


def test_the_test_client_reads_a_chunked_body(api, token):
    """A server that decodes the framing (as WSGI asks) hands on the body without a Content-Length."""
    payload = json.dumps(llm_event(tokens=11)).encode()
    response = post_events(api, token, payload, CE, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked")
    assert response.status_code == 204, response.content
    assert (Event.objects.get().data or {})["tokens"] == 11


def test_a_chunked_meter_body_is_read(api, token):
    body = json.dumps({"slug": "chunky", "eventType": "x", "aggregation": "COUNT"}).encode()
    response = api.generic("POST", "/api/v1/meters", body, content_type=JSON, CONTENT_LENGTH="",
                           HTTP_TRANSFER_ENCODING="chunked", **bearer(token))
    assert response.status_code == 201, response.content
    assert Meter.objects.get().slug == "chunky"


def test_an_oversized_chunked_body_is_413(api, token, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    payload = json.dumps([llm_event() for _ in range(10)]).encode()
    response = post_events(api, token, payload, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked")
    assert_problem(response, 413)
    assert not Event.objects.exists()


class _Socket(io.BytesIO):
    """What Django's development server reads a request body from: the raw bytes after the headers."""


def devserver_environ(raw: bytes) -> dict:
    from django.core.handlers.wsgi import LimitedStream

    return {"wsgi.input": LimitedStream(_Socket(raw), 0), "HTTP_TRANSFER_ENCODING": "chunked"}


def test_chunk_framing_passed_through_is_decoded():
    data = json.dumps([llm_event() for _ in range(5)]).encode()
    assert read_chunked_body(devserver_environ(chunked(data, 7)), 10_000) == data
    assert read_chunked_body(devserver_environ(b"0\r\n\r\n"), 10) == b""


@pytest.mark.parametrize(("raw", "status"), [
    (b"zz\r\nabc\r\n0\r\n\r\n", 400),  # not a hex size
    (b"5\r\nabc", 400),  # truncated chunk
    (b"3\r\nabcXY0\r\n\r\n", 400),  # no CRLF after the chunk
    (b"3\r\nabc\r\n", 400),  # no last chunk
    (b"800\r\n" + b"x" * 2048 + b"\r\n0\r\n\r\n", 413),
])
def test_malformed_or_oversized_chunk_framing_is_refused(raw, status):
    with pytest.raises(ChunkedBodyError) as caught:
        read_chunked_body(devserver_environ(raw), 1000)
    assert caught.value.status == status


def test_a_server_that_neither_decodes_nor_ends_the_input_gets_411():
    with pytest.raises(ChunkedBodyError) as caught:
        read_chunked_body({"wsgi.input": object(), "HTTP_TRANSFER_ENCODING": "chunked"}, 1000)
    assert caught.value.status == 411


def http_exchange(port: int, request: bytes, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send raw HTTP/1.1 bytes, read the whole answer (the request says Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def chunked_request(path: str, token: str, data: bytes, content_type: str = CE, chunk: int = 100) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode() \
        + chunked(data, chunk)


@pytest.mark.django_db(transaction=True)
def test_the_development_server_reads_a_chunked_body(live_server):
    """Django's live server runs the development server's request handler (wsgiref, framing passed through)."""
    from metering.services.tokens import api_token_create

    _, token = api_token_create(name="dev", scopes=["ingest"])
    port = int(live_server.url.rsplit(":", 1)[1])
    status, _, _ = http_exchange(port, chunked_request("/api/v1/events", token, json.dumps(llm_event()).encode()))
    assert status == 204
    assert Event.objects.count() == 1
    status, headers, body = http_exchange(port, chunked_request("/api/v1/events", token, b"[" + b" " * 2048))
    assert status == 400 and headers["content-type"] == "application/problem+json"
    raw = (f"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {CE}\r\n"
           "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\nnot-hex\r\n").encode()
    status, headers, _ = http_exchange(port, raw)
    assert status == 400 and headers["content-type"] == "application/problem+json"
    assert Event.objects.count() == 1


# --- gunicorn, sync and gthread, and a real database outage ---------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gunicorn:
    """``gunicorn billing_site.wsgi`` on a free loopback port (one worker), its output in ``log``."""

    def __init__(self, env: dict[str, str], log: Path, *options: str) -> None:
        self.port = free_port()
        self.log = log
        with open(log, "wb") as output:
            self.process = subprocess.Popen(  # noqa: S603 - the project's own server on loopback
                [sys.executable, "-m", "gunicorn", "billing_site.wsgi", "--bind", f"127.0.0.1:{self.port}",
                 "--workers", "1", "--timeout", "60", *options],
                cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text(errors="replace")[-3000:]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("gunicorn did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def migrated(tmp_path_factory, migrated_sqlite) -> tuple[Path, dict[str, str], str]:
    """A migrated SQLite file (a copy of the run's) and an ingest token, for gunicorn processes of the project."""
    tmp = tmp_path_factory.mktemp("gunicorn")
    db_file = copy_sqlite(migrated_sqlite, tmp / "db.sqlite3")
    env = process_env(tmp / "var", f"sqlite:///{db_file}")
    out = subprocess.run([sys.executable, "manage.py", "create_api_token", "gw", "--scope", "ingest", "--scope", "read",
                          "--scope", "manage"], cwd=ROOT, env=env, check=True, timeout=120, capture_output=True,
                         text=True).stdout
    return db_file, env, out.strip().splitlines()[-1]


def stored_events(db_file: Path) -> int:
    with sqlite3.connect(db_file) as db:
        return db.execute("SELECT count(*) FROM metering_event").fetchone()[0]


@pytest.mark.slow
@pytest.mark.parametrize("worker", [["--worker-class", "sync"], ["--worker-class", "gthread", "--threads", "4"]],
                         ids=["sync", "gthread"])
def test_gunicorn_reads_chunked_bodies(migrated, worker):
    db_file, env, token = migrated
    server = Gunicorn(env, db_file.parent / f"gunicorn-{worker[1]}.log", *worker)
    try:
        before = stored_events(db_file)
        status, _, body = http_exchange(server.port, chunked_request(
            "/api/v1/events", token, json.dumps(llm_event(tokens=5)).encode(), chunk=37))
        assert status == 204, body
        batch = json.dumps([llm_event() for _ in range(20)]).encode()
        status, _, body = http_exchange(server.port, chunked_request("/api/v1/events", token, batch, CE_BATCH, 1000))
        assert status == 204, body
        assert stored_events(db_file) == before + 21
        # over the ingest limit (5 MiB), under Django's (6 MiB): read whole, refused by the event door
        oversized = b"[" + b" " * (MAX_BODY_BYTES + 100) + b"]"
        status, headers, body = http_exchange(server.port, chunked_request(
            "/api/v1/events", token, oversized, CE_BATCH, 256 * 1024))
        assert status == 413 and headers["content-type"] == "application/problem+json", body
        # a chunked JSON body of another endpoint
        meter = json.dumps({"slug": f"chunked_{worker[1]}", "eventType": "x", "aggregation": "COUNT"}).encode()
        status, _, body = http_exchange(server.port, chunked_request("/api/v1/meters", token, meter, JSON, 10))
        assert status == 201, body
        assert stored_events(db_file) == before + 21
    finally:
        server.stop()


def raw_post(path: str, token: str, data: bytes, content_type: str = CE) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
            ).encode() + data


def raw_answer(port: int, request: bytes) -> tuple[bytes, bytes]:
    """The status line and header lines (Date and Connection left out) exactly as sent, and the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not line.lower().startswith((b"date:", b"connection:"))]
    return b"\r\n".join(lines), body


@pytest.mark.slow
def test_gunicorn_serves_ingest_through_the_fast_route_with_djangos_bytes(migrated):
    """``billing_site.wsgi`` under gunicorn (gthread): a POST the fast route answers and the same POST handed to
    Django (a query string sends it there) give the same bytes; hostile POSTs are Django's answers."""
    db_file, env, token = migrated
    server = Gunicorn(env, db_file.parent / "gunicorn-route.log", "--worker-class", "gthread", "--threads", "2")
    try:
        before = stored_events(db_file)
        for path in ("/api/v1/events", "/api/v3/openmeter/events", "/v3/openmeter/events"):
            routed = raw_answer(server.port, raw_post(path, token, json.dumps(llm_event()).encode()))
            via_django = raw_answer(server.port, raw_post(f"{path}?via=django", token,
                                                          json.dumps(llm_event()).encode()))
            assert routed == via_django, (routed, via_django)
            assert routed[0].split(b"\r\n")[0] in (b"HTTP/1.1 204 No Content", b"HTTP/1.1 202 Accepted")
        assert stored_events(db_file) == before + 6
        hostile = [
            (raw_post("/api/v1/events", "bbo_" + "z" * 43, json.dumps(llm_event()).encode()), b"401"),
            (raw_post("/api/v1/events", token, b'{"id": "\x00"}'), b"400"),
            (raw_post("/api/v1/events", token, b"[" * 1000 + b"]" * 1000, CE_BATCH), b"400"),
            (raw_post("/api/v1/events", token, json.dumps([llm_event()]).encode(), "text/plain"), b"415"),
            (raw_post("/api/v1/events", token, json.dumps({**llm_event(), "id": 5}).encode()), b"400"),
        ]
        for request, status in hostile:
            head, body = raw_answer(server.port, request)
            assert head.split(b" ")[1] == status, (head, body)
            assert b"Content-Type: application/problem+json" in head
        assert stored_events(db_file) == before + 6
    finally:
        server.stop()


@pytest.mark.slow
def test_gunicorn_answers_503_with_retry_after_while_the_database_is_down(tmp_path):
    token = "bbo_" + "x" * 43  # looks like a token; it cannot be checked while the database is down
    closed = free_port()  # nothing listens there: connections are refused
    env = process_env(tmp_path / "var", f"postgres://postgres@127.0.0.1:{closed}/billing")
    server = Gunicorn(env, tmp_path / "gunicorn.log")
    try:
        requests = [
            ("POST", "/api/v1/events", json.dumps(llm_event()).encode(), CE),
            ("GET", "/api/v1/events", b"", ""),
            ("GET", "/api/v1/meters", b"", ""),
            ("GET", "/api/v1/meters/llm_tokens/query", b"", ""),
            ("GET", "/api/v1/invoices", b"", ""),
            ("GET", "/api/v1/customers/kong-air/entitlements/ai-token/value", b"", ""),
        ]
        for method, path, data, content_type in requests:
            raw = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                   f"Content-Type: {content_type}\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
                   ).encode() + data
            status, headers, body = http_exchange(server.port, raw)
            assert status == 503, (path, body)
            assert headers["content-type"] == "application/problem+json" and int(headers["retry-after"]) > 0
            assert json.loads(body)["title"] == "Service Unavailable"
        health = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        status, headers, body = http_exchange(server.port, health)
        assert status == 503 and headers["content-type"] == "application/json"  # /healthz as it was
        assert json.loads(body)["database"]["ok"] is False
    finally:
        server.stop()


# --- outages in process --------------------------------------------------------------------------------------------


@pytest.fixture
def database_down(db):
    """Every SQL statement fails as it does when the server is gone."""

    def fail(*args, **kwargs):
        raise failure

    failure: Exception = OperationalError("connection to server at 127.0.0.1, port 5432 failed: Connection refused")
    with mock.patch.object(CursorWrapper, "execute", fail), mock.patch.object(CursorWrapper, "executemany", fail):
        def set_failure(exc: Exception) -> None:
            nonlocal failure
            failure = exc

        yield set_failure


READS = ["/api/v1/events", "/api/v1/meters", "/api/v1/meters/llm_tokens", "/api/v1/meters/llm_tokens/query",
         "/api/v1/invoices", "/api/v1/credit-notes", "/api/v1/customers/kong-air/entitlements/ai-token/value"]


@pytest.mark.parametrize("error", [OperationalError("server closed the connection unexpectedly"),
                                   InterfaceError("connection already closed")], ids=["operational", "interface"])
def test_ingest_and_reads_answer_503_with_retry_after_while_the_database_is_down(api, token, database_down, error):
    database_down(error)
    responses = [post_events(api, token, json.dumps(llm_event()).encode(), CE)]
    responses += [api.get(path, **bearer(token)) for path in READS]
    for response in responses:
        problem = assert_problem(response, 503)
        assert problem["title"] == "Service Unavailable" and int(response["Retry-After"]) > 0


def test_the_webhook_answers_503_while_the_database_is_down(client, webhook_secret, database_down):
    response = deliver(client, json.dumps(stripe_event()).encode())
    assert_problem(response, 503)
    assert int(response["Retry-After"]) > 0


def test_healthz_stays_as_it_was_while_the_database_is_down(client, database_down):
    response = client.get("/healthz")
    assert response.status_code == 503 and response["Content-Type"] == "application/json"
    assert response.json()["status"] == "unavailable" and response.json()["database"]["ok"] is False


@pytest.mark.parametrize("error", [kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6399"),
                                   redis.exceptions.ConnectionError("Connection refused")], ids=["broker", "cache"])
def test_a_broker_outage_is_503_with_retry_after(api, token, error):
    make_meter()
    with mock.patch("metering.api.meters.meter_create", side_effect=error):
        response = api.post("/api/v1/meters", {"slug": "x", "eventType": "x", "aggregation": "COUNT"},
                            format="json", **bearer(token))
    assert_problem(response, 503)
    assert int(response["Retry-After"]) > 0


def test_ingest_and_reads_do_not_need_the_broker(api, token, settings):
    """They never publish: an unreachable broker leaves them working."""
    from billing_site.celery import app

    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    with mock.patch.dict(app.conf, {"broker_url": unreachable, "task_always_eager": False}):
        assert post_events(api, token, json.dumps(llm_event()).encode(), CE).status_code == 204
        assert api.get("/api/v1/events", {"from": "2026-01-01T00:00:00Z"}, **bearer(token)).status_code == 200


# --- CSV formula injection -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "cell"), [
    ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"),
    ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
    ("\t=1", "'\t=1"),
    ("\r=1", "'\r=1"),
    ("-12.50", "-12.50"),
    ("+3", "+3"),
    ("-1e-5", "-1e-5"),
    ("kong-air", "kong-air"),
    ("", ""),
    (None, ""),
    (42, "42"),
])
def test_csv_cells_that_a_spreadsheet_would_run_are_escaped(value, cell):
    assert csv_cell(value) == cell


def test_the_csv_writer_escapes_every_cell():
    buffer = io.StringIO()
    csv_writer(buffer).writerow(["=1+1", "ok", -3])
    assert buffer.getvalue() == "'=1+1,ok,-3\r\n"


FORMULA_SUBJECT = "=HYPERLINK(\"http://evil\")"  # no comma: the explorer splits subjects on commas


@pytest.fixture
def formula_usage(db):
    meter = make_meter()
    ingest([llm_event(tokens=10, subject=FORMULA_SUBJECT, model="@cmd", time=iso(utc(2026, 11, 3, 10)))])
    return meter


def test_the_meter_query_csv_escapes_formulas(api, token, formula_usage):
    response = api.get("/api/v1/meters/llm_tokens/query", {
        "from": "2026-11-01T00:00:00Z", "to": "2026-11-05T00:00:00Z", "windowSize": "DAY",
        "groupBy": ["subject", "model"]}, HTTP_ACCEPT="text/csv", **bearer(token))
    assert response.status_code == 200
    assert response.content.decode().splitlines()[1] == (
        '2026-11-03T00:00:00Z,2026-11-04T00:00:00Z,"\'=HYPERLINK(""http://evil"")",\'@cmd,10')


def test_the_usage_explorer_csv_escapes_formulas(admin_client, formula_usage):
    response = admin_client.get("/admin/metering/meter/usage/", {
        "meter": formula_usage.pk, "start": "2026-11-01T00:00", "end": "2026-11-05T00:00", "window_size": "DAY",
        "time_zone": "UTC", "group_by": "model", "subjects": FORMULA_SUBJECT, "format": "csv"})
    assert response.status_code == 200
    assert response.content.decode().splitlines()[1].endswith('"\'=HYPERLINK(""http://evil"")",\'@cmd,10')


def test_the_invoice_csv_export_escapes_formulas(admin_client):
    invoice = issued_invoice()
    invoice.lines.filter(rate_card_key="platform").update(description="=1+2")
    response = admin_client.post("/admin/invoicing/invoice/", {"action": "export_csv",
                                                               "_selected_action": [invoice.pk]})
    rows = response.content.decode().splitlines()
    assert any(",'=1+2," in row for row in rows), rows
    assert not any(",=1+2," in row for row in rows)


# --- wrongly typed meter and query bodies ------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"slug": 5, "eventType": [], "aggregation": {}},
    {"slug": "a", "eventType": "x", "aggregation": "COUNT", "description": 5},
    {"slug": "a", "eventType": "x", "aggregation": "COUNT", "name": ["a"]},
    {"slug": "a", "eventType": "x", "aggregation": "SUM", "valueProperty": 5},
    {"slug": "a", "eventType": "x", "aggregation": "COUNT", "groupBy": {"model": 5}},
    {"slug": "a", "eventType": "x", "aggregation": "COUNT", "groupBy": ["$.model"]},
])
def test_wrongly_typed_meter_bodies_are_400_naming_the_field(api, token, body):
    problem = assert_problem(api.post("/api/v1/meters", body, format="json", **bearer(token)), 400)
    assert problem["errors"][0]["field"] in body
    assert not Meter.objects.exists()


@pytest.mark.parametrize("body", [{"subject": [{"a": 1}]}, {"groupBy": [1, 2]}, {"filterCustomerId": [None]},
                                  {"subject": 5}, {"advancedMeterGroupByFilters": {"model": {"$in": [{"a": 1}]}}}])
def test_wrongly_typed_query_lists_are_400(api, token, body):
    make_meter()
    problem = assert_problem(api.post("/api/v1/meters/llm_tokens/query", body, format="json", **bearer(token)), 400)
    assert problem["errors"][0]["field"] == next(iter(body))
