"""Cycle close: golden invoices, proration, grace period, late usage, idempotency, crashes, numbering."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import connection

from catalog.services.plans import RateCardSpec, TierSpec
from customers.services.customers import customer_create
from customers.services.subscriptions import subscription_cancel, subscription_change_plan, subscription_create
from invoicing.models import CreditNote, CycleClose, Invoice, InvoiceLine
from invoicing.services import close as close_module
from invoicing.services import lifecycle as lifecycle_module
from invoicing.services.close import close_cycles
from invoicing.services.lifecycle import invoice_issue, invoice_reissue, invoice_void
from tests.builders import (
    D,
    ai_token_feature,
    bearer,
    graduated_out,
    ingest,
    kong_air,
    platform_fee,
    the_invoice,
    token_plan,
    tokens,
    utc,
)
from tests.threads import run_in_threads

pytestmark = pytest.mark.django_db
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)
AFTER_NOV = DEC + dt.timedelta(hours=2)


@pytest.fixture(autouse=True)
def zero_total_invoices_issued(settings):
    """These tests bill a few tokens at $0.00002 (sub-cent amounts): issue such invoices so their lines can be
    read. The default, "nothing to bill" for a cycle without a non-zero line, is tested in test_rerating.py."""
    settings.INVOICE_ISSUE_ZERO_TOTAL = True


def lines_of(invoice):
    return [(line.kind, line.rate_card_key, line.quantity, line.amount) for line in invoice.lines.all()]


@pytest.mark.parametrize(
    "spec, quantity, expected_lines",
    [
        (
            RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=D("0.000003")),
            1_234_567,
            [("usage", "ai-token", D(1_234_567), 370)],
        ),  # 3.703701 → 3.70
        (
            RateCardSpec(
                key="ai-token",
                feature="ai-token",
                price_type="graduated",
                tiers=[TierSpec(D(1000), D("0.01")), TierSpec(D(5000), D("0.005"), D(1)), TierSpec(None, D("0.001"))],
            ),
            6000,
            [("usage", "ai-token", D(6000), 10 * 100 + 20 * 100 + 100 + 100)],
        ),  # 10 + (20 + 1) + 1 = 32.00
        (
            RateCardSpec(
                key="ai-token",
                feature="ai-token",
                price_type="volume",
                tiers=[TierSpec(D(1000), D("0.01")), TierSpec(None, D("0.005"), D(2))],
            ),
            3000,
            [("usage", "ai-token", D(3000), 1700)],
        ),  # 3000 × 0.005 + 2 = 17.00
        (
            RateCardSpec(
                key="ai-token", feature="ai-token", price_type="package", amount=D("5.00"), quantity_per_package=D(1000)
            ),
            2001,
            [("usage", "ai-token", D(2001), 1500)],
        ),  # 3 started packages
        (
            RateCardSpec(
                key="ai-token",
                feature="ai-token",
                price_type="unit",
                unit_amount=D("0.01"),
                free_quantity=D(500),
                minimum_spend=D("20.00"),
            ),
            1500,
            [("usage", "ai-token", D(1000), 1000), ("minimum_spend", "ai-token", D(1), 1000)],
        ),
        (
            RateCardSpec(
                key="ai-token", feature="ai-token", price_type="unit", unit_amount=D("0.01"), maximum_spend=D("5.00")
            ),
            1500,
            [("usage", "ai-token", D(1500), 1500), ("discount", "ai-token", D(1), -1000)],
        ),
    ],
)
def test_golden_invoices_for_each_price_model(spec, quantity, expected_lines):
    from catalog.services.plans import plan_create, plan_publish

    ai_token_feature()
    plan = plan_publish(plan=plan_create(key="p", name="P", currency="USD", rate_cards=[spec]))
    subscription_create(customer=kong_air(), plan=plan, start=NOV)
    ingest([tokens(quantity, utc(2026, 11, 10))])
    report = close_cycles(now=AFTER_NOV)
    invoice = the_invoice()
    assert lines_of(invoice) == expected_lines
    assert invoice.total == sum(line[3] for line in expected_lines)
    assert (invoice.status, invoice.number) == ("issued", "INV-2026-000001")
    assert (invoice.period_start, invoice.period_end) == (NOV, DEC)
    assert report.invoices == 1


def test_seed_plan_invoice_with_descriptions_and_tier_breakdown():
    plan = token_plan(extra=[platform_fee(), graduated_out()])
    subscription_create(customer=kong_air(), plan=plan, start=NOV)
    ingest([tokens(1_234_567, utc(2026, 11, 5)), tokens(1_501_000, utc(2026, 11, 6), kind="response")])
    close_cycles(now=AFTER_NOV)
    opening, first = the_invoice(0), the_invoice(1)
    assert lines_of(opening) == [("flat_fee", "platform", D(1), 4900)]
    rows = {line.rate_card_key + "/" + line.kind: line for line in first.lines.all()}
    assert rows["ai-token/usage"].description == "ai-token — 1,234,567 tokens × $0.00002 (Nov 1 – Dec 1)"
    assert rows["ai-token/usage"].amount == 2469  # 24.69134
    out = rows["ai-token-out/usage"]
    assert out.quantity == D(1_500_000) and out.amount == 1000 + 400 + 200  # 10 + 4 + 2 flat
    assert [t["tier"] for t in out.tiers] == [1, 2]
    assert rows["platform/flat_fee"].period_start == DEC  # next period, in advance
    assert first.total == 2469 + 1600 + 4900


def test_in_advance_fee_prorated_for_a_mid_period_start_and_a_cancellation(settings):
    plan = token_plan(extra=[platform_fee("31.00")])
    subscription = subscription_create(
        customer=kong_air(), plan=plan, start=utc(2026, 10, 16), billing_anchor=utc(2026, 10, 1)
    )
    close_cycles(now=utc(2026, 10, 16, 0, 1))
    assert lines_of(the_invoice(0)) == [("flat_fee", "platform", round(D(16) / D(31), 15), 1600)]
    close_cycles(now=utc(2026, 11, 1, 2))
    assert [line[:2] + (line[3],) for line in lines_of(the_invoice(1))] == [
        ("usage", "ai-token", 0),
        ("flat_fee", "platform", 3100),
    ]
    subscription_cancel(subscription=subscription, when="now", now=utc(2026, 11, 11))  # 20 of 30 days unused
    settings.INVOICE_ISSUE_ZERO_TOTAL = False
    close_cycles(now=utc(2026, 11, 11, 2))
    # The final cycle owes a credit larger than it bills (no usage): no negative invoice, a credit note against
    # the invoice that billed November's fee instead.
    assert not Invoice.objects.filter(cycle=2).exists()
    assert CycleClose.objects.get(cycle=2).state == "empty"
    note = CreditNote.objects.get()
    assert (note.invoice, note.total, note.status) == (the_invoice(1), 2067, "issued")  # 31.00 × 20/30 → 20.67
    assert note.number == "CN-2026-000001"
    line = note.lines.get()
    assert (line.kind, line.rate_card_key, line.amount) == ("rerating", "platform", 2067)
    assert line.description == "Unused Platform fee (Nov 11 – Dec 1)"
    assert close_cycles(now=utc(2027, 3, 1)).invoices == 0  # nothing after the end
    assert CreditNote.objects.count() == 1  # and never credited twice


def test_plan_change_now_gives_one_invoice_with_the_new_fee_and_the_old_fee_credited():
    basic, pro = (
        token_plan(key="basic", extra=[platform_fee("30.00")]),
        token_plan(key="pro", extra=[platform_fee("60.00")]),
    )
    subscription = subscription_create(customer=kong_air(), plan=basic, start=NOV)
    close_cycles(now=utc(2026, 11, 1, 0, 1))
    new = subscription_change_plan(subscription=subscription, plan=pro, when="now", now=utc(2026, 11, 16))
    assert close_cycles(now=utc(2026, 11, 16, 0, 30)).invoices == 0  # the change waits for the grace period
    close_cycles(now=utc(2026, 11, 16, 2))
    assert not Invoice.objects.filter(subscription=subscription, cycle=1).exists()
    change = Invoice.objects.get(subscription=new, cycle=0)
    rows = {(line.subscription_id, line.kind, line.rate_card_key): line for line in change.lines.all()}
    assert rows[(new.pk, "flat_fee", "platform")].amount == 3000  # pro: 60.00 × 15/30
    assert rows[(new.pk, "flat_fee", "platform")].quantity == round(D(15) / D(30), 15)
    assert rows[(subscription.pk, "credit", "platform")].amount == -1500  # basic: 30.00 × 15/30 unused
    assert change.total == 1500 + sum(line.amount for line in change.lines.filter(kind="usage"))
    assert Invoice.objects.exclude(status="void").count() == 2  # the opening invoice and the one at the change
    close_cycles(now=utc(2026, 12, 1, 2))
    december = Invoice.objects.get(subscription=new, cycle=1)
    assert not december.lines.filter(subscription=subscription).exists()  # the old plan was settled at the change


def test_month_end_anchor_invoices():
    subscription_create(customer=kong_air(), plan=token_plan(), start=utc(2027, 1, 31))
    close_cycles(now=utc(2027, 4, 1))
    periods = [(i.period_start, i.period_end) for i in Invoice.objects.order_by("cycle") if i.cycle]
    assert periods == [(utc(2027, 1, 31), utc(2027, 2, 28)), (utc(2027, 2, 28), utc(2027, 3, 31))]


def test_grace_period_keeps_the_cycle_open_for_late_events():
    subscription_create(customer=kong_air(), plan=token_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 30, 23, 59))], now=utc(2026, 12, 1, 0, 30))  # ingested 30 min after the end
    assert close_cycles(now=utc(2026, 12, 1, 0, 59)).invoices == 0  # grace not over
    close_cycles(now=utc(2026, 12, 1, 1, 0))
    assert the_invoice().lines.get(kind="usage").quantity == 100


@pytest.mark.parametrize("graduated", [False, True])
def test_late_usage_is_billed_on_the_next_invoice_for_its_own_period(graduated):
    if graduated:
        spec = RateCardSpec(
            key="ai-token",
            feature="ai-token",
            price_type="graduated",
            tiers=[TierSpec(D(1000), D("0.01")), TierSpec(None, D("0.001"))],
        )
    else:
        spec = RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=D("0.01"))
    from catalog.services.plans import plan_create, plan_publish

    ai_token_feature()
    plan = plan_publish(plan=plan_create(key="p", name="P", currency="USD", rate_cards=[spec]))
    subscription_create(customer=kong_air(), plan=plan, start=NOV)
    ingest([tokens(800, utc(2026, 11, 10))])
    close_cycles(now=AFTER_NOV)
    assert the_invoice(1).lines.get().amount == 800
    ingest([tokens(700, utc(2026, 11, 29))], now=utc(2026, 12, 3))  # late: its period is already invoiced
    ingest([tokens(50, utc(2026, 12, 5))])
    close_cycles(now=utc(2027, 1, 1, 2))
    second = the_invoice(2)
    late = second.lines.get(kind="late_usage")
    assert (late.period_start, late.period_end, late.quantity) == (NOV, DEC, 700)
    # graduated: 800 + 700 = 1500 → 1000 × 0.01 + 500 × 0.001 = 10.50, minus the 8.00 billed
    assert late.amount == (250 if graduated else 700)
    assert late.description == "ai-token — late usage: 700 tokens (Nov 1 – Dec 1)"
    assert second.lines.get(kind="usage").quantity == 50
    close_cycles(now=utc(2027, 2, 1, 2))
    assert not the_invoice(3).lines.filter(kind="late_usage").exists()  # never billed twice


def test_events_before_the_subscription_start_are_not_billed():
    subscription_create(customer=kong_air(), plan=token_plan(), start=utc(2026, 11, 15), billing_anchor="calendar")
    ingest([tokens(999, utc(2026, 11, 14, 23)), tokens(5, utc(2026, 11, 15, 1))])
    close_cycles(now=AFTER_NOV)
    assert the_invoice().lines.get().quantity == 5


def test_close_twice_gives_one_invoice_and_empty_cycles_no_invoice():
    subscription_create(customer=kong_air(), plan=token_plan(), start=NOV)
    ingest([tokens(10, utc(2026, 11, 3))])
    first = close_cycles(now=AFTER_NOV)
    second = close_cycles(now=AFTER_NOV)
    assert (first.invoices, second.invoices) == (1, 0)
    assert Invoice.objects.count() == 1  # cycle 0 had nothing to bill in advance
    assert CycleClose.objects.get(cycle=0).state == "empty"


@pytest.mark.parametrize("crash_point", ["claim", "draft", "issue"])
def test_a_crash_after_each_step_then_a_rerun_gives_one_complete_invoice(monkeypatch, crash_point):
    subscription_create(customer=kong_air(), plan=token_plan(extra=[platform_fee()]), start=NOV)
    ingest([tokens(1000, utc(2026, 11, 3))])
    close_cycles(now=utc(2026, 11, 1, 0, 1))  # cycle 0
    targets = {
        "claim": (close_module, "cycle_bill"),
        "draft": (lifecycle_module, "stamp_issued"),
        "issue": (lifecycle_module, "schedule_push"),
    }
    module, name = targets[crash_point]
    if isinstance(module, str):
        import importlib

        module = importlib.import_module(module)

    def crash(*args, **kwargs):
        raise RuntimeError(f"worker died at {crash_point}")

    monkeypatch.setattr(module, name, crash)
    report = close_cycles(now=AFTER_NOV)
    assert report.errors and f"worker died at {crash_point}" in report.errors[0]
    monkeypatch.undo()
    close_cycles(now=AFTER_NOV)
    close_cycles(now=AFTER_NOV)
    invoices = Invoice.objects.filter(cycle=1)
    assert invoices.count() == 1
    invoice = invoices.get()
    assert invoice.status == "issued" and invoice.number == "INV-2026-000002"
    assert lines_of(invoice) == [("usage", "ai-token", D(1000), 2), ("flat_fee", "platform", D(1), 4900)]
    assert CycleClose.objects.get(cycle=1).state == "issued"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_closes_at_once_give_one_invoice_per_cycle():
    plan = token_plan(extra=[platform_fee()])
    for n in range(20):
        customer = customer_create(key=f"c{n}", name=f"C{n}", currency="USD", subjects=[f"s{n}"])
        subscription_create(customer=customer, plan=plan, start=NOV)
    barrier = threading.Barrier(3)

    def close() -> None:
        barrier.wait()
        close_cycles(now=AFTER_NOV, chunk_size=3)

    errors = run_in_threads(close, 3)
    assert not errors
    close_cycles(now=AFTER_NOV)
    assert Invoice.objects.count() == 40  # 20 opening + 20 November invoices
    numbers = sorted(int(n.rsplit("-", 1)[1]) for n in Invoice.objects.values_list("number", flat=True) if n)
    assert numbers == list(range(1, 41))  # gapless and unique


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_numbers_stay_gapless_under_concurrent_issuing():
    from customers.models import Subscription
    from invoicing.services.cycles import subscription_cycles
    from invoicing.services.lifecycle import invoice_create

    plan = token_plan()
    drafts = []
    for n in range(24):
        customer = customer_create(key=f"c{n}", name=f"C{n}", currency="USD")
        subscription = subscription_create(customer=customer, plan=plan, start=NOV)
        subscription = Subscription.objects.select_related("plan", "customer").get(pk=subscription.pk)
        cycle = subscription_cycles(subscription, until=AFTER_NOV)[1]
        drafts.append(invoice_create(subscription=subscription, cycle=cycle, lines=[]))

    def issue(batch):
        try:
            for invoice in batch:
                invoice_issue(invoice=invoice)
        finally:
            connection.close()

    threads = [threading.Thread(target=issue, args=(drafts[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    numbers = sorted(n for n in Invoice.objects.values_list("number", flat=True) if n is not None)
    assert numbers == [f"INV-2026-{n:06d}" for n in range(1, 25)]


def test_void_then_reissue():
    subscription_create(customer=kong_air(), plan=token_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 3))])
    close_cycles(now=AFTER_NOV)
    original = the_invoice()
    invoice_void(invoice=original, reason="wrong price")
    assert close_cycles(now=AFTER_NOV).invoices == 0  # the close does not silently rebill a voided cycle
    ingest([tokens(1, utc(2026, 11, 4))])
    corrected = invoice_reissue(invoice=original)
    assert corrected.status == "issued" and corrected.replaces == original and corrected.cycle == original.cycle
    assert corrected.lines.get().quantity == 101
    assert corrected.number == "INV-2026-000002"
    original.refresh_from_db()
    assert original.status == "void" and original.number == "INV-2026-000001"
    with pytest.raises(ValueError, match="already reissued"):
        invoice_reissue(invoice=original)


def test_draft_review_holds_invoices_then_issues_them(settings):
    settings.INVOICE_DRAFT_REVIEW_HOURS = 24
    subscription_create(customer=kong_air(), plan=token_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 3))])
    report = close_cycles(now=AFTER_NOV)
    invoice = the_invoice()
    assert (report.held, invoice.status, invoice.number) == (1, "draft", None)
    assert close_cycles(now=utc(2026, 12, 2, 1)).issued == 0  # reviewable until 24 h after the close
    assert close_cycles(now=utc(2026, 12, 2, 3)).issued == 1
    invoice.refresh_from_db()
    assert invoice.status == "issued" and invoice.number == "INV-2026-000001"


def test_issued_invoices_never_change():
    subscription_create(customer=kong_air(), plan=token_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 3))])
    close_cycles(now=AFTER_NOV)
    invoice = the_invoice()
    from invoicing.services.lifecycle import InvoiceTransitionError, invoice_mark_paid, invoice_mark_uncollectible

    paid = invoice_mark_paid(invoice=invoice)
    for service in (invoice_void, invoice_mark_uncollectible, invoice_issue):
        with pytest.raises(InvoiceTransitionError):
            service(invoice=paid)
    assert [e.action for e in paid.log.all()] == ["paid", "issued", "drafted"]
    assert InvoiceLine.objects.filter(invoice=invoice).count() == 1


def test_invoices_stuck_in_syncing_are_pushed_again(settings, monkeypatch):
    from django.utils import timezone

    from invoicing import tasks

    pushed = []
    monkeypatch.setattr(tasks.push_invoice, "delay", lambda pk: pushed.append(pk))
    subscription_create(customer=kong_air(), plan=token_plan(), start=NOV)
    ingest([tokens(10, utc(2026, 11, 3))])
    close_cycles(now=AFTER_NOV)
    invoice = the_invoice()
    Invoice.objects.filter(pk=invoice.pk).update(sync_status="syncing", issued_at=timezone.now())
    assert tasks.requeue_stuck_syncs() == 0
    Invoice.objects.filter(pk=invoice.pk).update(issued_at=timezone.now() - dt.timedelta(hours=4))
    assert tasks.requeue_stuck_syncs() == 1 and pushed == [invoice.pk]


def test_the_event_explorer_shows_which_invoice_billed_each_event(api, read_token, admin_client):

    subscription_create(customer=kong_air(), plan=token_plan(), start=NOV)
    ingest([tokens(500_000, utc(2026, 11, 3), event_id="on-time")], now=utc(2026, 11, 3))
    close_cycles(now=AFTER_NOV)
    ingest([tokens(700_000, utc(2026, 11, 29), event_id="late")], now=utc(2026, 12, 3))
    ingest([tokens(100_000, utc(2026, 12, 2), event_id="december")], now=utc(2026, 12, 2))
    close_cycles(now=utc(2027, 1, 1, 2))
    first, second = the_invoice(1), the_invoice(2)
    items = {i["event"]["id"]: i for i in api.get("/api/v1/events", {"from": "2026-11-01T00:00:00Z"},
                                                    **bearer(read_token)).json()}
    assert items["on-time"]["billedOn"] == first.number
    assert items["late"]["billedOn"] == f"{second.number} (late usage)"
    assert items["december"]["billedOn"] == second.number  # its own period, closed on Jan 1
    page = admin_client.get("/admin/metering/event/").content.decode()
    assert f"{second.number} (late usage)" in page
