"""Poison values never stop billing: a meter value beyond |10^18|, not finite, or a numeric string the
database cannot cast is flagged on the event ("out of range") and never counted, by the raw-event query,
the aggregator and the rebuild alike, on SQLite and PostgreSQL (run this module with DATABASE_URL too)."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from metering import jsonpath
from metering.models import HourlyUsage, Meter
from metering.selectors.usage import meter_query, usage_total
from metering.services.rollups import usage_process_all
from tests.builders import bearer, body, ingest, llm_event, make_meter, roll_up, wait_until_foldable

POISON = [1e30, -1e30, "1e400000", "NaN", "Infinity", "-Infinity", 10**18 + 1, "1e19", "-1000000000000001000.5",
          "1" * 101, "1e-1000"]


def recent() -> tuple[dt.datetime, dt.datetime]:
    now = timezone.now()
    return now - dt.timedelta(days=1), now + dt.timedelta(hours=1)


def total(meter: Meter) -> Decimal:
    start, end = recent()
    return usage_total(meter=meter, subjects=["kong-air"], start=start, end=end)


def rolled_up(meter: Meter) -> Decimal:
    return sum((row.value_sum for row in HourlyUsage.objects.filter(series__meter=meter)), Decimal(0))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("poison", POISON, ids=str)
def test_a_poison_value_is_flagged_and_never_counted(api, ingest_token, read_token, admin_client, poison):
    meter = make_meter()
    later = make_meter(slug="z_tokens", name="Tokens again")  # folded after the first one by the job
    events = [llm_event(event_id="good-1", tokens=24, time=None),
              llm_event(event_id="poison", tokens=poison, time=None),
              llm_event(event_id="good-2", tokens="6", time=None)]
    response = api.generic("POST", "/api/v1/events", body(events), content_type="application/json",
                           **bearer(ingest_token))
    assert response.status_code == 204

    # raw events, not rolled up yet
    assert total(meter) == 30
    start, end = recent()
    for aggregation, expected in (("MAX", 24), ("MIN", 6), ("AVG", 15), ("LATEST", 6)):
        Meter.objects.filter(pk=later.pk).update(aggregation=aggregation)
        later.refresh_from_db()
        rows = meter_query(meter=later, start=start, end=end, subjects=["kong-air"])
        assert [row.value for row in rows] == [expected], aggregation
    Meter.objects.filter(pk=later.pk).update(aggregation="SUM")

    # the beat job: no exception, nothing recorded as failing, the poison not counted
    wait_until_foldable()
    report = usage_process_all(time_budget=20.0)
    assert report.failures == {}
    assert report.events_by_meter == {"llm_tokens": 3, "z_tokens": 3}
    for m in (meter, later):
        m.refresh_from_db()
        assert m.rollup_error == ""
        assert rolled_up(m) == 30 and total(m) == 30
    assert HourlyUsage.objects.filter(series__meter=meter).get().value_count == 2  # 3 events, 2 values

    # a rebuild reads the same events the same way
    call_command("rebuild_usage", "--meter", "llm_tokens", stdout=io.StringIO())
    assert rolled_up(meter) == 30

    # the events list API and the admin explorer say why
    items = {item["event"]["id"]: item["validationError"]
             for item in api.get("/api/v1/events", **bearer(read_token)).json()}
    assert items["poison"] == "value at $.tokens is out of range"
    assert "value" not in (items["good-1"] or "") and "value" not in (items["good-2"] or "")  # (no customer yet)
    page = admin_client.get("/admin/metering/event/").content.decode()
    assert "value at $.tokens is out of range" in page


@pytest.mark.django_db(transaction=True)
def test_the_preview_sum_stays_exact_at_the_bound():
    """10^18 itself counts (|value| <= 10^18), and many of them still fit the rollup columns."""
    meter = make_meter()
    ingest([llm_event(tokens=10**18, time=None) for _ in range(20)] + [llm_event(tokens="-1e18", time=None)])
    assert total(meter) == 19 * 10**18
    roll_up(meter)
    assert rolled_up(meter) == 19 * 10**18 and total(meter) == 19 * 10**18


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_postgresql_applies_the_bound_exactly():
    """SQLite compares decimal strings as doubles (10^18 + 0.5 reads as 10^18 there); PostgreSQL is exact."""
    meter = make_meter()
    ingest([llm_event(tokens="1000000000000000000.5", time=None), llm_event(tokens="1000000000000000000.0", time=None),
            llm_event(tokens=1, time=None)])
    assert total(meter) == 10**18 + 1
    roll_up(meter)
    assert rolled_up(meter) == 10**18 + 1 and total(meter) == 10**18 + 1


@pytest.mark.parametrize("value, expected", [
    (24, Decimal(24)),
    (0.5, Decimal("0.5")),
    (10**18, Decimal(10**18)),
    (-(10**18), Decimal(-(10**18))),
    ("1e18", Decimal("1e18")),
    (" 2.25 ", Decimal("2.25")),
    ("\t7\n", Decimal(7)),
    ("1e-999", Decimal("1e-999")),  # in range (the rollup column rounds it to 0)
    ("0.1234567890123456789", Decimal("0.1234567890123456789")),  # more than 12 places: rounded when stored
    ("9" * 18, Decimal("9" * 18)),
])
def test_values_in_range(value, expected):
    path = jsonpath.parse("$.tokens")
    assert jsonpath.numeric_value(path, {"tokens": value}) == (expected, None)


@pytest.mark.parametrize("value, problem", [
    *[(value, "out of range") for value in POISON],
    (float("inf"), "out of range"),
    (float("nan"), "out of range"),
    ("+1e1000", "out of range"),
    (" nan ", "out of range"),
    ("1e18" + " " * 97, "out of range"),  # longer than 100 characters
    ("ten", "not a number"),
    ("١٢٣", "not a number"),  # digits other than 0-9: the database reads none of them
    ("0x10", "not a number"),
    (True, "not a number"),
    ([1], "not a number"),
    (None, "missing"),
])
def test_values_not_counted(value, problem):
    path = jsonpath.parse("$.tokens")
    assert jsonpath.numeric_value(path, {"tokens": value}) == (None, f"value at $.tokens is {problem}")


def test_one_bound_for_python_and_sql():
    from metering import usage_sql

    assert Decimal(10) ** 18 == jsonpath.VALUE_BOUND
    assert Decimal(jsonpath.VALUE_BOUND_SQL) == jsonpath.VALUE_BOUND
    assert jsonpath.VALUE_BOUND_SQL in usage_sql.in_range("v")
    # 10^9 events at the bound in one hourly bucket still fit numeric(40, 12) (28 integer digits)
    assert len(str(10**9 * int(jsonpath.VALUE_BOUND))) <= 40 - 12
    field = HourlyUsage._meta.get_field("value_sum")
    assert (field.max_digits, field.decimal_places) == (40, 12)


@pytest.mark.django_db
@pytest.mark.parametrize("raw", [b"1e400000", b"-1e400000"])
def test_a_number_the_database_cannot_hold_is_400_not_500(api, ingest_token, raw):
    """A bare JSON number beyond what PostgreSQL's jsonb holds: 400 naming the event (PostgreSQL), or
    stored and flagged out of range (SQLite stores the text); never a 500."""
    payload = (b'[{"specversion":"1.0","id":"ok","source":"s","type":"kong.llm_request","subject":"a",'
               b'"data":{"tokens":1}},{"specversion":"1.0","id":"x","source":"s","type":"kong.llm_request",'
               b'"subject":"a","data":{"tokens":' + raw + b"}}]")
    response = api.generic("POST", "/api/v1/events", payload, content_type="application/json",
                           **bearer(ingest_token))
    from django.db import connection

    from metering.models import Event

    if connection.vendor == "postgresql":
        assert response.status_code == 400, response.content
        assert response["Content-Type"] == "application/problem+json"
        error = response.json()["errors"][0]
        assert (error["index"], error["field"]) == (1, "data")
        assert "out of range" in error["message"]
        assert Event.objects.count() == 0  # all or nothing
    else:
        assert response.status_code == 204
        make_meter()
        from metering.selectors.event_problems import meter_problems

        event = Event.objects.get(event_id="x")
        assert meter_problems([event])[event.pk]["validationError"] == "value at $.tokens is out of range"


@pytest.mark.django_db(transaction=True)
def test_the_migration_refolds_meters_whose_rollups_hold_an_out_of_range_value():
    import importlib

    from django.apps import apps

    migration = importlib.import_module("metering.migrations.0005_meter_rollup_error")
    poisoned, clean = make_meter(), make_meter(slug="clean", event_type="other.type")
    ingest([llm_event(tokens=24, time=None), llm_event(tokens=6, time=None),
            {**llm_event(tokens=5, time=None), "type": "other.type"}])
    roll_up()
    HourlyUsage.objects.filter(series__meter=poisoned).update(value_max=Decimal(10**20), value_sum=Decimal(10**20))
    assert migration.VALUE_BOUND == jsonpath.VALUE_BOUND
    migration.refold_meters_with_out_of_range_values(apps, None)
    poisoned.refresh_from_db()
    clean.refresh_from_db()
    assert poisoned.rollup_low == 0 and not HourlyUsage.objects.filter(series__meter=poisoned).exists()
    assert clean.rollup_low > 0 and rolled_up(clean) == 5
    assert total(poisoned) == 30  # read raw until refolded
    roll_up(poisoned)
    assert rolled_up(poisoned) == 30
