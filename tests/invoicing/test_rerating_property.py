"""The re-rating rule as a property: over random histories — usage on time and late, closes at random times,
voids, reissues, payments, plan changes and cancellations — after a final close every subscription, rate card
and closed period is billed exactly its rated amount (non-void invoices less re-rating credit notes), also per
row of a dimensional price (per model × token type, with a price change scheduled mid-history), no invoice
total is negative and every credit note is positive. Runs on SQLite and, in CI, on PostgreSQL."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
from collections import defaultdict

import pytest
from django.conf import settings as django_settings
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from catalog.charges import charge_rate_card, dimensional_price, is_dimensional
from catalog.dimensional import UsageGroup, effective_segments
from catalog.models import Plan
from catalog.services.plans import PriceRowSpec, RateCardSpec, TierSpec, plan_create, plan_publish
from credits.models import AutoTopUp
from credits.selectors import grant_states, ledger_balance
from credits.services.grants import grant_create
from customers.models import Subscription
from customers.periods import periods_between
from customers.selectors import feature_usage, feature_usage_grouped
from customers.services.customers import attribution_add, customer_create
from customers.services.subscriptions import subscription_cancel, subscription_change_plan, subscription_create
from invoicing.models import CreditNote, CreditNoteLine, Invoice, InvoiceLine
from invoicing.selectors.reconcile import reconcile
from invoicing.services.close import close_cycles
from invoicing.services.lifecycle import ReissueError, invoice_mark_paid, invoice_reissue, invoice_void
from tests.builders import (
    D,
    RolledBackMachine,
    ai_token_feature,
    ingest,
    iso,
    llm_event,
    llm_tokens_feature,
    unit_row,
    utc,
)

START = utc(2026, 11, 1)
HORIZON = dt.timedelta(days=70)  # the history stays within the 90-day lookback of its first period
_ids = itertools.count()


MODELS = ["gpt-4o", "gpt-4o-mini", "o3", "gpt-5"]  # gpt-5 is priced by the default on Pro, unpriced on Basic


def _llm_table(*, default: bool, **limits) -> RateCardSpec:
    """Per model and token type: unit, graduated and package rows, a price change mid-history, maybe a default."""
    llm_tokens_feature()
    rows = [
        unit_row("0.003", model="gpt-4o", type="request"),
        PriceRowSpec(match={"model": "gpt-4o", "type": "response"}, price_type="graduated",
                     tiers=[TierSpec(D(300), D("0.01")), TierSpec(None, D("0.004"), D("0.50"))]),
        PriceRowSpec(match={"model": "gpt-4o-mini"}, price_type="package", amount=D("0.70"),
                     quantity_per_package=D(400)),
        PriceRowSpec(match={"type": "response"}, price_type="volume",
                     tiers=[TierSpec(D(500), D("0.002")), TierSpec(None, D("0.001"))]),
        unit_row("0.0045", effective_from=START + dt.timedelta(days=23, hours=5), model="gpt-4o", type="request"),
    ]
    if default:
        rows.append(PriceRowSpec(is_default=True, price_type="unit", unit_amount=D("0.0013")))
    return RateCardSpec(key="llm", name="LLM tokens", feature="llm-tokens", price_type="dimensional",
                        dimensions=["model", "type"], rows=rows, **limits)


def _plans():
    ai_token_feature()
    ai_token_feature("ai-token-out", "response")
    basic = plan_publish(plan=plan_create(key="basic", name="Basic", currency="USD", rate_cards=[
        RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=D("0.01"),
                     free_quantity=D(50), maximum_spend=D("40.00")),
        RateCardSpec(key="platform", name="Platform", price_type="flat", amount=D("30.00"),
                     payment_term="in_advance"),
        _llm_table(default=False, free_quantity=D(200), maximum_spend=D("9.00")),
    ]))
    pro = plan_publish(plan=plan_create(key="pro", name="Pro", currency="USD", rate_cards=[
        RateCardSpec(key="ai-token", feature="ai-token", price_type="graduated", minimum_spend=D("5.00"),
                     tiers=[TierSpec(D(100), D("0.02")), TierSpec(None, D("0.005"), D("1.00"))]),
        RateCardSpec(key="ai-token-out", feature="ai-token-out", price_type="package", amount=D("2.00"),
                     quantity_per_package=D(500)),
        RateCardSpec(key="support", name="Support", price_type="flat", amount=D("12.00"),
                     payment_term="in_arrears"),
        RateCardSpec(key="platform", name="Platform", price_type="flat", amount=D("90.00"),
                     payment_term="in_advance"),
        _llm_table(default=True, minimum_spend=D("4.00")),
    ]))
    return basic, pro


class BillingHistory(RolledBackMachine):
    """One customer's billing history, inside a savepoint rolled back at the end of each example. The plans are
    built once by the test, before the examples (``plan_keys``); each example reads them."""

    plan_keys = ("basic", "pro")

    def __init__(self):
        super().__init__()
        self.clock = START

    @initialize(start_offset_days=st.integers(0, 20), calendar=st.booleans())
    def subscribe(self, start_offset_days, calendar):
        self.basic, self.pro = (Plan.objects.get(key=key) for key in self.plan_keys)
        self.customer = customer_create(key="kong-air", name="Kong Air", currency="USD")
        attribution_add(customer=self.customer, subject="kong-air")
        start = START + dt.timedelta(days=start_offset_days)
        subscription_create(customer=self.customer, plan=self.basic, start=start,
                            billing_anchor="calendar" if calendar else None)

    def current(self) -> Subscription | None:
        subscription = Subscription.objects.filter(customer=self.customer).order_by("-start", "-id").first()
        if subscription is None or subscription.status_at(self.clock) not in ("active", "canceling"):
            return None
        return subscription

    def not_canceled(self) -> Subscription | None:
        """The running subscription, unless it is already set to end."""
        subscription = self.current()
        return subscription if subscription is not None and subscription.cancel_at is None else None

    @rule(hours=st.integers(1, 15 * 24), close=st.booleans())
    def time_passes(self, hours, close):
        """Time passes; beat usually closes what is due."""
        self.clock = min(self.clock + dt.timedelta(hours=hours), START + HORIZON)
        if close:
            self.close()

    @rule(tokens=st.integers(1, 1500), back_hours=st.one_of(st.integers(0, 48), st.integers(0, 60 * 24)),
          kind=st.sampled_from(["request", "response"]), model=st.sampled_from(MODELS))
    def usage_arrives(self, tokens, back_hours, kind, model):
        """On time (back_hours small) or late, possibly for a period already invoiced."""
        happened = max(START - dt.timedelta(days=2), self.clock - dt.timedelta(hours=back_hours))
        ingest([llm_event(tokens=tokens, kind=kind, model=model, time=iso(happened), event_id=f"e{next(_ids)}")],
               now=self.clock)

    @rule(burst=st.lists(st.tuples(st.integers(1, 900), st.integers(0, 40 * 24),
                                    st.sampled_from(["request", "response"]), st.sampled_from(MODELS)),
                          min_size=2, max_size=6))
    def traffic(self, burst):
        """Several calls to several models at once, some of them late."""
        ingest([llm_event(tokens=tokens, kind=kind, model=model, event_id=f"e{next(_ids)}",
                          time=iso(max(START - dt.timedelta(days=2), self.clock - dt.timedelta(hours=back))))
                for tokens, back, kind, model in burst], now=self.clock)

    @rule()
    def close(self):
        report = close_cycles(now=self.clock)
        assert not report.errors, report.errors

    @rule(data=st.data())
    def void_an_invoice(self, data):
        invoices = list(Invoice.objects.filter(status__in=("issued", "uncollectible")).order_by("pk"))
        if invoices:
            invoice_void(invoice=data.draw(st.sampled_from(invoices)), reason="property test")

    @rule(data=st.data())
    def reissue(self, data):
        voided = list(Invoice.objects.filter(status="void").order_by("pk"))
        if voided:
            with contextlib.suppress(ReissueError):  # already reissued, or nothing missing: nothing written
                invoice_reissue(invoice=data.draw(st.sampled_from(voided)), now=self.clock)

    @rule(amount=st.integers(1, 6000), priority=st.integers(0, 2), lasts=st.one_of(st.none(), st.integers(1, 40)),
          for_tokens=st.booleans())
    def credits_granted(self, amount, priority, lasts, for_tokens):
        """Prepaid credits pay invoices at close; they never change what a period counts as billed."""
        grant_create(customer=self.customer, amount=amount, priority=priority, effective_at=self.clock,
                     expires_at=None if lasts is None else self.clock + dt.timedelta(days=lasts),
                     applies_to=["ai-token"] if for_tokens else [], now=self.clock)

    @rule(threshold=st.integers(0, 3000), amount=st.integers(1, 5000), immediately=st.booleans(),
          enabled=st.booleans())
    def auto_top_up_set(self, threshold, amount, immediately, enabled):
        """An auto top-up bought within a close is a line of that close's invoice: never billed usage, never paid
        by credits."""
        AutoTopUp.objects.update_or_create(customer=self.customer, defaults={
            "threshold": threshold, "amount": amount, "available_immediately": immediately, "enabled": enabled,
            "max_per_period": 2})

    @rule(data=st.data())
    def customer_pays(self, data):
        issued = list(Invoice.objects.filter(status="issued").order_by("pk"))
        if issued:
            invoice_mark_paid(invoice=data.draw(st.sampled_from(issued)))

    @precondition(lambda self: self.current() is not None)
    @rule(when=st.sampled_from(["now", "period_end"]))
    def cancel(self, when):
        subscription = self.not_canceled()
        if subscription is not None:
            subscription_cancel(subscription=subscription, when=when, now=self.clock)

    @precondition(lambda self: self.current() is not None)
    @rule(when=st.sampled_from(["now", "period_end"]))
    def change_plan(self, when):
        subscription = self.not_canceled()
        if subscription is not None:
            other = self.pro if subscription.plan_id == self.basic.pk else self.basic
            subscription_change_plan(subscription=subscription, plan=other, when=when, now=self.clock)

    @invariant()
    def never_negative(self):
        assert not Invoice.objects.filter(total__lt=0).exists()
        assert not CreditNote.objects.filter(total__lte=0).exists()
        for invoice in Invoice.objects.exclude(status="void").filter(lines__kind="credits_applied").distinct():
            amounts: dict[str, int] = defaultdict(int)
            for kind, amount in invoice.lines.values_list("kind", "amount"):
                amounts[kind] += amount
            charges = sum(amount for kind, amount in amounts.items()
                          if kind not in ("credits_applied", "credit_top_up"))
            assert -amounts["credits_applied"] <= charges  # credits never pay the purchase of credits
        if hasattr(self, "customer"):
            assert ledger_balance(self.customer.pk) >= 0
            assert all(state.remaining >= 0 for state in grant_states(self.customer.pk))

    def teardown(self):
        try:
            if hasattr(self, "customer"):
                self.final_close_bills_exactly_what_rates()
        finally:
            super().teardown()

    def final_close_bills_exactly_what_rates(self):
        """A close at the next boundary after everything (plus the grace period) settles the whole history: checked
        against sums written here from the tables (not the code under test), and by billing_reconcile's rows."""
        final = self.clock + dt.timedelta(days=32)  # after every subscription's next boundary and its grace period
        report = close_cycles(now=final)
        assert not report.errors, report.errors
        cutoff = final - dt.timedelta(days=django_settings.INVOICE_LATE_USAGE_LOOKBACK_DAYS)
        expected, ends = rated_by_hand(self.customer, final)
        actual = billed_by_hand(self.customer)
        within = {key for key in set(expected) | set(actual) if ends.get(key[:3], key[2]) > cutoff}
        assert {k: actual.get(k, 0) for k in within} == {k: expected.get(k, 0) for k in within}
        rows = list(reconcile(now=final))
        wrong = [(r.subscription_id, r.rate_card, r.period_start, r.rated, r.billed, r.reason)
                 for r in rows if r.difference and (r.period_end > cutoff or r.reason != "outside the lookback")]
        assert not wrong, wrong
        self.never_negative()
        event(f"invoices: {min(Invoice.objects.count(), 6)}")
        event(f"credit notes: {min(CreditNote.objects.count(), 3)}")
        event(f"late lines: {min(InvoiceLine.objects.filter(kind='late_usage').count(), 3)}")
        event(f"credit lines on invoices: {min(InvoiceLine.objects.filter(kind='credit').count(), 3)}")
        event(f"subscriptions: {Subscription.objects.count()}")
        event(f"voids: {min(Invoice.objects.filter(status='void').count(), 3)}")
        row_lines = InvoiceLine.objects.exclude(price_part="")
        event(f"row versions billed: {min(row_lines.values('price_part').distinct().count(), 5)}")
        event(f"row re-rated: {row_lines.filter(kind__in=('late_usage', 'credit')).exists()}")
        event(f"credits applied: {min(InvoiceLine.objects.filter(kind='credits_applied').count(), 3)}")
        event(f"top-ups on cycle invoices: "
              f"{min(InvoiceLine.objects.filter(kind='credit_top_up', invoice__cycle__isnull=False).count(), 2)}")


def rated_by_hand(customer, final: dt.datetime) -> tuple[dict[tuple, int], dict[tuple, dt.datetime]]:
    """Every priced rate card of every subscription, per period that is due by ``final``, priced from its whole
    usage (the plain feature_usage read, not the close's batched one); and each period's end."""
    grace = dt.timedelta(seconds=django_settings.INVOICE_GRACE_PERIOD_SECONDS)
    rated: dict[tuple, int] = {}
    ends: dict[tuple, dt.datetime] = {}
    for subscription in Subscription.objects.filter(customer=customer).select_related("plan"):
        periods = periods_between(subscription.billing_anchor, subscription.plan.billing_cadence,
                                  subscription.start, subscription.cancel_at, until=final)
        for rate_card in subscription.plan.rate_cards.select_related("feature__meter").prefetch_related("tiers"):
            advance = rate_card.payment_term == "in_advance" and rate_card.price_type == "flat"
            for period in periods:
                if not advance and period.end + grace > final:
                    continue
                quantity = D(0)
                groups = None
                if is_dimensional(rate_card):
                    table = dimensional_price(rate_card)
                    groups = [UsageGroup(a, b, tuple(zip(table.dimensions, values, strict=True)), q)
                              for a, b in effective_segments(table, period.start, period.end)
                              for values, q in feature_usage_grouped(
                                  subscription=subscription, feature=rate_card.usage_feature,
                                  dimensions=table.dimensions, start=a, end=b).items()]
                elif rate_card.price_type != "flat":
                    quantity = feature_usage(subscription=subscription, feature=rate_card.usage_feature,
                                             start=period.start, end=period.end)
                charge = charge_rate_card(rate_card, quantity=quantity, currency="USD", proration=period.fraction,
                                          usage_groups=groups)
                key = (subscription.pk, rate_card.key, period.start)
                rated[key] = charge.total
                ends[key] = period.end
                if groups is not None:  # and per row version ("" : the spend limits of the whole table)
                    for line in charge.lines:
                        rated[(*key, line.part)] = rated.get((*key, line.part), 0) + line.amount
    return rated, ends


def billed_by_hand(customer) -> dict[tuple, int]:
    billed: dict[tuple, int] = defaultdict(int)
    for line in (InvoiceLine.objects.filter(invoice__customer=customer).exclude(invoice__status="void")
                 .exclude(kind__in=("credits_applied", "credit_top_up"))):  # credits pay what was billed; they do
        # not unbill it; a purchase of credits (a top-up line) bills no subscription's usage
        key = (line.subscription_id, line.rate_card_key, line.period_start)
        billed[key] += line.amount
        if line.rate_card is not None and line.rate_card.price_type == "dimensional":
            billed[(*key, line.price_part)] += line.amount
    for note_line in CreditNoteLine.objects.filter(credit_note__customer=customer, credit_note__status="issued",
                                                   kind="rerating"):
        note_key = (note_line.subscription_id, note_line.rate_card_key, note_line.period_start)
        billed[note_key] -= note_line.amount
        if note_line.rate_card is not None and note_line.rate_card.price_type == "dimensional":
            billed[(*note_key, note_line.price_part)] -= note_line.amount
    return {key: amount for key, amount in billed.items() if len(key) == 3 or amount}


@pytest.mark.slow
@pytest.mark.django_db
def test_billed_equals_rated_after_any_history():
    assert tuple(plan.key for plan in _plans()) == BillingHistory.plan_keys
    run_state_machine_as_test(BillingHistory, settings=settings(
        max_examples=int(os.environ.get("RERATING_EXAMPLES", "40")), stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
