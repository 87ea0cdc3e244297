"""Ingest under real concurrency and failures, through a live server (PostgreSQL pass)."""

from __future__ import annotations

import json
import random
import threading
import urllib.error
import urllib.request

import pytest
from django.db import connection

from metering.models import Event
from metering.services.tokens import api_token_create
from tests.builders import llm_event


def post_batch(url: str, token: str, events: list[dict]) -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback test server
        f"{url}/api/v1/events", data=json.dumps(events).encode(), method="POST",
        headers={"Content-Type": "application/cloudevents-batch+json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_threads_posting_overlapping_batches_store_exactly_the_unique_events(live_server):
    _, token = api_token_create(name="load", scopes=["ingest"])
    pool = [llm_event(event_id=f"evt-{i:05d}", tokens=i) for i in range(3000)]
    rng = random.Random(7)
    plans = [[rng.sample(pool, 400) for _ in range(6)] for _ in range(8)]  # heavy overlap between threads
    expected = {e["id"] for plan in plans for batch in plan for e in batch}
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(batches):
        for batch in batches:
            status = post_batch(live_server.url, token, batch)
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=worker, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [204] * 48
    assert Event.objects.count() == len(expected)
    assert set(Event.objects.values_list("event_id", flat=True)) == expected


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_database_error_mid_batch_leaves_nothing_and_the_retry_counts_once(live_server):
    _, token = api_token_create(name="gw", scopes=["ingest"])
    batch = [llm_event(event_id=f"b-{i:03d}") for i in range(100)]
    batch[57]["id"] = "poison"
    with connection.cursor() as cursor:
        cursor.execute("""
            CREATE FUNCTION fail_on_poison() RETURNS trigger AS $$
            BEGIN
              IF NEW.event_id = 'poison' THEN RAISE EXCEPTION 'injected failure'; END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql;
            CREATE TRIGGER fail_on_poison BEFORE INSERT ON metering_event
              FOR EACH ROW EXECUTE FUNCTION fail_on_poison();
        """)
    try:
        assert post_batch(live_server.url, token, batch) == 500
        assert post_batch(live_server.url, token, batch[:10]) == 204  # small-batch path works meanwhile
        assert Event.objects.count() == 10
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER fail_on_poison ON metering_event; DROP FUNCTION fail_on_poison();")
    assert post_batch(live_server.url, token, batch) == 204
    assert post_batch(live_server.url, token, batch) == 204
    assert Event.objects.count() == 100


@pytest.mark.django_db(transaction=True)
def test_a_failed_write_on_any_database_leaves_no_dedup_claim(api, monkeypatch):
    """The service level on both databases: the failure rolls back, the retry stores everything."""
    import datetime as dt

    from metering.cloudevents import parse_events
    from metering.services import ingest

    now = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    rows = parse_events(json.dumps([llm_event(event_id=f"r-{i}") for i in range(50)]).encode(),
                        "application/json", now=now)
    real_writer = ingest._write_postgresql if connection.vendor == "postgresql" else ingest._write_sqlite
    attr = "_write_postgresql" if connection.vendor == "postgresql" else "_write_sqlite"

    def write_then_fail(batch, received_at):
        real_writer(batch, received_at)
        raise RuntimeError("worker died after writing, before commit")

    monkeypatch.setattr(ingest, attr, write_then_fail)
    with pytest.raises(RuntimeError):
        ingest.events_ingest(rows=rows, received_at=now)
    assert Event.objects.count() == 0
    monkeypatch.setattr(ingest, attr, real_writer)
    assert ingest.events_ingest(rows=rows, received_at=now).stored == 50
    assert ingest.events_ingest(rows=rows, received_at=now).stored == 0
    assert Event.objects.count() == 50
