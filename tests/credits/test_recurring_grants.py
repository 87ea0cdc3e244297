"""Recurring grants on a rate card ("$10 of free usage each month"): granted at each period start, once, expiring
as configured, paying that period's usage at its close; the catalog refuses malformed ones."""

from __future__ import annotations

import datetime as dt

import pytest

from catalog.services.plans import PlanError, RateCardSpec, plan_create, plan_publish
from credits.models import CreditGrant
from credits.selectors import customer_balance
from credits.services.recurring import recurring_grants_issue
from customers.services.subscriptions import subscription_cancel, subscription_create
from invoicing.models import Invoice
from invoicing.services.close import close_cycles
from tests.builders import D, ai_token_feature, ingest, kong_air, tokens, utc

pytestmark = pytest.mark.django_db
NOV, DEC, JAN = utc(2026, 11, 1), utc(2026, 12, 1), utc(2027, 1, 1)
MONTHLY = {"amount": "10.00", "every": "P1M", "expires_after": "P1M", "priority": 10}


def free_tier_plan(credit_grant=None):
    ai_token_feature()
    spec = RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=D("0.01"),
                        credit_grant=credit_grant or MONTHLY)
    return plan_publish(plan=plan_create(key="free-tier", name="Free tier", currency="USD", rate_cards=[spec]))


def test_granted_at_each_period_start_once():
    air = kong_air()
    subscription = subscription_create(customer=air, plan=free_tier_plan(), start=NOV)
    assert recurring_grants_issue(now=NOV + dt.timedelta(minutes=5)) == 1
    assert recurring_grants_issue(now=NOV + dt.timedelta(minutes=10)) == 0
    assert recurring_grants_issue(now=utc(2026, 11, 20)) == 0
    november = CreditGrant.objects.get()
    assert (november.amount, november.priority, november.effective_at, november.expires_at, november.source) == (
        1000, 10, NOV, DEC, "recurring")
    assert november.recurring_key == f"{subscription.pk}:ai-token:2026-11-01T00:00:00+00:00"
    assert recurring_grants_issue(now=DEC + dt.timedelta(minutes=5)) == 1
    assert list(CreditGrant.objects.order_by("effective_at").values_list("effective_at", flat=True)) == [NOV, DEC]
    subscription_cancel(subscription=subscription, when="now", now=utc(2026, 12, 10))
    assert recurring_grants_issue(now=JAN + dt.timedelta(minutes=5)) == 0  # canceled: no January grant


def test_ten_dollars_free_each_month_then_pay_as_you_go():
    air = kong_air()
    subscription_create(customer=air, plan=free_tier_plan(), start=NOV)
    recurring_grants_issue(now=NOV + dt.timedelta(minutes=5))
    ingest([tokens(1500, utc(2026, 11, 5))])  # $15.00: $10 free, $5 to pay
    recurring_grants_issue(now=DEC + dt.timedelta(minutes=5))  # December's grant does not pay November
    close_cycles(now=DEC + dt.timedelta(hours=2))
    invoice = Invoice.objects.get(cycle=1)
    assert [(line.kind, line.amount) for line in invoice.lines.all()] == [("usage", 1500), ("credits_applied", -1000)]
    assert invoice.total == 500
    assert customer_balance(air.pk, DEC + dt.timedelta(hours=3)) == 1000  # December's $10


def test_a_missed_beat_still_grants_the_running_period_but_not_expired_ones():
    air = kong_air()
    subscription_create(customer=air, plan=free_tier_plan(), start=utc(2026, 9, 1))
    assert recurring_grants_issue(now=utc(2026, 11, 15)) == 1  # November's only: October's expired on Nov 1
    assert CreditGrant.objects.get().effective_at == NOV


def test_without_expiry_and_other_cadences():
    air = kong_air()
    subscription_create(customer=air, plan=free_tier_plan({"amount": "1.50", "every": "P1W"}), start=NOV)
    assert recurring_grants_issue(now=utc(2026, 11, 9)) == 2  # the week running (from the 8th) and the one before
    assert set(CreditGrant.objects.values_list("amount", "expires_at", "priority")) == {(150, None, 100)}


@pytest.mark.parametrize("credit_grant, words", [
    ({"amount": "0", "every": "P1M"}, "more than zero"),
    ({"amount": "-1", "every": "P1M"}, "more than zero"),
    ({"amount": "1.001", "every": "P1M"}, "more decimals"),
    ({"amount": "ten", "every": "P1M"}, "more than zero"),
    ({"amount": "1.00", "every": "P2M"}, "every must be one of"),
    ({"amount": "1.00", "expires_after": "forever"}, "expires_after"),
    ({"amount": "1.00", "priority": -3}, "priority"),
    ({"amount": "1.00", "surprise": 1}, "unknown field"),
    ("ten dollars", "must be a mapping"),
])
def test_malformed_recurring_grants_keep_a_plan_from_being_published(credit_grant, words):
    with pytest.raises(PlanError) as refused:
        free_tier_plan(credit_grant)
    assert words in str(refused.value)
