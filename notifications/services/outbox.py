"""The transactional outbox: events recorded in the transaction that causes them, fanned out to deliveries after
the commit.

- :func:`on_announcement` is registered with :mod:`common.announcements` (``NotificationsConfig.ready``): lower apps
  announce inside their transaction, and it writes one :class:`OutboxEvent` row there. A rolled-back change leaves
  no row; a committed one always has its row, whatever happens to the process after the commit.
- After the commit, ``notifications.dispatch`` (queued once per transaction) runs :func:`outbox_dispatch`: each new
  event gets one delivery per enabled endpoint that wants it (unique per event and endpoint) and its emails, then
  the sender is queued per endpoint and customer. Beat runs the dispatch every minute too, so an event whose
  dispatch message was lost (broker down, worker killed) is dispatched then.
"""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from catalog.money import format_major
from common.queue import enqueue, enqueue_on_commit
from common.time import format_rfc3339
from customers.models import Customer, Subscription
from invoicing.models import CreditNote, Invoice

from ..models import CustomerNotificationSettings, Delivery, OutboxEvent, WebhookEndpoint

DISPATCH_BATCH = 500
EMAILED = {"invoice.issued", "credit_note.issued", "entitlement.threshold"}


def _stamp(value: dt.datetime | None) -> str | None:
    return format_rfc3339(value) if value else None


def invoice_data(invoice: Invoice) -> dict[str, Any]:
    return {"invoice": {
        "id": str(invoice.pk), "number": invoice.number, "status": invoice.status,
        "customer": invoice.customer.key, "currency": invoice.currency,
        "total": format_major(invoice.total, invoice.currency),
        "period_start": _stamp(invoice.period_start), "period_end": _stamp(invoice.period_end),
        "issued_at": _stamp(invoice.issued_at), "due_at": _stamp(invoice.due_at),
    }}


def credit_note_data(note: CreditNote) -> dict[str, Any]:
    return {"credit_note": {
        "id": str(note.pk), "number": note.number, "status": note.status,
        "invoice": note.invoice.number if note.invoice_id else None, "customer": note.customer.key,
        "currency": note.currency, "total": format_major(note.total, note.currency), "reason": note.reason,
        "issued_at": _stamp(note.issued_at),
    }}


def subscription_data(subscription: Subscription) -> dict[str, Any]:
    return {"subscription": {
        "id": str(subscription.pk), "customer": subscription.customer.key, "plan": subscription.plan.key,
        "plan_version": subscription.plan.version, "start": _stamp(subscription.start),
        "cancel_at": _stamp(subscription.cancel_at),
        "previous": str(subscription.previous_id) if subscription.previous_id else None,
    }}


def event_record(*, event_type: str, data: dict[str, Any], customer: Customer | None = None,
                 occurred_at: dt.datetime | None = None, test: bool = False) -> OutboxEvent:
    """Write one outbox row inside the caller's transaction and dispatch it after the commit."""
    event = OutboxEvent.objects.create(
        uid=f"msg_{secrets.token_hex(16)}", type=event_type, customer=customer,
        customer_key=customer.key if customer is not None else "", data=data,
        occurred_at=occurred_at or timezone.now(), test=test)
    _dispatch_after_commit()
    return event


def _dispatch_after_commit() -> None:
    """Queue one dispatch per transaction, however many events it records (on_commit callbacks of a rolled-back
    savepoint are dropped with it, so a later event queues it again)."""
    if connection.in_atomic_block and any(getattr(item[1], "notifications_dispatch", False)
                                          for item in connection.run_on_commit):
        return

    def dispatch() -> None:
        dispatch.notifications_dispatch = False  # type: ignore[attr-defined]
        enqueue("notifications.dispatch")

    dispatch.notifications_dispatch = True  # type: ignore[attr-defined]
    transaction.on_commit(dispatch)


def on_announcement(event_type: str, objects: dict[str, Any]) -> None:
    """The :mod:`common.announcements` listener: an outbox row for each announced event."""
    invoice, note, subscription = objects.get("invoice"), objects.get("credit_note"), objects.get("subscription")
    if event_type == "credit_note.issued" and note is not None:
        event_record(event_type=event_type, data=credit_note_data(note), customer=note.customer)
    elif event_type.startswith("invoice.") and invoice is not None:
        event_record(event_type=event_type, data=invoice_data(invoice), customer=invoice.customer)
    elif event_type.startswith("subscription.") and subscription is not None:
        event_record(event_type=event_type, data=subscription_data(subscription), customer=subscription.customer)
    elif "data" in objects and not event_type.startswith("usage."):  # credits.low: customer=…, data={…}
        event_record(event_type=event_type, data=objects["data"], customer=objects.get("customer"))


def _email_recipient(event: OutboxEvent, preferences: dict[int, CustomerNotificationSettings]) -> str:
    """The customer's billing address if this event is emailed to them, else ''."""
    if event.type not in EMAILED or event.customer is None:
        return ""
    prefs = preferences.get(event.customer.pk) or CustomerNotificationSettings(customer=event.customer)
    wanted = prefs.threshold_emails if event.type == "entitlement.threshold" else prefs.invoice_emails
    return (prefs.billing_email or event.customer.email) if wanted else ""


def outbox_dispatch(*, limit: int = DISPATCH_BATCH) -> list[tuple[int | None, str, str]]:
    """Fan new outbox events out to deliveries (in one transaction, events locked, skipping those another
    dispatcher holds). Returns the queues that got work: ``(endpoint id or None, recipient, customer key)``."""
    with transaction.atomic():
        events = list(OutboxEvent.objects.select_for_update(skip_locked=True, of=("self",))
                      .select_related("customer").filter(dispatched_at__isnull=True, test=False)
                      .order_by("id")[:limit])
        if not events:
            return []
        endpoints = list(WebhookEndpoint.objects.filter(enabled=True))
        customer_ids = {event.customer.pk for event in events if event.customer is not None}
        preferences = {p.customer_id: p for p in CustomerNotificationSettings.objects.filter(
            customer_id__in=customer_ids)}
        rows: list[Delivery] = []
        queues: set[tuple[int | None, str, str]] = set()
        for event in events:
            for endpoint in endpoints:
                if endpoint.wants(event.type):
                    rows.append(Delivery(event=event, endpoint=endpoint, customer_key=event.customer_key))
                    queues.add((endpoint.pk, "", event.customer_key))
            recipient = _email_recipient(event, preferences)
            if recipient:
                rows.append(Delivery(event=event, channel=Delivery.Channel.EMAIL, recipient=recipient,
                                     customer_key=event.customer_key))
                queues.add((None, recipient, event.customer_key))
        Delivery.objects.bulk_create(rows, ignore_conflicts=True)
        OutboxEvent.objects.filter(pk__in=[event.pk for event in events]).update(dispatched_at=timezone.now())
        for endpoint_id, recipient, customer_key in sorted(queues, key=str):
            enqueue_on_commit("notifications.deliver", endpoint_id=endpoint_id, recipient=recipient,
                              customer_key=customer_key)
    return sorted(queues, key=str)


def pending_queues(*, now: dt.datetime | None = None) -> list[tuple[int | None, str, str]]:
    """Queues with a pending delivery due now and not held by a sender (beat re-queues them: lost messages, killed
    workers, retries whose message was dropped)."""
    now = now or timezone.now()
    rows = (Delivery.objects.filter(status=Delivery.Status.PENDING)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .values_list("endpoint_id", "recipient", "customer_key").distinct())
    return sorted(set(rows), key=str)
