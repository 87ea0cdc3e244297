"""Credit top-ups: a purchase is a grant and its own invoice; the credits are available when it is paid (or at
once); a void voids them. Auto top-up: once per crossing, at most N a month, once under two concurrent closes."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from credits.models import AutoTopUp, AutoTopUpRun, CreditGrant, LedgerEntry
from credits.selectors import customer_balance
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice
from invoicing.selectors.invoices import invoice_json
from invoicing.services.close import close_cycles
from invoicing.services.lifecycle import ReissueError, invoice_mark_paid, invoice_reissue, invoice_void
from invoicing.services.top_ups import auto_top_up, credits_top_up
from tests.builders import cent_plan, customer, grant, ingest, kong_air, tokens, utc
from tests.threads import run_in_threads

pytestmark = pytest.mark.django_db
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)
AFTER_NOV = DEC + dt.timedelta(hours=2)


def test_a_top_up_is_available_when_its_invoice_is_paid():
    acme = customer("acme")
    bought, invoice = credits_top_up(customer=acme, amount=50_000, now=NOV)
    assert (invoice.status, invoice.total, invoice.subscription_id, invoice.number is not None) == (
        "issued", 50_000, None, True)
    line = invoice.lines.get()
    assert (line.kind, line.amount, line.grant_id) == ("credit_top_up", 50_000, bought.pk)
    assert invoice_json(invoice)["lines"][0]["grant"] == str(bought.pk)
    assert customer_balance(acme.pk, NOV + dt.timedelta(days=1)) == 0  # not paid yet
    invoice_mark_paid(invoice=invoice, paid_at=NOV + dt.timedelta(days=2))
    assert customer_balance(acme.pk, NOV + dt.timedelta(days=3)) == 50_000
    bought.refresh_from_db()
    assert bought.purchase_invoice_id == invoice.pk


def test_available_immediately_and_a_void_takes_the_credits_back():
    acme = customer("acme")
    bought, invoice = credits_top_up(customer=acme, amount=2_000, available_immediately=True, now=NOV)
    assert customer_balance(acme.pk, NOV) == 2_000
    invoice_void(invoice=invoice, reason="chargeback")
    assert customer_balance(acme.pk, NOV + dt.timedelta(days=1)) == 0
    assert list(LedgerEntry.objects.order_by("pk").values_list("kind", "amount")) == [("grant", 2000),
                                                                                      ("void", -2000)]
    with pytest.raises(ReissueError, match="bought credits"):
        invoice_reissue(invoice=invoice)


def test_a_void_before_payment_means_the_credits_never_come():
    acme = customer("acme")
    bought, invoice = credits_top_up(customer=acme, amount=2_000, now=NOV)
    invoice_void(invoice=invoice)
    assert not LedgerEntry.objects.exists()
    bought.refresh_from_db()
    assert bought.voided_at is not None


def auto(customer_, **fields):
    defaults = {"threshold": 1000, "amount": 5000, "max_per_period": 2}
    return AutoTopUp.objects.create(customer=customer_, **{**defaults, **fields})


def test_auto_top_up_once_per_crossing_and_at_most_n_a_month():
    acme = customer("acme")
    auto(acme)
    grant(acme, 1500, effective_at=NOV)
    assert auto_top_up(customer_id=acme.pk, now=NOV + dt.timedelta(days=1)) is None  # above the threshold
    grant_row = grant(acme, 1, effective_at=NOV)
    LedgerEntry.objects.create(customer=acme, grant=grant_row, kind="adjustment", amount=-1, at=NOV)
    bought = auto_top_up(customer_id=acme.pk, now=NOV + dt.timedelta(days=1))
    assert bought is None  # still 1,500
    # the customer spends: 600 burnt → 900, below the 1,000 threshold
    first = CreditGrant.objects.order_by("pk").first()
    assert first is not None
    LedgerEntry.objects.create(customer=acme, grant=first, kind="burn", amount=-600, at=NOV, invoice_id=1)
    bought = auto_top_up(customer_id=acme.pk, now=NOV + dt.timedelta(days=2))
    assert bought is not None
    assert auto_top_up(customer_id=acme.pk, now=NOV + dt.timedelta(days=3)) is None  # same crossing: unpaid
    invoice_mark_paid(invoice=bought[1])
    assert customer_balance(acme.pk, NOV + dt.timedelta(days=4)) == 5900
    LedgerEntry.objects.create(customer=acme, grant=bought[0], kind="burn", amount=-5000, at=NOV, invoice_id=2)
    second = auto_top_up(customer_id=acme.pk, now=NOV + dt.timedelta(days=5))  # a new crossing
    assert second is not None
    invoice_mark_paid(invoice=second[1])
    LedgerEntry.objects.create(customer=acme, grant=second[0], kind="burn", amount=-5000, at=NOV, invoice_id=3)
    assert auto_top_up(customer_id=acme.pk, now=NOV + dt.timedelta(days=6)) is None  # 2 a month at most
    assert auto_top_up(customer_id=acme.pk, now=DEC + dt.timedelta(days=1)) is not None  # a new month
    assert list(AutoTopUpRun.objects.order_by("pk").values_list("period", "sequence")) == [
        ("2026-11", 1), ("2026-11", 2), ("2026-12", 1)]


def test_the_close_that_crosses_the_threshold_buys_the_top_up():
    air = kong_air()
    subscription_create(customer=air, plan=cent_plan(), start=NOV)
    ingest([tokens(600, utc(2026, 11, 5))])
    grant(air, 1200, effective_at=NOV)
    auto(air, available_immediately=True)
    close_cycles(now=AFTER_NOV)
    usage_invoice = Invoice.objects.get(cycle=1)
    assert usage_invoice.total == 0
    top_up = Invoice.objects.get(subscription__isnull=True)
    assert (top_up.total, top_up.lines.get().kind) == (5000, "credit_top_up")
    assert customer_balance(air.pk, AFTER_NOV) == 600 + 5000


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_closes_crossing_the_threshold_buy_once():
    """Two subscriptions of one customer close at once in two runs: each burns 300 of 1,200 credits; the first
    crossing the 1,000 threshold buys the top-up, the other finds it (unpaid) and buys nothing."""
    air = kong_air()
    subscription_create(customer=air, plan=cent_plan(), start=NOV)
    subscription_create(customer=air, plan=cent_plan("cents-too"), start=NOV)
    ingest([tokens(300, utc(2026, 11, 5))])  # billed on both subscriptions: 300 each
    grant(air, 1200, effective_at=NOV)
    auto(air, max_per_period=5)
    barrier = threading.Barrier(2)

    def close() -> None:
        barrier.wait()
        close_cycles(now=AFTER_NOV, chunk_size=1)

    assert not run_in_threads(close, 2)
    close_cycles(now=AFTER_NOV)
    assert Invoice.objects.filter(cycle=1).count() == 2
    assert AutoTopUpRun.objects.count() == 1
    assert Invoice.objects.filter(subscription__isnull=True).count() == 1
    assert LedgerEntry.objects.filter(kind="burn").count() == 2
