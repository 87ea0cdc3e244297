"""The aggregator: late commits, crashes, concurrency, rebuilds, activity counters, DST windows."""

from __future__ import annotations

import datetime as dt
import io
import threading
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from metering.cloudevents import parse_events
from metering.models import DailyUsage, Event, EventTypeActivity, HourlyUsage, Meter, SubjectActivity
from metering.selectors.usage import meter_query, usage_total
from metering.services import rollups
from metering.services.ingest import events_ingest
from metering.services.meters import meter_update
from tests.builders import body, ingest, iso, llm_event, make_meter, roll_up, utc, wait_until_foldable
from tests.threads import run_in_threads

NOV = (utc(2026, 11, 1), utc(2026, 12, 1))


def rolled_up_total(meter: Meter) -> Decimal:
    return sum((row.value_sum for row in HourlyUsage.objects.filter(series__meter=meter)), Decimal(0))


def total(meter: Meter, subjects=("kong-air",)) -> Decimal:
    return usage_total(meter=meter, subjects=list(subjects), start=NOV[0], end=NOV[1])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_event_whose_transaction_commits_late_is_not_skipped():
    """X is written first (lower id, earlier ingested_at) but commits after Y; a watermark on ids or
    ingested_at would fold Y, move past X, and never count it."""
    meter = make_meter()
    roll_up(meter)
    inside, release = threading.Event(), threading.Event()

    def slow_writer():
        try:
            rows = parse_events(body([llm_event(event_id="x-late", tokens=100, time=iso(utc(2026, 11, 3, 10)))]),
                                "application/json", now=utc(2026, 11, 3, 10))
            with transaction.atomic():
                events_ingest(rows=rows, received_at=utc(2026, 11, 3, 10))
                inside.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert inside.wait(30)
    ingest([llm_event(event_id="y-early", tokens=5, time=iso(utc(2026, 11, 3, 11)))])
    rollups.rollups_catch_up(meter_id=meter.pk)  # X is still running: Y must wait too
    meter.refresh_from_db()
    x_started = Event.objects.get(event_id="y-early").ingest_tx
    assert meter.rollup_low <= x_started
    assert total(meter) == 5  # Y is visible at once, from the raw tail
    release.set()
    thread.join(30)
    roll_up(meter)
    x, y = Event.objects.get(event_id="x-late"), Event.objects.get(event_id="y-early")
    assert x.pk < y.pk and x.ingest_tx < y.ingest_tx
    assert rolled_up_total(meter) == 105
    assert total(meter) == 105


@pytest.mark.django_db(transaction=True)
def test_a_crash_mid_chunk_rolls_back_and_the_rerun_counts_once(monkeypatch):
    meter = make_meter()
    ingest([llm_event(tokens=n, time=iso(utc(2026, 11, 3, n % 24))) for n in range(1, 21)])
    real = rollups._merge_set
    calls = {"n": 0}

    def crash_on_daily(table):
        calls["n"] += 1
        if table == "metering_dailyusage":
            raise RuntimeError("worker killed between the hourly and the daily upsert")
        return real(table)

    monkeypatch.setattr(rollups, "_merge_set", crash_on_daily)
    wait_until_foldable()
    with pytest.raises(RuntimeError):
        rollups.rollups_catch_up(meter_id=meter.pk)
    assert HourlyUsage.objects.filter(series__meter=meter).count() == 0
    monkeypatch.setattr(rollups, "_merge_set", real)
    roll_up(meter)
    roll_up(meter)
    assert rolled_up_total(meter) == sum(range(1, 21))
    assert sum(d.value_sum for d in DailyUsage.objects.filter(series__meter=meter)) == sum(range(1, 21))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_aggregators_at_once_never_fold_the_same_events_twice():
    meter = make_meter()
    ingest([llm_event(tokens=1, time=iso(utc(2026, 11, 3, 10, n % 60))) for n in range(2000)])

    def catch_up() -> None:
        for _ in range(20):
            rollups.rollups_catch_up(meter_id=meter.pk, max_events=50)

    errors = run_in_threads(catch_up, 4)
    assert not errors
    roll_up(meter)
    assert rolled_up_total(meter) == 2000


@pytest.mark.django_db(transaction=True)
def test_changing_a_meter_rebuilds_its_totals():
    meter = make_meter(group_by={})
    ingest([llm_event(tokens=10, kind="request"), llm_event(tokens=3, kind="response"),
            llm_event(tokens=7, kind="request", model="llama")])
    roll_up(meter)
    assert total(meter) == 20
    meter = meter_update(meter=meter, group_by={"type": "$.type"})
    roll_up(meter)
    rows = meter_query(meter=meter, start=NOV[0], end=NOV[1], group_by=["type"])
    assert {r.group_by["type"]: r.value for r in rows} == {"request": 17, "response": 3}
    meter = meter_update(meter=meter, aggregation="MAX")
    roll_up(meter)
    assert total(meter) == 10
    assert {r.value_max for r in DailyUsage.objects.filter(series__meter=meter)} == {Decimal(10), Decimal(3)}
    meter = meter_update(meter=meter, value_property="$.missing", aggregation="SUM")
    roll_up(meter)
    assert total(meter) == 0


@pytest.mark.django_db(transaction=True)
def test_rebuild_usage_command_rebuilds_with_a_progress_bar():
    meter = make_meter()
    ingest([llm_event(tokens=2) for _ in range(5)])
    roll_up(meter)
    HourlyUsage.objects.filter(series__meter=meter).update(value_sum=999)  # damage the rollups
    out = io.StringIO()
    call_command("rebuild_usage", "--meter", "llm_tokens", stdout=out)
    assert "100.0% 5/5 events" in out.getvalue()
    assert "llm_tokens: rebuilt from 5 events" in out.getvalue()
    assert rolled_up_total(meter) == 10


@pytest.mark.django_db
def test_rebuild_usage_command_rejects_an_unknown_meter():
    make_meter()
    with pytest.raises(CommandError, match="No meter with slug 'nope'. Known meters: llm_tokens"):
        call_command("rebuild_usage", "--meter", "nope", stdout=io.StringIO())


@pytest.mark.django_db(transaction=True)
def test_values_numbers_numeric_strings_and_bad_values():
    meter = make_meter(group_by={})
    ingest([llm_event(tokens=10), llm_event(tokens="5"), llm_event(tokens=" 2.5 "), llm_event(tokens="ten"),
            llm_event(tokens=None), llm_event(tokens=True), llm_event(tokens={"n": 1})])
    assert total(meter) == Decimal("17.5")
    roll_up(meter)
    assert total(meter) == Decimal("17.5")


@pytest.mark.django_db(transaction=True)
def test_missing_group_values_are_null_groups():
    meter = make_meter(group_by={"model": "$.model"})
    event = llm_event(tokens=4)
    del event["data"]["model"]
    ingest([event, llm_event(tokens=1, model=None), llm_event(tokens=6, model="gpt-4o")])
    roll_up(meter)
    rows = meter_query(meter=meter, start=NOV[0], end=NOV[1], group_by=["model"])
    assert {r.group_by["model"]: r.value for r in rows} == {None: 5, "gpt-4o": 6}


@pytest.mark.django_db(transaction=True)
def test_day_windows_follow_daylight_saving_time():
    """Europe/Berlin: 29 March 2026 has 23 hours, 25 October 2026 has 25."""
    meter = make_meter(group_by={})
    hours = [utc(2026, 3, 28, 22, 30), utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 21, 30), utc(2026, 3, 29, 22, 30),
             utc(2026, 10, 24, 21, 30), utc(2026, 10, 24, 22, 30), utc(2026, 10, 25, 22, 30), utc(2026, 10, 25, 23, 30)]
    ingest([llm_event(tokens=1, time=iso(t)) for t in hours])
    roll_up(meter)

    def berlin_days(start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime, Decimal]]:
        rows = meter_query(meter=meter, start=start, end=end, window_size="DAY", window_time_zone="Europe/Berlin")
        return [(r.window_start, r.window_end, r.value) for r in rows]

    assert berlin_days(utc(2026, 3, 27, 23), utc(2026, 3, 30, 22)) == [
        (utc(2026, 3, 27, 23), utc(2026, 3, 28, 23), 1),
        (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22), 2),  # the 23-hour day
        (utc(2026, 3, 29, 22), utc(2026, 3, 30, 22), 1),
    ]
    assert berlin_days(utc(2026, 10, 23, 22), utc(2026, 10, 26, 23)) == [
        (utc(2026, 10, 23, 22), utc(2026, 10, 24, 22), 1),
        (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23), 2),  # the 25-hour day
        (utc(2026, 10, 25, 23), utc(2026, 10, 26, 23), 1),
    ]
    hourly = meter_query(meter=meter, start=utc(2026, 10, 24, 22), end=utc(2026, 10, 25, 23), window_size="HOUR",
                         window_time_zone="Europe/Berlin")
    assert sum(r.value for r in hourly) == 2
    assert len({r.window_start for r in hourly}) == 2


@pytest.mark.django_db(transaction=True)
def test_activity_counts_subjects_and_types():
    ingest([llm_event(subject="kong-air", time=iso(utc(2026, 11, 3, 10))),
            llm_event(subject="kong-air", time=iso(utc(2026, 11, 5, 10))),
            llm_event(subject="acme", time=iso(utc(2026, 11, 4, 10)))])
    roll_up()
    ingest([llm_event(subject="kong-air", time=iso(utc(2026, 11, 1, 10)))])
    roll_up()
    kong = SubjectActivity.objects.get(subject="kong-air")
    assert (kong.event_count, kong.first_seen, kong.last_seen) == (3, utc(2026, 11, 1, 10), utc(2026, 11, 5, 10))
    assert EventTypeActivity.objects.get(type="kong.llm_request").event_count == 4


@pytest.mark.django_db(transaction=True)
def test_beat_job_rolls_up_every_meter_and_records_a_run():
    from common.models import JobRun
    from metering.tasks import process_usage

    tokens, count = make_meter(), make_meter(slug="llm_calls", aggregation="COUNT", value_property="")
    ingest([llm_event(tokens=3), llm_event(tokens=4)])
    wait_until_foldable()
    # In this process, as beat's task body. Not ``.get()``: Celery refuses it once any test of this worker process
    # has booted a worker in it (a process-wide flag), which made this test fail now and then.
    outcome = process_usage.apply()
    assert outcome.successful(), outcome.traceback
    assert outcome.result == 4  # 2 events into each of the 2 meters
    run = JobRun.objects.get(kind="process_usage")
    assert run.result["by_meter"] == {"llm_calls": 2, "llm_tokens": 2}
    assert total(tokens) == 7 and total(count) == 2
    assert JobRun.objects.filter(kind="process_usage").exists()


def test_fold_is_exact_for_large_decimal_sums(db):
    meter = make_meter(group_by={})
    ingest([llm_event(tokens="0.000001") for _ in range(3)] + [llm_event(tokens=10**12)])
    assert total(meter) == Decimal("1000000000000.000003") or connection.vendor == "sqlite"


def test_meter_change_keeps_usage_queries_correct_meanwhile(db):
    meter = make_meter(group_by={})
    ingest([llm_event(tokens=4, time=iso(utc(2026, 11, 2, 1, 30)))])
    assert total(meter) == 4
    start = dt.datetime(2026, 11, 2, 1, 10, tzinfo=dt.UTC)
    assert usage_total(meter=meter, subjects=["kong-air"], start=start, end=start + dt.timedelta(minutes=20)) == 0
    assert usage_total(meter=meter, subjects=["kong-air"], start=start, end=start + dt.timedelta(minutes=21)) == 4


@pytest.mark.django_db(transaction=True)
def test_group_values_that_look_alike_stay_separate_series_across_chunks():
    """The aggregator joins partials to their series on a text key of the group-by values: missing, "-",
    empty, and values with the key's separators must never fall into one series."""
    from metering.models import UsageSeries

    meter = make_meter()
    look_alikes = [(None, "request"), ("-", "request"), ("", "request"), ("a,1:b", "request"), ("a", "1:b,request"),
                   ("1:a", "request"), ("gpt-4o", None)]
    events = []
    for hour in range(3):
        for n, (model, kind) in enumerate(look_alikes):
            event = llm_event(tokens=n + 1, model=model, kind=kind, time=iso(utc(2026, 11, 3, 10 + hour, n)))
            events.append(event)
    ingest(events[:7])
    roll_up(meter, max_events=3)  # several chunks; the later ones find their series already there
    ingest(events[7:])
    roll_up(meter, max_events=5)
    assert UsageSeries.objects.filter(meter=meter).count() == len(look_alikes)
    assert HourlyUsage.objects.filter(series__meter=meter).count() == 3 * len(look_alikes)
    rows = meter_query(meter=meter, start=NOV[0], end=NOV[1], group_by=["model", "type"])
    assert {(r.group_by["model"], r.group_by["type"]): r.value for r in rows} == {
        group: Decimal(3 * (n + 1)) for n, group in enumerate(look_alikes)}
    assert sum(d.value_sum for d in DailyUsage.objects.filter(series__meter=meter)) == 3 * sum(range(1, 8))


@pytest.mark.django_db(transaction=True)
def test_resetting_a_meter_forgets_its_series_and_rollups_but_not_another_meters():
    from metering.models import UsageSeries

    meter = make_meter()
    other = make_meter(slug="llm_calls", name="Calls", aggregation="COUNT", value_property="")
    ingest([llm_event(tokens=5), llm_event(tokens=7, model="llama")])
    roll_up()
    assert UsageSeries.objects.filter(meter=other).count() == 2
    rollups.meter_rollups_reset(meter=meter)
    meter.refresh_from_db()
    assert (meter.rollup_low, meter.rollup_newest_hour, meter.rollup_newest_day) == (0, None, None)
    assert not UsageSeries.objects.filter(meter=meter).exists()
    assert not HourlyUsage.objects.filter(series__meter=meter).exists()
    assert HourlyUsage.objects.filter(series__meter=other).count() == 2
    assert total(meter) == 12  # read raw until refolded
    roll_up(meter)
    assert rolled_up_total(meter) == 12
    assert total(other) == 2
