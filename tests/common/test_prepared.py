"""Prepared statements for the gateway's hot reads (common.prepared): prepared on PostgreSQL, seen by Django's execute
wrappers like any statement, never for Django's own queries, off with DATABASE_PREPARED_STATEMENTS=false."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import DataError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.models import Feature
from common.prepared import prepared_cursor
from customers.models import Customer
from customers.selectors import entitlement_check
from customers.services.subscriptions import subscription_create
from tests.builders import ingest, iso, kong_air, llm_event, quota, token_plan

pytestmark = pytest.mark.django_db

PROBE = "SELECT CAST(%s AS integer) + 1 AS probe_of_common_prepared"


def prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_a_statement_runs_and_is_seen_by_djangos_wrappers():
    seen = []

    def wrapper(execute, sql, params, many, context):
        seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper), prepared_cursor() as cursor:
        cursor.execute(PROBE, [41])
        assert cursor.fetchone()[0] == 42
    assert seen == [(PROBE, [41])]


def test_logged_queries_show_their_values():
    """While Django logs queries (DEBUG, a test capturing them) the statement is not prepared: its SQL is logged
    with the values."""
    with CaptureQueriesContext(connection) as captured, prepared_cursor() as cursor:
        cursor.execute(PROBE, [41])
    assert captured.captured_queries[0]["sql"] == PROBE.replace("%s", "41")


@pytest.mark.postgres
def test_on_postgresql_the_statement_is_prepared_and_djangos_queries_are_not():
    Customer.objects.filter(key="none-such").exists()  # a query through Django's own cursor
    assert not any("customers_customer" in text for text in prepared_statements())
    with prepared_cursor() as cursor:
        cursor.execute(PROBE, [1])
        cursor.execute(PROBE, [2])
        assert cursor.fetchone()[0] == 3
    assert sum("probe_of_common_prepared" in text for text in prepared_statements()) == 1


@pytest.mark.postgres
def test_named_parameters_and_null_bind_on_the_server():
    with prepared_cursor() as cursor:
        cursor.execute("SELECT %(a)s::bigint IS NULL, %(b)s::text", {"a": None, "b": "x"})
        assert cursor.fetchone() == (True, "x")


@pytest.mark.postgres
def test_turned_off_nothing_is_prepared(settings):
    settings.DATABASE_PREPARED_STATEMENTS = False
    with prepared_cursor() as cursor:
        cursor.execute(PROBE, [5])
        assert cursor.fetchone()[0] == 6
    assert not any("probe_of_common_prepared" in text for text in prepared_statements())


@pytest.mark.postgres
def test_the_gateway_check_prepares_its_customer_statement_once():
    now = timezone.now()
    air = kong_air(since=now - dt.timedelta(days=400))
    subscription_create(customer=air, plan=token_plan(extra=[quota(limit="500")]), start=now - dt.timedelta(days=1))
    ingest([llm_event(tokens=400, time=iso(now - dt.timedelta(minutes=5)))])
    feature = Feature.objects.get(key="ai-token")
    first = entitlement_check(id_or_key="kong-air", feature=feature, at=now)
    again = [entitlement_check(id_or_key="kong-air", feature=feature, at=now) for _ in range(3)]
    assert first is not None and all(value == first for value in again)
    customer = Customer.objects.get(key="kong-air")
    assert entitlement_check(id_or_key=str(customer.pk), feature=feature, at=now) == first  # an id binds too
    assert entitlement_check(id_or_key="nobody", feature=feature, at=now) is None
    assert sum("customers_subjectattribution" in text for text in prepared_statements()) >= 1


def test_the_wsgi_entry_point_keeps_what_django_loaded_out_of_the_collector():
    """billing_site.wsgi freezes what exists once Django is loaded (gc.freeze): a full collection in a worker then
    does not walk it."""
    script = "import gc, billing_site.wsgi; print(gc.get_freeze_count())"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"DJANGO_SETTINGS_MODULE": "billing_site.settings.local", "PATH": "/usr/bin:/bin",
                               "DATABASE_URL": "sqlite:///:memory:"})
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 50_000


@pytest.mark.postgres
def test_djangos_own_queries_are_not_even_counted_by_psycopg():
    with prepared_cursor() as cursor:
        cursor.execute(PROBE, [1])
    assert connection.connection.prepare_threshold is None  # as Django set it: its client-side queries untracked


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_run_that_fails_leaves_no_statement_behind():
    """Outside a transaction a statement whose run failed (PostgreSQL parsed and prepared it, then refused the
    values) is not left prepared on the server, where psycopg would have forgotten it."""
    failing = "SELECT 1 / %s::int AS probe_of_common_prepared"
    for _ in range(3):
        with pytest.raises(DataError), prepared_cursor() as cursor:
            cursor.execute(failing, [0])
    assert not any("probe_of_common_prepared" in text for text in prepared_statements())
    with prepared_cursor() as cursor:  # the connection goes on
        cursor.execute(failing, [1])
        assert cursor.fetchone()[0] == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_statement_whose_columns_a_migration_changed_runs_again():
    """A column's type changed by another connection (a migration while the workers serve): the prepared statement
    fails once with "cached plan must not change result type"; outside a transaction it is dropped and run again,
    instead of failing on every check until the connection is renewed."""
    import psycopg

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE prepared_probe (v varchar(3))")
        cursor.execute("INSERT INTO prepared_probe VALUES ('abc')")
    try:
        read = "SELECT v FROM prepared_probe WHERE v <> %s"
        with prepared_cursor() as cursor:
            cursor.execute(read, ["x"])
            assert cursor.fetchall() == [("abc",)]
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
            other.execute("ALTER TABLE prepared_probe ALTER COLUMN v TYPE varchar(8)")
        for _ in range(2):
            with prepared_cursor() as cursor:
                cursor.execute(read, ["x"])
                assert cursor.fetchall() == [("abc",)]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE prepared_probe")


@pytest.mark.postgres
def test_a_threshold_the_settings_configured_is_kept():
    connection.ensure_connection()
    connection.connection.prepare_threshold = 5  # as OPTIONS {"prepare_threshold": 5} would set it
    try:
        with prepared_cursor() as cursor:
            cursor.execute(PROBE, [1])
        assert connection.connection.prepare_threshold == 5
    finally:
        connection.connection.prepare_threshold = None


@pytest.mark.postgres
def test_the_newest_events_statement_runs_on_a_generic_plan_through_the_ingest_tx_index():
    """The metered check's newest-events statement is parsed and planned once: after its first five runs PostgreSQL
    keeps a generic plan, which reads the newest events through the ingest_tx index (not a subject's whole period
    in the (subject, time) index), and it answers as when it is not prepared."""
    now = timezone.now()
    air = kong_air(since=now - dt.timedelta(days=400))
    subscription_create(customer=air, plan=token_plan(extra=[quota(limit="500")]), start=now - dt.timedelta(days=1))
    ingest([llm_event(tokens=400, time=iso(now - dt.timedelta(minutes=5)))])
    with connection.cursor() as cursor:  # a busy table (other subjects' events) and its statistics
        cursor.execute("INSERT INTO metering_event "
                       "(source, event_id, type, subject, time, data, ingested_at, ingest_tx) "
                       "SELECT 'bulk', n::text, 'kong.llm_request', 'busy-' || (n %% 50), "
                       "%s - n * interval '1 minute', '{}', %s, 1 FROM generate_series(1, 30000) AS n", [now, now])
        cursor.execute("ANALYZE metering_event")
    feature = Feature.objects.get(key="ai-token")
    newest: list[tuple[str, list]] = []

    def keep_newest(execute, sql, params, many, context):
        if "newest AS MATERIALIZED" in sql:
            newest.append((sql, list(params)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(keep_newest):
        values = [entitlement_check(id_or_key="kong-air", feature=feature, at=now) for _ in range(10)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE %s",
                       ["%newest AS MATERIALIZED%"])
        # psycopg binds a mark as the smallest integer type that holds it: a first mark of 0 (no rollup yet) is
        # prepared apart from later ones when those exceed a smallint (a busy cluster's transaction ids); the nine
        # or ten others share one
        name, generic, custom = max(cursor.fetchall(), key=lambda plan: plan[1] + plan[2])
        assert custom == 5 and generic in (4, 5)  # five custom plans, then the generic one kept
        # The plan of the next run, with the last run's values (client-side binding writes them into the SQL).
        cursor.execute(f"EXPLAIN EXECUTE {name} ({', '.join(['%s'] * len(newest[-1][1]))})", newest[-1][1])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "metering_event_ingest_tx" in plan and "metering_event_subject_time" not in plan, plan
    with CaptureQueriesContext(connection):  # Django logs the queries: nothing is prepared
        unprepared = entitlement_check(id_or_key="kong-air", feature=feature, at=now)
    assert values[0] is not None and values[0].usage == 400
    assert all(value == unprepared for value in values)
