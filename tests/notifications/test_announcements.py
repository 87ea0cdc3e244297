"""What lower apps announce becomes outbox events with documented payloads, in the announcing transaction."""

from __future__ import annotations

import pytest
from django.core import mail

from common.announcements import announce
from customers.services.subscriptions import subscription_cancel, subscription_change_plan, subscription_create
from invoicing.services.lifecycle import invoice_mark_paid, invoice_void
from notifications.event_types import EVENT_TYPES
from notifications.models import CustomerNotificationSettings, OutboxEvent
from notifications.services.deliveries import delivery_drain
from notifications.services.outbox import event_record, outbox_dispatch, pending_queues
from tests.builders import cancelled_in_december, customer, token_plan, utc

pytestmark = pytest.mark.django_db


def types() -> list[str]:
    return list(OutboxEvent.objects.order_by("id").values_list("type", flat=True))


def test_subscription_events_and_a_plan_change():
    buyer = customer("acme")
    first = subscription_create(customer=buyer, plan=token_plan(key="small"), start=utc(2026, 11, 1))
    new = subscription_change_plan(subscription=first, plan=token_plan(key="large"), when="now",
                                   now=utc(2026, 11, 10))
    subscription_cancel(subscription=new, when="now", now=utc(2026, 11, 20))
    assert types() == ["subscription.created", "subscription.changed", "subscription.canceled"]
    changed = OutboxEvent.objects.get(type="subscription.changed").data["subscription"]
    assert changed["plan"] == "large" and changed["previous"] == str(first.pk) and changed["customer"] == "acme"
    assert OutboxEvent.objects.get(type="subscription.canceled").data["subscription"]["cancel_at"] == (
        "2026-11-20T00:00:00Z")


def test_invoice_events_follow_the_invoice_lifecycle():
    note = cancelled_in_december()
    invoice = note.invoice
    invoice_mark_paid(invoice=invoice, label="test")
    other = OutboxEvent.objects.filter(type="invoice.issued").exclude(data__invoice__id=str(invoice.pk)).first()
    assert other is not None
    from invoicing.models import Invoice

    invoice_void(invoice=Invoice.objects.get(pk=int(other.data["invoice"]["id"])), label="test", reason="x")
    seen = types()
    assert {"invoice.issued", "credit_note.issued", "invoice.paid", "invoice.voided"} <= set(seen)
    paid = OutboxEvent.objects.get(type="invoice.paid").data["invoice"]
    assert paid["status"] == "paid" and paid["number"] == invoice.number and paid["customer"] == "kong-air"
    assert set(paid) == set(EVENT_TYPES["invoice.paid"][1]["properties"]["invoice"]["required"])


def test_credits_low_is_an_event_any_lower_app_can_announce():
    buyer = customer("acme")
    announce("credits.low", customer=buyer, data={"customer": "acme", "available": "4.00", "threshold": "5.00"})
    event = OutboxEvent.objects.get()
    assert event.type == "credits.low" and event.customer_key == "acme" and event.data["available"] == "4.00"


def test_threshold_emails_go_only_to_customers_who_want_them():
    buyer = customer("acme", email="ops@acme.example")
    data = {"customer": "acme", "feature": "ai-token", "threshold_percent": 80, "usage": "800", "limit": "1000",
            "period": {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}}
    event_record(event_type="entitlement.threshold", data=data, customer=buyer)
    outbox_dispatch()
    assert pending_queues() == []
    CustomerNotificationSettings.objects.create(customer=buyer, threshold_emails=True)
    event_record(event_type="entitlement.threshold", data=data, customer=buyer)
    outbox_dispatch()
    for endpoint_id, recipient, key in pending_queues():
        delivery_drain(endpoint_id=endpoint_id, recipient=recipient, customer_key=key)
    assert [m.subject for m in mail.outbox] == ["80% of your ai-token allowance used"]
    assert mail.outbox[0].to == ["ops@acme.example"] and "800 of 1000" in mail.outbox[0].body
