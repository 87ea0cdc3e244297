"""Billing scenarios shared by the invoicing tests: closes, and November's invoice as the Stripe tests push it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from catalog.services.plans import RateCardSpec
from customers.models import Customer
from customers.services.subscriptions import subscription_cancel, subscription_create
from invoicing.models import CreditNote, Invoice
from invoicing.services.close import close_cycles
from tests.builders.catalog import D, ai_token_feature, platform_fee, token_plan
from tests.builders.customers import kong_air
from tests.builders.events import llm_event
from tests.builders.moments import iso, utc
from tests.builders.usage import ingest

__all__ = [
    "AFTER_NOV", "STRIPE_BILLING_DETAILS", "monthly_close", "the_invoice", "cancelled_in_december", "seed_plan",
    "subscribe_with_november_usage", "november_invoice",
]

NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)
AFTER_NOV = DEC + dt.timedelta(hours=2)
# What Stripe needs to send Kong Air an invoice.
STRIPE_BILLING_DETAILS: dict[str, Any] = {
    "email": "billing@kong-air.example", "address_line1": "1 Runway Rd", "city": "Berlin", "postal_code": "10115",
    "country": "DE", "collection_method": "send_invoice", "days_until_due": 30,
}


def monthly_close(*months: dt.datetime) -> None:
    """Run the close two hours into each month given."""
    for month in months:
        close_cycles(now=month + dt.timedelta(hours=2))


def the_invoice(cycle: int = 1) -> Invoice:
    """The one non-void invoice of ``cycle``."""
    return Invoice.objects.exclude(status="void").select_related("customer").get(cycle=cycle)


def cancelled_in_december(day: int = 16) -> CreditNote:
    """Kong Air on a plan with a 30.00 monthly platform fee in advance from November 1, closed through December's
    fee (cycle 0: November's fee, cycle 1: December's), then cancelled on ``day`` December and closed: the unused
    part of December's fee comes back as a credit note against cycle 1, returned."""
    subscription = subscription_create(customer=kong_air(), plan=token_plan(extra=[platform_fee("30.00")]), start=NOV)
    monthly_close(NOV - dt.timedelta(hours=2), DEC)
    subscription_cancel(subscription=subscription, when="now", now=utc(2026, 12, day))
    close_cycles(now=utc(2026, 12, day, 2))
    return CreditNote.objects.get()


def seed_plan():
    """ai-token usage, ai-token-out usage (nobody uses it: a zero-amount line) and a platform fee in advance."""
    ai_token_feature("ai-token-out", "response")
    out = RateCardSpec(key="ai-token-out", feature="ai-token-out", price_type="unit", unit_amount=D("0.00001"))
    return token_plan(extra=[out, platform_fee()])


def subscribe_with_november_usage() -> Customer:
    customer = kong_air(**STRIPE_BILLING_DETAILS)
    subscription_create(customer=customer, plan=seed_plan(), start=NOV)
    ingest([llm_event(tokens=1_234_567, time=iso(utc(2026, 11, 5)))])
    return customer


def november_invoice() -> Invoice:
    """Closes November (cycle 0: the opening fee, cycle 1: usage + zero line + December's fee), returns cycle 1.
    In a plain ``db`` test the push queued on commit never runs: the tests call the push themselves."""
    subscribe_with_november_usage()
    close_cycles(now=AFTER_NOV)
    invoice = the_invoice(1)
    assert invoice.sync_status == "syncing"
    assert [(line.rate_card_key, line.amount) for line in invoice.lines.all()] == [
        ("ai-token", 2469),
        ("ai-token-out", 0),
        ("platform", 4900),
    ]
    return invoice
