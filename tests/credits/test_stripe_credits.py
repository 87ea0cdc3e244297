"""Credits applied appear on the Stripe invoice as one negative invoice item per grant, with our line id and the
grant in metadata and a deterministic idempotency key, so Stripe's total equals ours."""

from __future__ import annotations

import datetime as dt

import pytest

from credits.models import AutoTopUp
from invoicing.models import Invoice
from invoicing.services.close import close_cycles
from tests.builders import grant, subscribe_with_november_usage, the_invoice, utc
from tests.fakes.stripe_fixtures import ITEMS

pytestmark = pytest.mark.slow
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)


@pytest.mark.django_db(transaction=True)
def test_credits_are_negative_items_on_the_stripe_invoice(fake):
    customer = subscribe_with_november_usage()
    free = grant(customer, 1500, priority=1, effective_at=DEC, description="$15 free")  # December's fee only
    close_cycles(now=DEC + dt.timedelta(hours=2))
    invoice = the_invoice(1)
    invoice.refresh_from_db()
    assert invoice.sync_status == "synced", invoice.sync_error
    credits_line = invoice.lines.get(kind="credits_applied")
    assert (credits_line.amount, credits_line.grant_id) == (-1500, free.pk)
    items = fake.items_of(invoice.stripe_invoice_id)
    credit_items = [item for item in items if item["amount"] < 0]
    assert [(i["amount"], i["metadata"]["invoice_line_id"], i["metadata"]["credit_grant"]) for i in credit_items] == [
        (-1500, str(credits_line.pk), str(free.pk))]
    assert f"invoice-line-{credits_line.pk}" in "".join(
        str(r.idempotency_key) for r in fake.requests_to("POST", ITEMS))
    assert fake.invoice(invoice.stripe_invoice_id)["total"] == invoice.total == invoice.subtotal - 1500


@pytest.mark.django_db(transaction=True)
def test_an_auto_top_up_bought_at_the_close_is_an_item_of_that_invoice_in_stripe(fake):
    customer = subscribe_with_november_usage()
    grant(customer, 1500, priority=1, effective_at=DEC, description="$15 free")
    AutoTopUp.objects.create(customer=customer, threshold=1000, amount=5000, available_immediately=True)
    close_cycles(now=DEC + dt.timedelta(hours=2))
    invoice = the_invoice(1)
    invoice.refresh_from_db()
    assert invoice.sync_status == "synced", invoice.sync_error
    top_up = invoice.lines.get(kind="credit_top_up")
    items = {item["metadata"]["invoice_line_id"]: item for item in fake.items_of(invoice.stripe_invoice_id)}
    item = items[str(top_up.pk)]
    assert (item["amount"], item["metadata"]["credit_grant"]) == (5000, str(top_up.grant_id))
    assert fake.invoice(invoice.stripe_invoice_id)["total"] == invoice.total == invoice.subtotal - 1500
    assert not Invoice.objects.filter(subscription__isnull=True).exists()
