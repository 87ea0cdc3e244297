"""Credit top-ups: a purchase is a grant and its own invoice; the credits are available when it is paid (or at
once); a void voids them. Auto top-up: once per crossing, at most N a month, once under two concurrent closes."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from credits.models import AutoTopUp, AutoTopUpRun, CreditGrant, LedgerEntry
from credits.selectors import customer_balance
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice, InvoiceEvent, InvoiceLine
from invoicing.selectors.documents import invoice_document
from invoicing.selectors.invoices import invoice_json
from invoicing.selectors.reconcile import reconcile
from invoicing.services.close import close_cycles
from invoicing.services.lifecycle import ReissueError, invoice_mark_paid, invoice_reissue, invoice_void
from invoicing.services.lines import billed_items
from invoicing.services.top_ups import auto_top_up, credits_top_up
from notifications.models import OutboxEvent
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


def november_closed_with_a_top_up(**auto_fields):
    """Kong Air on the cent plan from November: 600 tokens used, 1,200 credits, an auto top-up (``auto_fields``
    over ``auto``'s), then the close after November. Returns the customer and its subscription."""
    air = kong_air()
    subscription = subscription_create(customer=air, plan=cent_plan(), start=NOV)
    ingest([tokens(600, utc(2026, 11, 5))])
    grant(air, 1200, effective_at=NOV)
    auto(air, **auto_fields)
    close_cycles(now=AFTER_NOV)
    return air, subscription


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


def test_the_close_that_crosses_the_threshold_buys_the_top_up_on_its_own_invoice():
    """An auto top-up fired within a close is a "Credit top-up" line of the invoice that close issues: after the
    usage and the credits applied (which never pay the purchase), in its subtotal and total."""
    air, _ = november_closed_with_a_top_up(available_immediately=True)
    assert not Invoice.objects.filter(subscription__isnull=True).exists()  # no invoice of its own
    invoice = Invoice.objects.get(cycle=1)
    lines = list(invoice.lines.order_by("position").values_list("kind", "amount", "subscription_id"))
    assert lines == [("usage", 600, invoice.subscription_id), ("credits_applied", -600, invoice.subscription_id),
                     ("credit_top_up", 5000, None)]
    assert (invoice.status, invoice.subtotal, invoice.total) == ("issued", 5600, 5000)
    bought = CreditGrant.objects.get(source="purchased")
    assert bought.purchase_invoice_id == invoice.pk
    assert invoice.lines.get(kind="credit_top_up").grant_id == bought.pk
    assert customer_balance(air.pk, AFTER_NOV) == 600 + 5000
    as_json = invoice_json(invoice)
    assert [(line["kind"], line["amount"], line.get("grant")) for line in as_json["lines"]][2] == (
        "credit_top_up", "50.00", str(bought.pk))
    assert (as_json["subtotal"], as_json["total"]) == ("56.00", "50.00")
    document = invoice_document(invoice)
    assert document.lines[-1].name.startswith("Auto top-up: 50.00 USD of prepaid credits")
    assert [label for label, _ in document.totals] == ["Subtotal", "Prepaid credits applied", "Total due"]
    assert ["56.00" in document.totals[0][1], "6.00" in document.totals[1][1], "50.00" in document.totals[2][1]] == [
        True, True, True]
    issued = OutboxEvent.objects.get(type="invoice.issued", data__invoice__id=str(invoice.pk))
    assert issued.data["invoice"]["total"] == "50.00"  # announced with its top-up line
    assert InvoiceEvent.objects.filter(invoice=invoice, action="top-up").count() == 1


def test_a_top_up_on_a_cycle_invoice_is_available_when_that_invoice_is_paid():
    air, _ = november_closed_with_a_top_up()
    invoice = Invoice.objects.get(cycle=1)
    assert invoice.total == 5000
    assert customer_balance(air.pk, AFTER_NOV) == 600  # the top-up waits for the payment
    assert auto_top_up(customer_id=air.pk, now=AFTER_NOV + dt.timedelta(minutes=5)) is None  # same crossing
    invoice_mark_paid(invoice=invoice, paid_at=AFTER_NOV + dt.timedelta(days=1))
    assert customer_balance(air.pk, AFTER_NOV + dt.timedelta(days=2)) == 5600


def test_voiding_the_cycle_invoice_returns_its_burns_and_voids_the_top_up():
    air, _ = november_closed_with_a_top_up(available_immediately=True)
    invoice = Invoice.objects.get(cycle=1)
    invoice_void(invoice=invoice, reason="wrong")
    bought = CreditGrant.objects.get(source="purchased")
    assert bought.voided_at is not None
    assert customer_balance(air.pk, AFTER_NOV + dt.timedelta(days=1)) == 1200  # the burn back, the top-up gone
    reissued = invoice_reissue(invoice=invoice, now=AFTER_NOV + dt.timedelta(days=1))
    # the reissue bills the usage again (the re-rating rule never counted the top-up line as billed)
    assert list(reissued.lines.order_by("position").values_list("kind", "amount")) == [
        ("usage", 600), ("credits_applied", -600)]


def test_the_top_up_line_is_not_billed_usage_for_the_re_rating_rule():
    air, subscription = november_closed_with_a_top_up(available_immediately=True, max_per_period=1)
    billed, _ = billed_items([subscription], starting_after=None)
    assert sum(entry.amount for entry in billed.values()) == 600
    ingest([tokens(100, utc(2026, 11, 20))], now=AFTER_NOV + dt.timedelta(days=1))  # late usage
    close_cycles(now=utc(2027, 1, 1, 2))
    late = Invoice.objects.get(cycle=2)
    assert [(line.kind, line.amount) for line in late.lines.filter(period_start__lt=DEC)] == [("late_usage", 100)]
    assert all(row.difference == 0 for row in reconcile(now=utc(2027, 1, 1, 3)))


def test_a_close_with_nothing_to_bill_buys_the_top_up_on_its_own_invoice():
    air = kong_air()
    subscription_create(customer=air, plan=cent_plan(), start=NOV)  # no usage: nothing to bill
    grant(air, 500, effective_at=NOV)
    auto(air)
    close_cycles(now=AFTER_NOV)
    assert not Invoice.objects.filter(cycle=1).exists()
    top_up = Invoice.objects.get(subscription__isnull=True)
    assert (top_up.total, top_up.lines.get().kind) == (5000, "credit_top_up")
    assert CreditGrant.objects.get(source="purchased").purchase_invoice_id == top_up.pk


def test_an_invoice_in_another_currency_does_not_carry_the_top_up():
    acme = customer("acme", currency="EUR")
    credits = grant(acme, 1200, effective_at=NOV)
    auto(acme, available_immediately=True)
    invoice = Invoice.objects.create(customer=acme, currency="USD", period_start=NOV, period_end=NOV, subtotal=0,
                                     total=0)
    assert auto_top_up(customer_id=acme.pk, now=AFTER_NOV, invoice=invoice) is None  # above the threshold
    LedgerEntry.objects.create(customer=acme, grant=credits, kind="burn", amount=-700, at=NOV, invoice_id=invoice.pk)
    bought = auto_top_up(customer_id=acme.pk, now=AFTER_NOV, invoice=invoice)
    assert bought is not None and bought[1].pk != invoice.pk and bought[1].currency == "EUR"
    invoice.refresh_from_db()
    assert (invoice.total, invoice.lines.count()) == (0, 0)


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
    assert LedgerEntry.objects.filter(kind="burn").count() == 2
    # the top-up is a line of the invoice of the close that crossed the threshold, not an invoice of its own
    assert not Invoice.objects.filter(subscription__isnull=True).exists()
    top_up = InvoiceLine.objects.get(kind="credit_top_up")
    carrier = top_up.invoice
    assert carrier.cycle == 1 and carrier.subscription_id is not None
    bought = AutoTopUpRun.objects.get().grant
    assert (top_up.grant_id, bought.purchase_invoice_id) == (bought.pk, carrier.pk)
    assert carrier.total == carrier.subtotal - 300 == 5000
    other = Invoice.objects.filter(cycle=1).exclude(pk=carrier.pk).get()
    assert (other.total, other.lines.filter(kind="credit_top_up").count()) == (0, 0)


def test_the_admin_takes_auto_top_up_amounts_in_the_customers_currency(admin_client):
    acme = customer("acme")
    response = admin_client.post("/admin/credits/autotopup/add/", {
        "customer": acme.pk, "enabled": "on", "threshold": "10.00", "amount": "50.50", "max_per_period": "3",
        "priority": "100"})
    assert response.status_code == 302
    config = AutoTopUp.objects.get(customer=acme)
    assert (config.threshold, config.amount) == (1000, 5050)
    listing = admin_client.get("/admin/credits/autotopup/").content.decode()
    assert "10.00 USD" in listing and "50.50 USD" in listing
    form = admin_client.get(f"/admin/credits/autotopup/{config.pk}/change/").context["adminform"].form
    assert (str(form.initial["threshold"]), str(form.initial["amount"])) == ("10.00", "50.50")


@pytest.mark.parametrize(("field", "value"), [
    ("amount", "0"), ("amount", "-5"), ("threshold", "-1"), ("amount", "1.005"), ("amount", "ten"),
    ("threshold", "1\x00"), ("amount", "1e400"), ("amount", "9" * 30), ("amount", "NaN")])
def test_a_bad_auto_top_up_amount_is_a_form_error(admin_client, field, value):
    acme = customer("acme")
    data = {"customer": acme.pk, "enabled": "on", "threshold": "10.00", "amount": "50.00", "max_per_period": "3",
            "priority": "100", field: value}
    response = admin_client.post("/admin/credits/autotopup/add/", data)
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert not AutoTopUp.objects.exists()
