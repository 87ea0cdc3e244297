"""Celery tasks of notifications: take ids, call one service, safe to run twice (deliveries are claimed with a
lease, so a task delivered twice sends once)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from .services.alerts import (
    alerts_evaluate,
    endpoints_disable_stale,
    usage_surprises_evaluate,
    usage_unpriced_evaluate,
)
from .services.deliveries import delivery_drain
from .services.outbox import outbox_dispatch, pending_queues


@shared_task(name="notifications.dispatch", time_limit=300, soft_time_limit=270, ignore_result=True)
def dispatch() -> int:
    """After a commit that recorded events (and every minute from beat): fan them out to deliveries."""
    total = 0
    while queues := outbox_dispatch():
        total += len(queues)
    return total


@shared_task(name="notifications.deliver", bind=True, time_limit=900, soft_time_limit=870, ignore_result=True,
             max_retries=None)
def deliver(self, endpoint_id: int | None, recipient: str = "", customer_key: str = "") -> str:
    """Send one queue's deliveries in order. A retryable failure is retried by Celery (``self.retry``) after the
    backoff the delivery recorded (``next_attempt_at``, Celery's exponential formula), so the retried task finds it
    due; beat's sweep re-queues anything a lost message left behind. Eager (tests): beat's sweep does it."""
    outcome = delivery_drain(endpoint_id=endpoint_id, recipient=recipient, customer_key=customer_key)
    if outcome.status == "retry" and outcome.retry_in is not None and not self.request.is_eager:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="notifications.sweep", time_limit=300, soft_time_limit=270, ignore_result=True)
def sweep() -> int:
    """Beat, every minute: dispatch what was not, and queue every delivery that is due and not held."""
    dispatch()
    queues = pending_queues()
    for endpoint_id, recipient, customer_key in queues:
        deliver.delay(endpoint_id, recipient, customer_key)
    endpoints_disable_stale(now=timezone.now())
    return len(queues)


@shared_task(name="notifications.evaluate_alerts", time_limit=300, soft_time_limit=270, ignore_result=True)
def evaluate_alerts() -> int:
    """Beat, every minute: usage thresholds and spend alerts of customers whose subjects sent usage lately, and
    usage that nothing bills (from subjects no customer includes, of models no price row prices)."""
    recent = settings.ALERTS_RECENT_USAGE_MINUTES
    fired = alerts_evaluate(now=timezone.now(), recent_minutes=recent)
    fired += usage_unpriced_evaluate(now=timezone.now(), recent_minutes=recent)
    return fired + usage_surprises_evaluate(now=timezone.now())
