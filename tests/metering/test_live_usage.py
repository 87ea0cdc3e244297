"""The gateway's usage totals (settled part remembered, newest events read live) against the whole query.

Over random histories of ingest batches, partial aggregator runs, rollup resets and remembered parts growing old,
every live total must equal :func:`usage_total_for_periods` read at the same moment.
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from metering.models import Event
from metering.selectors import live_usage
from metering.selectors.live_usage import LiveUsage, forget_settled_usage, usage_groups_live
from metering.selectors.usage import equality_filters, usage_rows, usage_total_for_periods
from metering.services.rollups import meter_rollups_reset
from metering.windows import Piece, decompose
from tests.builders import ingest, iso, make_meter, roll_up, utc

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

BASE = utc(2026, 3, 27, 20, 0)
SUBJECTS = ["kong-air", "acme", "consumer:8f3c"]
_ids = itertools.count()

event_spec = st.fixed_dictionaries({
    "subject": st.sampled_from(SUBJECTS),
    "minutes": st.integers(-120, 3 * 24 * 60),
    "tokens": st.integers(0, 1000),
    "type": st.sampled_from(["request", "response"]),
    "model": st.sampled_from(["gpt-4o", "llama", None]),
})
step = st.one_of(
    st.tuples(st.just("ingest"), st.lists(event_spec, min_size=1, max_size=12)),
    st.tuples(st.just("roll"), st.sampled_from([3, 10, 500_000])),
    st.tuples(st.just("query"), st.just(None)),
    st.tuples(st.just("age"), st.just(None)),  # every remembered part is past its refresh age
    st.tuples(st.just("reset"), st.just(None)),
    st.tuples(st.just("forget"), st.just(None)),  # a new process
)
period = st.tuples(st.sampled_from(SUBJECTS), st.integers(-3, 60), st.integers(1, 80), st.sampled_from([0, 17, 59]))
request_spec = st.tuples(st.lists(period, min_size=1, max_size=3, unique_by=lambda p: p[0]),
                         st.sampled_from([{}, {"type": "request"}, {"type": "response"}]),
                         st.sampled_from([(), ("model",), ("type", "model")]))


def usage_totals_live(*, meter, requests) -> list[Decimal]:
    """Each request's total (the no-dimension group), as the entitlement check reads it."""
    return [groups.get((), Decimal(0)) for groups in usage_groups_live(meter=meter, requests=requests)]


def build_events(specs, event_type):
    return [{"specversion": "1.0", "id": f"live{next(_ids)}", "source": "test", "type": event_type,
             "subject": spec["subject"], "time": iso(BASE + dt.timedelta(minutes=spec["minutes"], seconds=7)),
             "data": {"tokens": spec["tokens"], "type": spec["type"],
                      **({"model": spec["model"]} if spec.get("model") else {})}} for spec in specs]


def as_request(spec) -> LiveUsage:
    periods, filters, *dimensions = spec
    return LiveUsage.of([(subject, BASE + dt.timedelta(hours=a, minutes=m), BASE + dt.timedelta(hours=a + b, minutes=m))
                         for subject, a, b, m in periods], filters, *dimensions)


def whole(meter, request: LiveUsage) -> dict:
    """The whole query's answer (every event, one statement), by the request's dimensions."""
    if not request.subject_periods:
        return {}
    if not request.dimensions:
        total = usage_total_for_periods(meter=meter, subject_periods=request.subject_periods,
                                        filters=dict(request.filters))
        return {(): total} if total or _any_event(meter, request) else {}
    pieces = [p for s, a, b in request.subject_periods for p in decompose(0, a, b, s)]
    rows = usage_rows(meter=meter, pieces=pieces, window_bounds=[(min(p.start for p in pieces),
                                                                 max(p.end for p in pieces))],
                      group_by=list(request.dimensions), subjects=sorted({s for s, _, _ in request.subject_periods}),
                      filters=equality_filters(dict(request.filters)))
    return {tuple(row.group_by.get(d) for d in request.dimensions): row.value for row in rows}


def _any_event(meter, request) -> bool:
    """Whether a zero total comes from events (a group with value 0) or from none."""
    return any(e.subject == s and a <= e.time < b and all((e.data or {}).get(k) == v for k, v in request.filters)
               for e in Event.objects.filter(type=meter.event_type) for s, a, b in request.subject_periods)


@settings(max_examples=30, deadline=None)
@given(aggregation=st.sampled_from(["SUM", "COUNT"]), steps=st.lists(step, min_size=2, max_size=10),
       requests=st.lists(request_spec, min_size=1, max_size=4))
def test_live_totals_equal_the_whole_query_after_any_history(aggregation, steps, requests):
    forget_settled_usage()
    event_type = f"t.{uuid.uuid4().hex[:10]}"
    meter = make_meter(slug=f"m_{uuid.uuid4().hex[:10]}", event_type=event_type, aggregation=aggregation,
                       value_property="" if aggregation == "COUNT" else "$.tokens",
                       group_by={"type": "$.type", "model": "$.model"})
    asked = [as_request(spec) for spec in requests]
    refresh = 3600.0
    for action, argument in [*steps, ("query", None)]:
        if action == "ingest":
            ingest(build_events(argument, event_type))
        elif action == "roll":
            roll_up(meter, max_events=argument)
        elif action == "reset":
            meter_rollups_reset(meter=meter)
        elif action == "forget":
            forget_settled_usage()
        elif action == "age":
            refresh = 0.0
        with override_settings(USAGE_SETTLED_REFRESH_SECONDS=refresh):
            meter.refresh_from_db()
            live = usage_groups_live(meter=meter, requests=asked)
            totals = usage_totals_live(meter=meter, requests=asked)
        assert live == [whole(meter, request) for request in asked], (action, argument)
        assert totals == [sum(whole(meter, r).values(), Decimal(0)) if not r.dimensions else live_total
                          for r, live_total in zip(asked, totals, strict=True)]


def test_a_remembered_total_reads_one_statement_and_counts_new_events_at_once():
    forget_settled_usage()
    meter = make_meter(slug="live_tokens", event_type="t.live", group_by={"type": "$.type"})
    ingest(build_events([{"subject": "acme", "minutes": 30, "tokens": 5, "type": "request"}], "t.live"))
    roll_up(meter)
    requests = [as_request(([("acme", 0, 48, 17)], {})), as_request(([("acme", 0, 48, 17)], {"type": "request"}))]
    with CaptureQueriesContext(connection) as first:
        assert usage_totals_live(meter=meter, requests=requests) == [Decimal(5), Decimal(5)]
    with CaptureQueriesContext(connection) as again:
        assert usage_totals_live(meter=meter, requests=requests) == [Decimal(5), Decimal(5)]
    assert len(first) == 2  # both settled parts in one statement, then the newest events of both in one
    assert len(again) == 1
    ingest(build_events([{"subject": "acme", "minutes": 31, "tokens": 7, "type": "response"}], "t.live"))
    assert usage_totals_live(meter=meter, requests=requests) == [Decimal(12), Decimal(5)]


def test_a_remembered_part_is_read_again_once_the_aggregator_moved_on_and_it_is_old_unless_it_grew():
    """SQLite: the part cannot grow, so the newest events would pile up: it is read again. PostgreSQL: it grew to
    the snapshot's xmin with the call before, so nothing piles up and it is kept."""
    forget_settled_usage()
    meter = make_meter(slug="live_refresh", event_type="t.refresh")
    ingest(build_events([{"subject": "acme", "minutes": 30, "tokens": 5, "type": "request"}], "t.refresh"))
    requests = [as_request(([("acme", 0, 48, 0)], {}))]
    assert usage_totals_live(meter=meter, requests=requests) == [Decimal(5)]
    roll_up(meter)
    with CaptureQueriesContext(connection) as young:  # moved on, but the part is younger than the refresh age
        assert usage_totals_live(meter=meter, requests=requests) == [Decimal(5)]
    with override_settings(USAGE_SETTLED_REFRESH_SECONDS=0):
        assert usage_totals_live(meter=meter, requests=requests) == [Decimal(5)]  # exact; forgets the part
    with CaptureQueriesContext(connection) as refreshed:
        assert usage_totals_live(meter=meter, requests=requests) == [Decimal(5)]
    assert (len(young), len(refreshed)) == (1, 1 if connection.vendor == "postgresql" else 2)


def test_remembered_parts_are_read_again_at_spread_times_within_the_max_age(monkeypatch, settings):
    """Parts remembered together (a worker just started) are not all read again at the same moment."""
    import random

    forget_settled_usage()
    settings.USAGE_SETTLED_MAX_SECONDS = 100
    clock = [1000.0]
    monkeypatch.setattr(live_usage.time, "monotonic", lambda: clock[0])
    meter = make_meter(slug="live_spread", event_type="t.spread")
    ingest(build_events([{"subject": "acme", "minutes": 30, "tokens": 5, "type": "request"}], "t.spread"))
    requests = [as_request(([("acme", 0, 24 + hours, 0)], {})) for hours in range(20)]
    random.seed(7)
    assert usage_totals_live(meter=meter, requests=requests) == [Decimal(5)] * 20
    read_parts = live_usage._settled_parts
    parts_read: list[int] = []

    def counted(meter, asked):
        parts_read.append(len(asked))
        return read_parts(meter, asked)

    monkeypatch.setattr(live_usage, "_settled_parts", counted)

    def read_again_at(seconds: float) -> int:
        clock[0] = 1000.0 + seconds
        parts_read.clear()
        with CaptureQueriesContext(connection) as statements:
            assert usage_totals_live(meter=meter, requests=requests) == [Decimal(5)] * 20
        # the newest events of all in one statement, and the parts read again (if any) in one more
        assert len(statements) == 1 + len(parts_read) and len(parts_read) <= 1
        return sum(parts_read)

    assert read_again_at(49) == 0  # none before half the max age
    assert 0 < read_again_at(75) < 20  # some, not all
    clock[0] = 1000.0
    forget_settled_usage()
    usage_totals_live(meter=meter, requests=requests)
    assert read_again_at(100) == 20  # every one by the max age


def test_other_aggregations_are_read_whole():
    forget_settled_usage()
    meter = make_meter(slug="live_max", event_type="t.max", aggregation="MAX")
    ingest(build_events([{"subject": "acme", "minutes": m, "tokens": t, "type": "request"}
                         for m, t in ((30, 5), (90, 9))], "t.max"))
    roll_up(meter)
    ingest(build_events([{"subject": "acme", "minutes": 95, "tokens": 7, "type": "request"}], "t.max"))
    assert usage_totals_live(meter=meter, requests=[as_request(([("acme", 0, 48, 0)], {}))]) == [Decimal(9)]


def test_a_changed_definition_is_not_answered_from_the_old_one():
    forget_settled_usage()
    meter = make_meter(slug="live_definition", event_type="t.definition", group_by={"type": "$.type"})
    ingest(build_events([{"subject": "acme", "minutes": 30, "tokens": 5, "type": "request"}], "t.definition"))
    roll_up(meter)
    request = as_request(([("acme", 0, 48, 0)], {}))
    assert usage_totals_live(meter=meter, requests=[request]) == [Decimal(5)]
    meter.aggregation, meter.value_property = "COUNT", ""  # as a definition change reads once rebuilt
    assert usage_totals_live(meter=meter, requests=[request]) == [Decimal(1)]


def test_the_since_part_takes_raw_pieces_only_and_parts_are_named():
    meter = make_meter(slug="live_parts", event_type="t.parts")
    hour = Piece(0, BASE, BASE + dt.timedelta(hours=1), "H")
    with pytest.raises(ValueError, match="R pieces"):
        usage_rows(meter=meter, pieces=[hour], window_bounds=[(hour.start, hour.end)], part="since")
    with pytest.raises(ValueError, match="unknown usage part"):
        usage_rows(meter=meter, pieces=[hour], window_bounds=[(hour.start, hour.end)], part="tail")


def test_no_subject_periods_means_zero_and_no_statement():
    meter = make_meter(slug="live_empty", event_type="t.empty")
    with CaptureQueriesContext(connection) as queries:
        assert usage_totals_live(meter=meter, requests=[LiveUsage.of([]), LiveUsage.of(
            [("acme", BASE, BASE)])]) == [Decimal(0), Decimal(0)]
    assert len(queries) == 0


@pytest.mark.postgres
def test_an_event_of_a_transaction_still_open_counts_when_it_commits_though_later_events_settled():
    """The remembered part grows up to the newest statement's snapshot xmin only: an event written by a transaction
    that began earlier and commits later (a slow ingest batch) has an ingest_tx below events already counted, so a
    mark past it would miss it for good."""
    import psycopg

    forget_settled_usage()
    meter = make_meter(slug="live_open", event_type="t.open")
    request = as_request(([("acme", 0, 48, 0)], {}))
    ingest(build_events([{"subject": "acme", "minutes": 30, "tokens": 5, "type": "request"}], "t.open"))
    assert usage_totals_live(meter=meter, requests=[request]) == [Decimal(5)]
    slow = psycopg.connect(**connection.get_connection_params())  # a transaction is open from its first statement
    try:
        slow.execute(
            "INSERT INTO metering_event (source, event_id, type, subject, time, data, ingested_at, ingest_tx) "
            "VALUES ('test', 'slow-batch', 't.open', 'acme', %s, '{\"tokens\": 100}', now(), "
            "pg_current_xact_id()::text::bigint)", [BASE + dt.timedelta(minutes=40)])
        for tokens in (7, 11):  # later events, committed while the slow batch is open; each call may grow the mark
            ingest(build_events([{"subject": "acme", "minutes": 50, "tokens": tokens, "type": "request"}], "t.open"))
            assert usage_totals_live(meter=meter, requests=[request]) == [Decimal(5 + 7 + (11 if tokens == 11 else 0))]
        assert usage_totals_live(meter=meter, requests=[request]) == [Decimal(23)]
        row = slow.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()
        assert row is not None
        slow_tx = row[0]
        assert [entry.high <= slow_tx for entry in live_usage._SETTLED._cache.values()] == [True]
        slow.commit()
        assert usage_totals_live(meter=meter, requests=[request]) == [Decimal(123)]
        assert usage_totals_live(meter=meter, requests=[request]) == [Decimal(123)]  # folded in once, not twice
        # the mark moves past every event once no older transaction runs anywhere in the cluster (other xdist
        # workers' tests run in it too): then the next call reads only what is committed from now on
        deadline = time.monotonic() + 60
        while (not all(entry.high > slow_tx for entry in live_usage._SETTLED._cache.values())
               and time.monotonic() < deadline):
            time.sleep(0.05)
            assert usage_totals_live(meter=meter, requests=[request]) == [Decimal(123)]
        assert [entry.high > slow_tx for entry in live_usage._SETTLED._cache.values()] == [True]
        roll_up(meter)
        meter.refresh_from_db()
        assert usage_totals_live(meter=meter, requests=[request]) == [Decimal(123)]
    finally:
        slow.close()


def test_requests_remembered_from_different_marks_are_read_in_one_statement():
    """Each customer's check moves its own part's mark; a later call asking for all of them still reads their
    newest events in one statement, each from its own mark."""
    forget_settled_usage()
    meter = make_meter(slug="live_marks", event_type="t.marks")
    subjects = ["s1", "s2", "s3", "s4"]
    ingest(build_events([{"subject": s, "minutes": 30, "tokens": 5, "type": "request"} for s in subjects], "t.marks"))
    roll_up(meter)
    requests = {s: as_request(([(s, 0, 48, 0)], {})) for s in subjects}
    assert usage_totals_live(meter=meter, requests=list(requests.values())) == [Decimal(5)] * 4
    for n, subject in enumerate(subjects):  # a check per customer, with new events in between
        ingest(build_events([{"subject": subject, "minutes": 31, "tokens": n + 1, "type": "request"}], "t.marks"))
        assert usage_totals_live(meter=meter, requests=[requests[subject]]) == [Decimal(5 + n + 1)]
    ingest(build_events([{"subject": "s2", "minutes": 32, "tokens": 100, "type": "request"}], "t.marks"))
    with CaptureQueriesContext(connection) as statements:
        assert usage_totals_live(meter=meter, requests=list(requests.values())) == [
            Decimal(6), Decimal(107), Decimal(8), Decimal(9)]
    assert len(statements) == 1
    assert usage_totals_live(meter=meter, requests=list(requests.values())) == [
        Decimal(6), Decimal(107), Decimal(8), Decimal(9)]
