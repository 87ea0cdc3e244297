"""Credits applied on invoices at close: order, applies_to, partial burns, the zero floor, void and return,
reissue, late usage; the re-rating rule never counts credits as billed."""

from __future__ import annotations

import datetime as dt

import pytest

from catalog.services.plans import RateCardSpec
from credits.models import LedgerEntry
from credits.selectors import customer_balance, grant_states, ledger_balance
from credits.services.grants import grant_void, grants_expire
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice, InvoiceLine
from invoicing.selectors.invoices import invoice_json
from invoicing.services.close import close_cycles
from invoicing.services.lifecycle import invoice_reissue, invoice_void
from invoicing.services.lines import billed_items
from tests.builders import D, ai_token_feature, cent_plan, grant, ingest, kong_air, token_plan, tokens, utc

pytestmark = pytest.mark.django_db
NOV, DEC, JAN = utc(2026, 11, 1), utc(2026, 12, 1), utc(2027, 1, 1)
AFTER_NOV = DEC + dt.timedelta(hours=2)


def november(used: int = 1000):
    """Kong Air on 1 cent per ai-token from November 1, with ``used`` tokens in November ($10.00 for 1000)."""
    air = kong_air()
    subscription = subscription_create(customer=air, plan=cent_plan(), start=NOV)
    if used:
        ingest([tokens(used, utc(2026, 11, 5))])
    return air, subscription


def credits_lines(invoice):
    return [(line.grant_id, line.amount) for line in invoice.lines.filter(kind="credits_applied")]


def remaining(customer):
    return {state.grant.pk: state.remaining for state in grant_states(customer.pk)}


def test_credits_pay_the_invoice_in_priority_order_and_are_burnt_with_it():
    air, _ = november()
    low = grant(air, 300, priority=10, effective_at=NOV)
    high = grant(air, 500, priority=5, effective_at=NOV)
    close_cycles(now=AFTER_NOV)
    invoice = Invoice.objects.get(cycle=1)
    assert credits_lines(invoice) == [(high.pk, -500), (low.pk, -300)]
    assert (invoice.subtotal, invoice.total, invoice.status) == (1000, 200, "issued")
    assert remaining(air) == {high.pk: 0, low.pk: 0}
    burns = LedgerEntry.objects.filter(kind="burn").order_by("pk")
    assert [(b.grant_id, b.amount, b.invoice_id) for b in burns] == [(high.pk, -500, invoice.pk),
                                                                     (low.pk, -300, invoice.pk)]
    line_ids = set(invoice.lines.filter(kind="credits_applied").values_list("pk", flat=True))
    assert {b.invoice_line_id for b in burns} == line_ids
    body = invoice_json(invoice)
    applied = [line for line in body["lines"] if line["kind"] == "credits_applied"]
    assert [(line["grant"], line["amount"], line["rate_card"]) for line in applied] == [
        (str(high.pk), "-5.00", None), (str(low.pk), "-3.00", None)]
    assert body["total"] == "2.00"


def test_equal_priority_burns_the_earliest_expiry_first_then_the_oldest():
    air, _ = november()
    later = grant(air, 600, priority=10, effective_at=NOV, expires_at=utc(2027, 6, 1))
    never = grant(air, 600, priority=10, effective_at=NOV - dt.timedelta(days=30))
    sooner = grant(air, 600, priority=10, effective_at=NOV, expires_at=utc(2027, 3, 1))
    close_cycles(now=AFTER_NOV)
    assert credits_lines(Invoice.objects.get(cycle=1)) == [(sooner.pk, -600), (later.pk, -400)]
    assert remaining(air) == {sooner.pk: 0, later.pk: 200, never.pk: 600}


def test_oldest_first_among_equal_priority_and_expiry():
    air, _ = november()
    newer = grant(air, 700, effective_at=NOV - dt.timedelta(days=1))
    older = grant(air, 700, effective_at=NOV - dt.timedelta(days=9))
    close_cycles(now=AFTER_NOV)
    assert credits_lines(Invoice.objects.get(cycle=1)) == [(older.pk, -700), (newer.pk, -300)]


def test_applies_to_pays_only_the_lines_of_its_features():
    ai_token_feature("ai-token-out", "response")
    plan = token_plan(unit_amount="0.01", extra=[
        RateCardSpec(key="ai-token-out", feature="ai-token-out", price_type="unit", unit_amount=D("0.02"))])
    air = kong_air()
    subscription_create(customer=air, plan=plan, start=NOV)
    ingest([tokens(1000, utc(2026, 11, 5)), tokens(100, utc(2026, 11, 5), kind="response")])  # $10 + $2
    only_out = grant(air, 5000, priority=1, applies_to=["ai-token-out"], effective_at=NOV)
    close_cycles(now=AFTER_NOV)
    invoice = Invoice.objects.get(cycle=1)
    assert credits_lines(invoice) == [(only_out.pk, -200)]
    assert invoice.total == 1000
    assert remaining(air) == {only_out.pk: 4800}


def test_credits_never_take_an_invoice_below_zero_and_a_grant_burns_partly():
    air, _ = november()
    big = grant(air, 5000, effective_at=NOV)
    close_cycles(now=AFTER_NOV)
    invoice = Invoice.objects.get(cycle=1)
    assert credits_lines(invoice) == [(big.pk, -1000)]
    assert (invoice.subtotal, invoice.total) == (1000, 0)
    assert customer_balance(air.pk, AFTER_NOV) == 4000


def test_grants_not_yet_effective_expired_before_the_period_or_void_pay_nothing():
    air, _ = november()
    grant(air, 500, effective_at=utc(2026, 12, 5))
    grant(air, 500, effective_at=utc(2026, 10, 1), expires_at=NOV)  # October's: ended before November began
    voided = grant(air, 500, effective_at=NOV)
    grant_void(grant=voided, reason="mistake", now=NOV + dt.timedelta(days=1))
    close_cycles(now=AFTER_NOV)
    assert credits_lines(Invoice.objects.get(cycle=1)) == []


def test_a_grant_pays_the_usage_of_the_period_it_covered_at_the_close_after_its_expiry():
    """"$10 of free usage in November" expires December 1; the close at December 1 plus the grace period still
    burns it for November's usage, and the expiry job writes off the rest only after that."""
    air, _ = november(used=700)
    monthly = grant(air, 1000, effective_at=NOV, expires_at=DEC, source="recurring")
    assert grants_expire(now=DEC + dt.timedelta(minutes=30)) == 0  # too early: November's close has not run
    close_cycles(now=AFTER_NOV)
    assert credits_lines(Invoice.objects.get(cycle=1)) == [(monthly.pk, -700)]
    assert grants_expire(now=DEC + dt.timedelta(hours=3)) == 1
    assert grants_expire(now=DEC + dt.timedelta(hours=4)) == 0  # once
    kinds = list(LedgerEntry.objects.filter(grant=monthly).order_by("pk").values_list("kind", "amount", "at"))
    assert kinds == [("grant", 1000, NOV), ("burn", -700, AFTER_NOV), ("expiry", -300, DEC)]
    assert customer_balance(air.pk, DEC + dt.timedelta(hours=4)) == 0


def test_a_void_returns_the_burns_and_a_reissue_burns_again():
    air, _ = november()
    credit = grant(air, 600, effective_at=NOV)
    close_cycles(now=AFTER_NOV)
    invoice = Invoice.objects.get(cycle=1)
    invoice_void(invoice=invoice, reason="wrong address")
    assert remaining(air) == {credit.pk: 600}
    returns = LedgerEntry.objects.filter(kind="return")
    assert [(r.amount, r.returns.invoice_id if r.returns else None) for r in returns] == [(600, invoice.pk)]
    # the re-rating rule: the void unbills the usage, the reissue bills it again, and the credits pay it again
    new = invoice_reissue(invoice=invoice)
    assert [(line.kind, line.amount) for line in new.lines.all()] == [("usage", 1000), ("credits_applied", -600)]
    assert new.total == 400
    assert remaining(air) == {credit.pk: 0}
    invoice_void(invoice=new)
    assert LedgerEntry.objects.filter(kind="return").count() == 2
    assert ledger_balance(air.pk) == 600


def test_a_return_to_an_expired_grant_is_recorded_as_expired():
    """September's invoice, paid by a grant that expired in October, is voided now (the real clock: after it)."""
    sep, oct_ = utc(2026, 9, 1), utc(2026, 10, 1)
    air = kong_air()
    subscription_create(customer=air, plan=cent_plan(), start=sep)
    ingest([tokens(1000, utc(2026, 9, 5))])
    credit = grant(air, 600, effective_at=sep, expires_at=utc(2026, 10, 10))
    close_cycles(now=oct_ + dt.timedelta(hours=2))
    invoice = Invoice.objects.get(cycle=1)
    assert grants_expire(now=utc(2026, 10, 11)) == 0  # nothing left on it
    invoice_void(invoice=invoice)
    kinds = list(LedgerEntry.objects.filter(grant=credit).order_by("pk").values_list("kind", "amount"))
    assert kinds == [("grant", 600), ("burn", -600), ("return", 600), ("expiry", -600)]
    assert remaining(air) == {credit.pk: 0}


def test_credits_lines_are_never_counted_as_billed():
    air, subscription = november()
    grant(air, 400, effective_at=NOV)
    close_cycles(now=AFTER_NOV)
    billed, _ = billed_items([subscription], starting_after=None)
    assert {key[1]: entry.amount for key, entry in billed.items()} == {"ai-token": 1000}


def test_late_usage_is_paid_by_credits_the_same_way():
    air, _ = november()
    close_cycles(now=AFTER_NOV)  # no credits yet: $10 invoiced
    credit = grant(air, 10_000, effective_at=NOV, now=AFTER_NOV)  # granted after the close, covering November
    ingest([tokens(500, utc(2026, 11, 20))])  # late: after November's close
    ingest([tokens(200, utc(2026, 12, 7))])
    close_cycles(now=JAN + dt.timedelta(hours=2))
    invoice = Invoice.objects.get(cycle=2)
    lines = [(line.kind, line.amount) for line in invoice.lines.all()]
    assert sorted(lines) == [("credits_applied", -700), ("late_usage", 500), ("usage", 200)]
    assert invoice.total == 0
    assert remaining(air) == {credit.pk: 9300}


def test_a_customer_without_grants_gets_no_credits_line():
    november()
    close_cycles(now=AFTER_NOV)
    assert not InvoiceLine.objects.filter(kind="credits_applied").exists()
