"""The ledger as a property: over random histories of grants (priorities, expiries, features, future starts),
credits paying invoices, invoice voids returning them (twice, sometimes), adjustments, grant voids and expiry
runs, for every customer at every step the ledger balance equals grants − burns − expiries − voids + returns ±
adjustments, no grant and no balance is ever negative, credits pay exactly what they can, and the live balance
never counts an expired, void or not-yet-effective grant. Runs on SQLite and, in CI, on PostgreSQL."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os

import pytest
from django.db import transaction
from django.db.models import Sum
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule, run_state_machine_as_test

from credits.models import CreditGrant, LedgerEntry
from credits.selectors import Payable, balance_at, credits_plan, grant_states, ledger_balance, usable_grants
from credits.services.burns import credits_burn, credits_return
from credits.services.grants import CreditError, grant_adjust, grant_create, grant_void, grants_expire, lock_customer
from customers.models import Customer
from tests.builders import RolledBackMachine, ai_token_feature, customer, utc

START = utc(2026, 3, 1)
_invoice_ids = itertools.count(1_000_000)
K = LedgerEntry.Kind


class LedgerHistory(RolledBackMachine):
    def __init__(self):
        super().__init__()
        self.clock = START
        self.invoices: list[tuple[int, int]] = []  # (customer id, invoice id) that burnt credits
        self.customers: list[int] = []

    @initialize()
    def two_customers(self):
        ai_token_feature()
        self.customers = [customer("acme").pk, customer("globex").pk]

    @rule(who=st.integers(0, 1), amount=st.integers(1, 5000), priority=st.integers(0, 3),
          starts_in=st.integers(-3, 3), lasts=st.one_of(st.none(), st.integers(1, 20)),
          for_tokens=st.booleans())
    def grant(self, who, amount, priority, starts_in, lasts, for_tokens):
        effective = self.clock + dt.timedelta(days=starts_in)
        grant_create(customer=self._customer(who), amount=amount, priority=priority, effective_at=effective,
                     expires_at=None if lasts is None else effective + dt.timedelta(days=lasts),
                     applies_to=["ai-token"] if for_tokens else [], now=self.clock)

    @rule(days=st.integers(1, 6))
    def time_passes(self, days):
        self.clock += dt.timedelta(days=days)

    @rule(who=st.integers(0, 1),
          lines=st.lists(st.tuples(st.sampled_from([None, "ai-token"]), st.integers(-3000, 4000)), min_size=1,
                         max_size=4))
    def an_invoice_is_paid_by_credits(self, who, lines):
        customer_id = self.customers[who]
        payables = [Payable(feature, amount) for feature, amount in lines]
        with transaction.atomic():
            lock_customer(customer_id)
            before = balance_at(grant_states(customer_id), self.clock)
            uses = credits_plan(usable_grants(customer_id, self.clock), payables, at=self.clock)
            invoice_id = next(_invoice_ids)
            credits_burn(customer_id=customer_id, uses=uses, invoice_id=invoice_id, line_ids=[None] * len(uses),
                         at=self.clock)
        burnt = sum(use.amount for use in uses)
        net = max(sum(p.amount for p in payables), 0)
        assert 0 <= burnt <= min(net, before)
        assert all(use.amount > 0 for use in uses)
        features = {p.feature_key for p in payables if p.amount > 0}
        assert all(not use.grant.applies_to or features & set(use.grant.applies_to) for use in uses)
        assert len({use.grant.pk for use in uses}) == len(uses)  # one line per grant
        if all(p.feature_key == "ai-token" for p in payables):  # every grant applies: credits pay all they can
            assert burnt == min(net, before, sum(max(p.amount, 0) for p in payables))
        assert balance_at(grant_states(customer_id), self.clock) == before - burnt
        if uses:
            self.invoices.append((customer_id, invoice_id))

    @rule(data=st.data())
    def an_invoice_is_voided(self, data):
        if not self.invoices:
            return
        customer_id, invoice_id = data.draw(st.sampled_from(self.invoices))
        burnt = -(LedgerEntry.objects.filter(invoice_id=invoice_id, kind=K.BURN).aggregate(s=Sum("amount"))["s"] or 0)
        already = LedgerEntry.objects.filter(invoice_id=invoice_id, kind=K.RETURN).exists()
        returned = credits_return(customer_id=customer_id, invoice_id=invoice_id, now=self.clock)
        assert sum(e.amount for e in returned if e.kind == K.RETURN) == (0 if already else burnt)

    @rule(data=st.data(), amount=st.integers(-3000, 3000).filter(bool))
    def staff_adjust(self, data, amount):
        grants = list(CreditGrant.objects.order_by("pk"))
        if not grants:
            return
        grant = data.draw(st.sampled_from(grants))
        with contextlib.suppress(CreditError):  # below zero, void or expired: refused, nothing written
            grant_adjust(grant=grant, amount=amount, reason="property test", now=self.clock)

    @rule(data=st.data())
    def staff_void_a_grant(self, data):
        grants = list(CreditGrant.objects.filter(voided_at__isnull=True).order_by("pk"))
        if grants:
            grant_void(grant=data.draw(st.sampled_from(grants)), reason="property test", now=self.clock)

    @rule()
    def expiry_runs(self):
        grants_expire(now=self.clock)
        assert grants_expire(now=self.clock) == 0  # once

    @invariant()
    def the_ledger_adds_up_and_never_goes_negative(self):
        for customer_id in self.customers:
            sums = dict(LedgerEntry.objects.filter(customer_id=customer_id).values("kind")
                        .annotate(total=Sum("amount")).values_list("kind", "total"))
            grants, burns = sums.get(K.GRANT, 0), -sums.get(K.BURN, 0)
            expiries, voids = -sums.get(K.EXPIRY, 0), -sums.get(K.VOID, 0)
            returns, adjustments = sums.get(K.RETURN, 0), sums.get(K.ADJUSTMENT, 0)
            balance = ledger_balance(customer_id)
            assert balance == grants - burns - expiries - voids + returns + adjustments
            assert balance >= 0
            states = grant_states(customer_id)
            assert all(state.remaining >= 0 for state in states)
            live = balance_at(states, self.clock)
            assert 0 <= live <= balance
            for state in states:
                grant = state.grant
                if grant.voided_at is not None:
                    assert state.remaining == 0
                if grant.expires_at is not None and grant.expires_at <= self.clock:
                    assert not state.usable_at(self.clock)
            # a return never outlives its burn: each burn is returned at most once, by exactly its amount
            for entry in LedgerEntry.objects.filter(customer_id=customer_id, kind=K.RETURN).select_related("returns"):
                assert entry.returns is not None and entry.returns.kind == K.BURN
                assert entry.amount == -entry.returns.amount

    def _customer(self, who):
        return Customer.objects.get(pk=self.customers[who])


@pytest.mark.slow
@pytest.mark.django_db
def test_the_ledger_balance_is_its_entries_and_never_negative():
    run_state_machine_as_test(LedgerHistory, settings=settings(
        max_examples=int(os.environ.get("LEDGER_EXAMPLES", "30")), stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]))
