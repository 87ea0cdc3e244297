"""One meter's failing rollup never stops the others: the error is recorded on the meter (admin list and
change page, dashboard card, job run), logged, and cleared by the meter's next successful run."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from common.models import JobRun
from metering import dashboard as metering_dashboard
from metering.models import HourlyUsage, Meter
from metering.selectors.meters import meters_with_rollup_errors
from metering.services import rollups
from metering.tasks import process_usage, rebuild_usage
from tests.builders import ingest, iso, llm_event, make_meter, utc, wait_until_foldable

pytestmark = pytest.mark.django_db(transaction=True)


def rolled_up(meter: Meter) -> Decimal:
    return sum((row.value_sum for row in HourlyUsage.objects.filter(series__meter=meter)), Decimal(0))


@pytest.fixture
def two_meters():
    broken = make_meter(slug="a_broken", name="Broken")  # folded first (lower id)
    healthy = make_meter(slug="b_healthy", name="Healthy")
    ingest([llm_event(tokens=n, time=iso(utc(2026, 11, 3, n))) for n in range(1, 6)])
    wait_until_foldable()
    return broken, healthy


@pytest.fixture
def break_meter(monkeypatch):
    """Make one meter's chunk fail inside the database, mid-transaction (like the numeric overflow did)."""
    real = rollups._aggregate_chunk

    def aggregate(cursor, meter, definition, low, high):
        if meter.slug == "a_broken":
            real(cursor, meter, definition, low, high)  # some work done, then the statement fails
            cursor.execute("SELECT * FROM no_such_table_for_this_test", [])
        return real(cursor, meter, definition, low, high)

    monkeypatch.setattr(rollups, "_aggregate_chunk", aggregate)
    return lambda: monkeypatch.setattr(rollups, "_aggregate_chunk", real)


def test_the_other_meter_keeps_folding_and_the_error_is_recorded_then_cleared(two_meters, break_meter, caplog,
                                                                               admin_client):
    broken, healthy = two_meters
    broken.refresh_from_db()
    low_before = broken.rollup_low
    report = rollups.usage_process_all(time_budget=10)

    assert report.events_by_meter == {"a_broken": 0, "b_healthy": 5}
    assert set(report.failures) == {"a_broken"} and "no_such_table_for_this_test" in report.failures["a_broken"]
    healthy.refresh_from_db()
    broken.refresh_from_db()
    assert rolled_up(healthy) == 15 and healthy.rollup_error == ""
    assert rolled_up(broken) == 0 and broken.rollup_low == low_before  # the failed chunk left nothing behind
    assert "no_such_table_for_this_test" in broken.rollup_error and broken.rollup_failed_at is not None
    assert "usage rollup of meter a_broken failed" in caplog.text

    # the admin: list column, change page, dashboard card
    listing = admin_client.get("/admin/metering/meter/").content.decode()
    assert "failing</strong> since" in listing and "no_such_table_for_this_test" in listing
    assert admin_client.get("/admin/metering/meter/", {"rollup": "failing"}).context["cl"].result_count == 1
    change = admin_client.get(f"/admin/metering/meter/{broken.pk}/change/").content.decode()
    assert "no_such_table_for_this_test" in change
    home = admin_client.get("/admin/").content.decode()
    card = home[home.index('id="card-meter-rollup-errors"'):]
    assert f'href="/admin/metering/meter/{broken.pk}/change/">a_broken</a>' in card[:2000]

    # fixed: the next run folds it and clears the error
    break_meter()
    report = rollups.usage_process_all(time_budget=10)
    assert report.failures == {} and report.events_by_meter["a_broken"] == 5
    broken.refresh_from_db()
    assert rolled_up(broken) == 15 and broken.rollup_error == "" and broken.rollup_failed_at is None
    assert meters_with_rollup_errors() == []
    assert 'id="card-meter-rollup-errors"' not in admin_client.get("/admin/").content.decode()


def test_the_beat_task_records_a_failed_run_naming_the_meter(two_meters, break_meter):
    assert process_usage() == 5
    run = JobRun.objects.filter(kind="process_usage").get()
    assert run.status == JobRun.Status.FAILED
    assert "b_healthy 5" in run.message and "a_broken: " in run.message and "no_such_table" in run.message
    assert set(run.result["failures"]) == {"a_broken"}


def test_a_meter_that_is_caught_up_clears_an_old_error(two_meters):
    broken, _ = two_meters
    Meter.objects.filter(pk=broken.pk).update(rollup_error="DataError: numeric field overflow")
    rollups.usage_process_all(time_budget=10)
    rollups.usage_process_all(time_budget=10)  # nothing new: the caught-up path clears too
    broken.refresh_from_db()
    assert broken.rollup_error == "" and rolled_up(broken) == 15


def test_rebuild_goes_on_with_the_next_meter_and_fails_at_the_end(two_meters, break_meter):
    broken, healthy = two_meters
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError, match="Rebuild failed for 1 meter\\(s\\): a_broken"):
        call_command("rebuild_usage", stdout=out, stderr=err)
    assert "a_broken: rebuild failed" in err.getvalue()
    assert "b_healthy: rebuilt from 5 events" in out.getvalue()
    assert rolled_up(healthy) == 15
    broken.refresh_from_db()
    assert "no_such_table_for_this_test" in broken.rollup_error

    with pytest.raises(Exception, match="no_such_table"):  # the task: its job run fails with the error
        rebuild_usage(broken.pk)
    run = JobRun.objects.filter(kind="rebuild_usage").get()
    assert run.status == JobRun.Status.FAILED


def test_the_dashboard_builder_is_one_query_and_needs_view_meter(two_meters, django_assert_num_queries):
    broken, _ = two_meters
    Meter.objects.filter(pk=broken.pk).update(rollup_error="boom", rollup_failed_at=utc(2026, 11, 3))
    admin = User.objects.create_superuser("root", password="pw-123456")
    with django_assert_num_queries(1):
        figures = metering_dashboard.dashboard(admin)
    assert figures == {"meter_rollup_errors": [{"slug": "a_broken", "error": "boom", "failed_at": utc(2026, 11, 3),
                                                "url": f"/admin/metering/meter/{broken.pk}/change/"}]}
    nobody = User.objects.create_user("staff", password="pw-123456", is_staff=True)
    assert metering_dashboard.dashboard(nobody) == {}


def test_failing_activity_counters_do_not_stop_the_meters(two_meters, monkeypatch):
    _, healthy = two_meters

    def broken_activity(**kwargs):
        raise RuntimeError("activity broke")

    monkeypatch.setattr(rollups, "activity_process_chunk", broken_activity)
    report = rollups.usage_process_all(time_budget=10)
    assert report.failures == {rollups.ACTIVITY_FAILURE: "RuntimeError: activity broke"}
    assert report.events_by_meter == {"a_broken": 5, "b_healthy": 5} and rolled_up(healthy) == 15
