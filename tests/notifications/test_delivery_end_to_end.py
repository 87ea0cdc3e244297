"""Done-when of issue 19: a real receiver on loopback verifies signatures with ``standardwebhooks``, answers 500 to
the first attempt, and sees each event exactly once after retries, in order of occurrence per customer; the
outbox survives a worker killed between the commit and the send; nothing is sent for a rolled-back change."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import transaction
from django.utils import timezone

from customers.services.subscriptions import subscription_create
from notifications import tasks, transport
from notifications.models import Delivery, OutboxEvent
from notifications.services.deliveries import delivery_drain
from notifications.services.endpoints import endpoint_create
from notifications.services.outbox import outbox_dispatch, pending_queues
from tests.builders import cancelled_in_december, customer, token_plan
from tests.builders.moments import utc

pytestmark = pytest.mark.django_db


def drain_with_beat(rounds: int = 20) -> None:
    """What beat does every minute, until nothing is due."""
    for _ in range(rounds):
        if not tasks.sweep():
            return


def test_each_event_reaches_a_verifying_receiver_once_after_a_500_in_order_per_customer(
        receiver, django_capture_on_commit_callbacks):
    receiver.answers = [500]
    new = endpoint_create(url=receiver.url, description="product")
    receiver.secret = new.secret
    assert new.secret.startswith("whsec_")
    with django_capture_on_commit_callbacks(execute=True):
        cancelled_in_december()  # kong-air: subscription, two invoices, a cancel and a credit note
        globex = customer("globex")
        subscription_create(customer=globex, plan=token_plan(key="other"), start=utc(2026, 11, 1))
    drain_with_beat()

    events = list(OutboxEvent.objects.order_by("id"))
    types = [e.type for e in events]
    assert {"subscription.created", "invoice.issued", "subscription.canceled", "credit_note.issued"} <= set(types)
    assert receiver.requests[0].status == 500  # the first attempt failed ...
    accepted = receiver.accepted()
    assert sorted(accepted) == sorted(e.uid for e in events)  # ... and each event arrived exactly once
    assert len(accepted) == len(set(accepted))
    assert all(r.verified for r in receiver.requests)
    for key in ("kong-air", "globex"):
        occurred = [e.uid for e in events if e.customer_key == key]
        assert [uid for uid in accepted if uid in occurred] == occurred
    first = receiver.requests[0]
    retry = [r for r in receiver.requests[1:] if r.webhook_id == first.webhook_id]
    assert [r.status for r in retry] == [200]  # the retry carried the same webhook-id
    body = next(r.body for r in receiver.requests if r.body and r.body["type"] == "invoice.issued")
    assert set(body) == {"type", "timestamp", "data"}
    assert body["data"]["invoice"]["customer"] == "kong-air"
    assert body["data"]["invoice"]["number"].startswith("INV-")
    assert Delivery.objects.filter(status="delivered").count() == len(events)
    delivery = Delivery.objects.get(event__uid=first.webhook_id)
    assert delivery.attempts == 2 and delivery.attempt_log.count() == 2


def test_nothing_is_recorded_or_sent_for_a_rolled_back_change(receiver, django_capture_on_commit_callbacks):
    receiver.secret = endpoint_create(url=receiver.url).secret
    plan = token_plan()
    globex = customer("globex")
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(RuntimeError), transaction.atomic():
        subscription_create(customer=globex, plan=plan, start=utc(2026, 11, 1))
        assert OutboxEvent.objects.count() == 1  # written in the same transaction ...
        raise RuntimeError("the change fails after the event was announced")
    drain_with_beat()
    assert OutboxEvent.objects.count() == 0  # ... and gone with it
    assert receiver.requests == []


def test_the_outbox_survives_a_worker_killed_between_commit_and_send(receiver, django_capture_on_commit_callbacks,
                                                                     monkeypatch):
    receiver.secret = endpoint_create(url=receiver.url).secret
    # The process dies right after the commit: its on-commit callbacks (the dispatch) never run.
    with django_capture_on_commit_callbacks(execute=False):
        subscription_create(customer=customer("globex"), plan=token_plan(), start=utc(2026, 11, 1))
    event = OutboxEvent.objects.get()
    assert event.dispatched_at is None and receiver.requests == []

    # The next worker dispatches it, claims the delivery, and is killed before the POST leaves.
    def killed(*args, **kwargs):
        raise SystemExit("worker lost")

    monkeypatch.setattr(transport, "post", killed)
    with pytest.raises(SystemExit):
        tasks.sweep()
    delivery = Delivery.objects.get()
    assert delivery.status == "pending" and delivery.claimed_until is not None
    assert pending_queues() == []  # held by the dead worker's lease ...
    monkeypatch.setattr(transport, "post", transport.http_post)
    later = timezone.now() + dt.timedelta(seconds=120)
    assert pending_queues(now=later) == [(delivery.endpoint_id, "", "globex")]  # ... until the lease runs out
    delivery_drain(endpoint_id=delivery.endpoint_id, customer_key="globex", now=later)
    assert receiver.accepted() == [event.uid]
    drain_with_beat()
    assert receiver.accepted() == [event.uid]


def test_a_receiver_that_hangs_is_cut_at_the_timeout_and_retried(receiver, settings,
                                                                 django_capture_on_commit_callbacks):
    settings.WEBHOOK_TIMEOUT_SECONDS = 1
    receiver.secret = endpoint_create(url=receiver.url).secret
    receiver.hang_seconds = 3
    with django_capture_on_commit_callbacks(execute=True):
        subscription_create(customer=customer("globex"), plan=token_plan(), start=utc(2026, 11, 1))
    delivery = Delivery.objects.get()
    assert delivery.status == "pending" and delivery.attempts == 1
    assert "within 1 s" in delivery.attempt_log.get().error
    drain_with_beat()
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and delivery.attempts == 2


def test_410_disables_the_endpoint_and_other_4xx_fail_without_retry(receiver, django_capture_on_commit_callbacks):
    new = endpoint_create(url=receiver.url)
    receiver.secret = new.secret
    receiver.answers = [400, 410]
    plan = token_plan()
    with django_capture_on_commit_callbacks(execute=True):
        subscription_create(customer=customer("globex"), plan=plan, start=utc(2026, 11, 1))
    with django_capture_on_commit_callbacks(execute=True):
        subscription_create(customer=customer("initech"), plan=plan, start=utc(2026, 11, 1))
    statuses = list(Delivery.objects.order_by("id").values_list("status", "attempts"))
    assert statuses == [("failed", 1), ("failed", 1)]
    new.endpoint.refresh_from_db()
    assert not new.endpoint.enabled and "410" in new.endpoint.disabled_reason


def test_retries_stop_after_the_configured_attempts_with_backoff(receiver, settings,
                                                                 django_capture_on_commit_callbacks):
    settings.WEBHOOK_RETRY_BACKOFF_SECONDS = 700
    settings.WEBHOOK_MAX_ATTEMPTS = 8
    receiver.secret = endpoint_create(url=receiver.url).secret
    receiver.answers = [503] * 8 + [429]
    with django_capture_on_commit_callbacks(execute=True):
        subscription_create(customer=customer("globex"), plan=token_plan(), start=utc(2026, 11, 1))
    delivery = Delivery.objects.get()
    waits, now = [], timezone.now()
    while delivery.status == "pending":
        assert delivery.next_attempt_at is not None
        waits.append((delivery.next_attempt_at - now).total_seconds())
        now = delivery.next_attempt_at
        delivery_drain(endpoint_id=delivery.endpoint_id, customer_key="globex", now=now)
        delivery.refresh_from_db()
    assert delivery.status == "failed" and delivery.attempts == 8
    assert [round(w) for w in waits] == [700, 1400, 2800, 5600, 11200, 22400, 43200]
    assert 20 * 3600 < sum(waits) < 30 * 3600  # about a day


def test_the_worker_task_retries_after_the_recorded_backoff(receiver, settings, monkeypatch):
    """On a worker (not eager), a retryable answer makes the task retry itself through Celery, with the countdown
    the delivery recorded as its next attempt."""
    settings.WEBHOOK_RETRY_BACKOFF_SECONDS = 700
    receiver.secret = endpoint_create(url=receiver.url).secret
    receiver.answers = [503]
    subscription_create(customer=customer("globex"), plan=token_plan(), start=utc(2026, 11, 1))
    outbox_dispatch()
    delivery = Delivery.objects.get()
    retried = {}

    class Retry(Exception):
        pass

    def retry(**options):
        retried.update(options)
        return Retry()

    monkeypatch.setattr(tasks.deliver, "retry", retry)
    with pytest.raises(Retry):
        tasks.deliver.run(delivery.endpoint_id, "", "globex")
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.next_attempt_at is not None
    assert retried["countdown"] == pytest.approx(700, abs=1)
