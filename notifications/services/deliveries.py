"""Sending deliveries: one queue per endpoint (or email recipient) and customer, in order of occurrence.

A queue's head is its pending delivery of the oldest event; nothing behind it is sent before it is delivered or
has failed for good, and nothing is sent while an older event of the customer is still undispatched. A sender
claims the head with a lease (``claimed_until``, an atomic UPDATE), sends, and records the attempt: so two workers
never send the same delivery at once, and a worker killed after claiming leaves a lease that runs out, after which
beat's sweep sends it again. Every attempt carries the same ``webhook-id`` (the event's uid), so a receiver that
got a delivery whose answer was lost can drop the repeat.

Retryable answers (no answer, a timeout, 5xx, 429) schedule the next attempt with exponential backoff
(``WEBHOOK_RETRY_BACKOFF_SECONDS`` × 2^(attempt−1), capped at ``WEBHOOK_RETRY_BACKOFF_MAX_SECONDS``) until
``WEBHOOK_MAX_ATTEMPTS``, then the delivery is *failed*. Any other 4xx fails it at once; 410 Gone also disables
the endpoint. An endpoint whose deliveries have failed without a success for ``WEBHOOK_DISABLE_AFTER_DAYS`` is
disabled (the dashboard warns).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from common.queue import enqueue_on_commit

from .. import transport
from ..models import Delivery, DeliveryAttempt, OutboxEvent, WebhookEndpoint
from .emails import email_send

RETRYABLE_STATUS = {408, 425, 429}
LEASE_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class Outcome:
    delivery_id: int | None
    status: str  # sent, retry, failed, waiting, idle, busy
    retry_in: float | None = None  # seconds until the next attempt (status "retry" or "waiting")


def backoff_seconds(attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based), Celery's formula without jitter."""
    return float(get_exponential_backoff_interval(
        factor=settings.WEBHOOK_RETRY_BACKOFF_SECONDS, retries=max(attempts - 1, 0),
        maximum=settings.WEBHOOK_RETRY_BACKOFF_MAX_SECONDS, full_jitter=False))


def queue_head(*, endpoint_id: int | None, recipient: str, customer_key: str) -> Delivery | None:
    queue = Delivery.objects.filter(endpoint_id=endpoint_id, customer_key=customer_key,
                                    status=Delivery.Status.PENDING)
    if endpoint_id is None:
        queue = queue.filter(channel=Delivery.Channel.EMAIL, recipient=recipient)
    return queue.select_related("event", "endpoint").order_by("event_id", "id").first()


def _claim(delivery: Delivery, now: dt.datetime, timeout: float) -> bool:
    lease = now + dt.timedelta(seconds=timeout + LEASE_MARGIN_SECONDS)
    return bool(Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.PENDING)
                .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
                .update(claimed_until=lease))


def signing_secrets(endpoint: WebhookEndpoint, now: dt.datetime) -> list[str]:
    """The current secret, and the previous one while its rotation grace period lasts."""
    current = [endpoint.secret]
    if endpoint.previous_secret and endpoint.previous_secret_expires_at and endpoint.previous_secret_expires_at > now:
        current.append(endpoint.previous_secret)
    return current


def webhook_request(event: OutboxEvent, endpoint: WebhookEndpoint, now: dt.datetime) -> tuple[dict[str, str], str]:
    """Headers and body of one attempt (Standard Webhooks)."""
    body = json.dumps(event.body(), separators=(",", ":"), sort_keys=True)
    headers = {
        "webhook-id": event.uid,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": transport.sign(secrets_=signing_secrets(endpoint, now), msg_id=event.uid, timestamp=now,
                                            body=body),
    }
    return headers, body


def _send_webhook(delivery: Delivery, now: dt.datetime) -> tuple[dict[str, str], str, transport.Response]:
    assert delivery.endpoint is not None
    headers, body = webhook_request(delivery.event, delivery.endpoint, now)
    response = transport.post(delivery.endpoint.url, headers, body, float(settings.WEBHOOK_TIMEOUT_SECONDS))
    return headers, body, response


@transaction.atomic
def _record(delivery_id: int, *, now: dt.datetime, headers: dict[str, str], body: str,
            response: transport.Response) -> Outcome:
    delivery = Delivery.objects.select_for_update(of=("self",)).select_related("endpoint").get(pk=delivery_id)
    delivery.attempts += 1
    safe_headers = {k: v for k, v in headers.items() if k != "webhook-signature"}
    DeliveryAttempt.objects.create(delivery=delivery, request_headers=safe_headers, request_body=body[:20000],
                                   response_code=response.status, response_body=response.body,
                                   error=response.error, duration_ms=response.duration_ms)
    delivery.last_response_code, delivery.last_error, delivery.claimed_until = response.status, response.error, None
    endpoint = delivery.endpoint
    code = response.status
    if code is not None and 200 <= code < 300:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = Delivery.Status.DELIVERED, now, None
        delivery.save()
        if endpoint is not None and endpoint.failing_since is not None:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=None)
        return Outcome(delivery.pk, "sent")
    retryable = code is None or code >= 500 or code in RETRYABLE_STATUS
    if retryable and delivery.attempts < settings.WEBHOOK_MAX_ATTEMPTS:
        wait = backoff_seconds(delivery.attempts)
        delivery.next_attempt_at = now + dt.timedelta(seconds=wait)
        delivery.save()
        _note_failure(endpoint, now, gone=False)
        return Outcome(delivery.pk, "retry", retry_in=wait)
    delivery.status, delivery.next_attempt_at = Delivery.Status.FAILED, None
    delivery.save()
    _note_failure(endpoint, now, gone=code == 410)
    return Outcome(delivery.pk, "failed")


def _note_failure(endpoint: WebhookEndpoint | None, now: dt.datetime, *, gone: bool) -> None:
    if endpoint is None:
        return
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    endpoint.failing_since = endpoint.failing_since or now
    reason = ""
    if gone:
        reason = "The receiver answered 410 Gone."
    elif now - endpoint.failing_since >= dt.timedelta(days=settings.WEBHOOK_DISABLE_AFTER_DAYS):
        reason = f"Deliveries failed for {settings.WEBHOOK_DISABLE_AFTER_DAYS} days without a success."
    if reason and endpoint.enabled:
        endpoint.enabled, endpoint.disabled_at, endpoint.disabled_reason = False, now, reason
    endpoint.save(update_fields=["failing_since", "enabled", "disabled_at", "disabled_reason", "updated_at"])


def delivery_send_next(*, endpoint_id: int | None, recipient: str = "", customer_key: str = "",
                       now: dt.datetime | None = None) -> Outcome:
    """Send the head of one queue if it is due and nobody else holds it; record the attempt."""
    now = now or timezone.now()
    head = queue_head(endpoint_id=endpoint_id, recipient=recipient, customer_key=customer_key)
    if head is None:
        return Outcome(None, "idle")
    if customer_key and OutboxEvent.objects.filter(customer_key=customer_key, dispatched_at__isnull=True,
                                                   test=False, pk__lt=head.event_id).exists():
        return Outcome(head.pk, "waiting")  # an older event of this customer is not fanned out yet
    if head.next_attempt_at is not None and head.next_attempt_at > now:
        return Outcome(head.pk, "waiting", retry_in=(head.next_attempt_at - now).total_seconds())
    if head.endpoint is not None and not head.endpoint.enabled and not head.event.test:
        return Outcome(head.pk, "idle")  # kept pending: sent if the endpoint is enabled again
    timeout = float(settings.WEBHOOK_TIMEOUT_SECONDS)
    if not _claim(head, now, timeout):
        return Outcome(head.pk, "busy")
    if head.channel == Delivery.Channel.EMAIL:
        headers, body, response = email_send(head.event, head.recipient)
    else:
        headers, body, response = _send_webhook(head, now)
    return _record(head.pk, now=now, headers=headers, body=body, response=response)


def delivery_drain(*, endpoint_id: int | None, recipient: str = "", customer_key: str = "",
                   now: dt.datetime | None = None, limit: int = 100) -> Outcome:
    """Send a queue's heads one after another until it is empty, waits, or an attempt must be retried."""
    outcome = Outcome(None, "idle")
    for _ in range(limit):
        outcome = delivery_send_next(endpoint_id=endpoint_id, recipient=recipient, customer_key=customer_key,
                                     now=now)
        if outcome.status not in ("sent", "failed"):
            break
    return outcome


@transaction.atomic
def delivery_resend(*, delivery: Delivery) -> Delivery:
    """A new delivery of the same event (same webhook-id) to the same endpoint or address, sent now."""
    copy = Delivery.objects.create(event=delivery.event, channel=delivery.channel, endpoint=delivery.endpoint,
                                   recipient=delivery.recipient, customer_key="", resend_of=delivery)
    enqueue_on_commit("notifications.deliver", endpoint_id=copy.endpoint_id, recipient=copy.recipient,
                      customer_key="")
    return copy
