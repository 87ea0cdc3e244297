"""The fast ingest path (metering.cloudevents.parse_batch → COPY text rows → COPY straight into the events table)
stores exactly what the per-event path does, takes the usual bodies, and falls back to the deduplicating write
when a batch repeats stored events."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.cloudevents import (
    MEDIA_BATCH,
    MEDIA_JSON,
    MEDIA_SINGLE,
    CloudEventsError,
    EventBatch,
    _fast_batch,
    copy_line,
    parse_batch,
    parse_events,
)
from metering.models import Event
from metering.services.ingest import SMALL_BATCH, events_ingest
from tests.builders import bearer, llm_event

NOW = dt.datetime(2026, 11, 3, 12, tzinfo=dt.UTC)
AWKWARD = 'tab\there, new\nline, cr\r, back\\slash, "quotes", \\N, \u00e9t\u00e9 \u2028 \U0001f600, [{brackets}]'


def kong_batch(n: int, **extra) -> list[dict]:
    return [llm_event(event_id=f"evt-{i:04d}", tokens=i, **extra) for i in range(n)]


def rows_both_ways(body: bytes, media_type: str) -> tuple[list, list]:
    fast = parse_batch(body, media_type, now=NOW)
    slow = EventBatch.of_rows(parse_events(body, media_type, now=NOW))
    return fast.rows, slow.rows


@pytest.mark.parametrize("media_type", [MEDIA_BATCH, MEDIA_JSON])
@pytest.mark.parametrize("indent", [None, 2])
def test_the_usual_batch_takes_the_fast_path_compact_or_pretty(media_type, indent):
    body = json.dumps(kong_batch(50), indent=indent).encode()
    batch = _fast_batch(body, media_type, NOW)
    assert batch is not None
    assert len(batch) == batch.received == 50
    assert batch.rows == parse_events(body, media_type, now=NOW)


def test_a_single_event_takes_the_fast_path():
    body = json.dumps(llm_event(event_id="one")).encode()
    batch = _fast_batch(body, MEDIA_SINGLE, NOW)
    assert batch is not None and [row.event_id for row in batch.rows] == ["one"]
    assert batch.rows == parse_events(body, MEDIA_SINGLE, now=NOW)


def test_copy_lines_escape_what_copy_text_needs_and_read_back_the_same():
    events = [llm_event(event_id=f"a-{AWKWARD}", subject=AWKWARD, note=AWKWARD, source=AWKWARD), llm_event(time=None)]
    events[1]["data"] = None
    body = json.dumps(events).encode()
    fast, slow = rows_both_ways(body, MEDIA_BATCH)
    assert fast == slow
    assert fast[0].subject == AWKWARD
    assert json.loads(fast[0].data)["note"] == AWKWARD
    assert fast[1].data is None and fast[1].time == NOW
    line = copy_line(fast[0])
    assert b"\n" not in line and b"\r" not in line and line.count(b"\t") == 5
    assert b"\\\\N" in line  # the text "\N" is not COPY's NULL


@pytest.mark.parametrize("event", [
    {"time": "2026-11-03T12:00:00+05:30"},  # another offset: stored in UTC
    {"time": "2026-11-03T10:15:02.123456Z"},
    {"data": {"deep": [[[[{"x": [1, 2, {"y": None}]}]]]]}},
    {"data": {"n": 1e300, "neg": -0.0, "big": 123456789012345678901234567890}},
    {"extension": {"any": ["thing"]}},  # unknown members are ignored (by the per-event path)
    {"datacontenttype": 7},
    {"subject": "nul \u0000 inside"},  # refused, per event
    {"data": {"k": "nul \u0000"}},
    {"data": [1, 2]},
    {"time": "0001-01-01T00:30:00+01:00"},
    {"time": "9999-12-31T23:59:59.9995Z"},
    {"time": "2026-11-03T12:00:00"},
    {"specversion": "0.3"},
    {"id": ""},
    {"id": "x" * 256},
    {"type": 5},
])
def test_unusual_events_end_as_the_per_event_path_says(event):
    batch = kong_batch(SMALL_BATCH + 3)
    batch[1].update(event)
    body = json.dumps(batch).encode()
    try:
        slow = EventBatch.of_rows(parse_events(body, MEDIA_BATCH, now=NOW)).rows
    except CloudEventsError as exc:
        with pytest.raises(CloudEventsError) as caught:
            parse_batch(body, MEDIA_BATCH, now=NOW)
        assert caught.value.errors == exc.errors
        return
    assert parse_batch(body, MEDIA_BATCH, now=NOW).rows == slow


def test_a_repeated_id_within_a_body_is_stored_once_the_first_wins():
    events = kong_batch(3)
    events.append(llm_event(event_id="evt-0001", tokens=999))
    batch = parse_batch(json.dumps(events).encode(), MEDIA_BATCH, now=NOW)
    assert batch.received == 4 and len(batch) == 3
    assert [json.loads(row.data or "null")["tokens"] for row in batch.rows] == [0, 1, 2]


def test_the_same_id_from_two_sources_is_two_events():
    events = [llm_event(event_id="same", source="a"), llm_event(event_id="same", source="b")]
    assert len(parse_batch(json.dumps(events).encode(), MEDIA_BATCH, now=NOW)) == 2


def test_an_event_over_64_kib_in_a_large_batch_is_refused_by_name():
    events = kong_batch(3)
    events[2]["padding"] = "x" * (64 * 1024)
    with pytest.raises(CloudEventsError) as caught:
        parse_batch(json.dumps(events).encode(), MEDIA_BATCH, now=NOW)
    assert caught.value.errors[0].index == 2


_chars = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
_text = st.text(_chars, min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.fixed_dictionaries({"id": _text, "source": _text, "subject": _text,
                                       "note": st.text(_chars, max_size=20),
                                       "n": st.integers() | st.floats(allow_nan=False, allow_infinity=False)}),
                min_size=1, max_size=8),
       st.sampled_from([None, 1]))
def test_any_strings_and_numbers_parse_alike_both_ways(items, indent):
    events = [llm_event(event_id=item["id"], source=item["source"], subject=item["subject"], note=item["note"],
                        n=item["n"]) for item in items]
    body = json.dumps(events, indent=indent, ensure_ascii=bool(indent)).encode()
    fast, slow = rows_both_ways(body, MEDIA_BATCH)
    assert fast == slow


# --- storing ------------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_big_batch_with_awkward_text_is_stored_exactly_and_a_partial_repeat_adds_only_the_new_events():
    now = timezone.now()
    events = kong_batch(SMALL_BATCH * 2, note=AWKWARD, subject=AWKWARD)
    first = parse_batch(json.dumps(events[:SMALL_BATCH + 5]).encode(), MEDIA_BATCH, now=now)
    assert events_ingest(rows=first, received_at=now).stored == SMALL_BATCH + 5
    stored = Event.objects.get(event_id="evt-0003")
    assert stored.subject == AWKWARD and stored.data is not None and stored.data["note"] == AWKWARD
    assert stored.time == dt.datetime(2026, 11, 3, 10, 15, 2, 123000, tzinfo=dt.UTC)
    assert stored.ingested_at == now
    again = parse_batch(json.dumps(events).encode(), MEDIA_BATCH, now=now)  # a retry with more events
    result = events_ingest(rows=again, received_at=now)
    assert (result.received, result.stored) == (SMALL_BATCH * 2, SMALL_BATCH - 5)
    assert Event.objects.count() == SMALL_BATCH * 2
    if connection.vendor == "postgresql":  # one ingest transaction per batch
        assert Event.objects.values("ingest_tx").distinct().count() == 2


@pytest.mark.django_db
def test_a_batch_over_the_api_is_stored_once_when_posted_twice(api, ingest_token):
    body = json.dumps(kong_batch(SMALL_BATCH + 20)).encode()
    for _ in range(2):
        response = api.generic("POST", "/api/v1/events", body, content_type=MEDIA_BATCH, **bearer(ingest_token))
        assert response.status_code == 204, response.content
    assert Event.objects.count() == SMALL_BATCH + 20


@pytest.mark.postgres
@pytest.mark.django_db
def test_an_unstorable_number_after_a_repeated_id_is_named_by_its_index_in_the_body(api, ingest_token):
    events = kong_batch(SMALL_BATCH + 3)
    events.insert(1, dict(events[0]))  # a repeat: the batch stores one event fewer than it holds
    body = json.dumps(events).replace('"tokens": 34', '"tokens": 1e400000').encode()
    assert b"1e400000" in body
    response = api.generic("POST", "/api/v1/events", body, content_type=MEDIA_BATCH, **bearer(ingest_token))
    assert response.status_code == 400, response.content
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(len(events) - 1, "data")]
    assert Event.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("size", [1, SMALL_BATCH + 1])
def test_a_persistent_connection_that_died_while_idle_is_replaced_without_a_health_check_query(size):
    import psycopg

    connection.ensure_connection()
    pid = connection.connection.info.backend_pid
    connection.close_if_unusable_or_obsolete()  # what Django does between requests: the next query would SELECT 1
    settings_dict = connection.get_connection_params()
    with psycopg.connect(**settings_dict, autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [pid])
    now = timezone.now()
    batch = parse_batch(json.dumps(kong_batch(size)).encode(), MEDIA_BATCH, now=now)
    assert events_ingest(rows=batch, received_at=now).stored == size
    assert connection.connection.info.backend_pid != pid
    assert Event.objects.count() == size
