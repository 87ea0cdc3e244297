"""Reads of the credits app: what is left of each grant, balances, which grants pay which lines, the live
balance the API and the gateway read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import Q, QuerySet, Sum
from django.utils import timezone

from catalog.money import to_major
from common.prepared import prepared_cursor
from common.time import format_rfc3339
from customers.models import Customer
from customers.selectors import customer_terms
from customers.selectors import pending_usage as customers_pending_usage
from metering.usage_sql import db_datetime

from .models import CreditGrant, LedgerEntry


@dataclass(frozen=True)
class GrantState:
    grant: CreditGrant
    remaining: int  # the sum of its entries (minor units)
    available: bool  # its credits are granted (a purchase is paid)

    def usable_at(self, at: dt.datetime) -> bool:
        """Whether its credits can be spent at ``at`` (the live balance, the gateway)."""
        return self.payable_at(at) and (self.grant.expires_at is None or self.grant.expires_at > at)

    def payable_at(self, at: dt.datetime) -> bool:
        """Whether a close at ``at`` may burn it for some line (whose period it must overlap, see :func:`covers`):
        granted, something left (the expiry job has not written it off), not void, effective."""
        grant = self.grant
        return self.available and self.remaining > 0 and grant.voided_at is None and grant.effective_at <= at


def burn_order(state: GrantState) -> tuple:
    """Priority (lower first), then earliest expiry (none last), then oldest."""
    grant = state.grant
    return (grant.priority, grant.expires_at is None, grant.expires_at or grant.effective_at, grant.effective_at,
            grant.pk)


def grant_states(customer_id: int) -> list[GrantState]:
    """Every grant of the customer with its remainder, in burn order (one statement)."""
    grants = (CreditGrant.objects.filter(customer_id=customer_id)
              .annotate(left=Sum("entries__amount"),
                        granted=Sum("entries__amount", filter=Q(entries__kind=LedgerEntry.Kind.GRANT))))
    states = [GrantState(grant, grant.left or 0, grant.granted is not None) for grant in grants]
    return sorted(states, key=burn_order)


def usable_grants(customer_id: int, at: dt.datetime) -> list[GrantState]:
    return [state for state in grant_states(customer_id) if state.usable_at(at)]


def payable_grants(customer_id: int, at: dt.datetime) -> list[GrantState]:
    """The grants a close at ``at`` may burn (each still only for lines whose period it covers), in burn order."""
    return [state for state in grant_states(customer_id) if state.payable_at(at)]


def balance_at(states: Sequence[GrantState], at: dt.datetime) -> int:
    return sum(state.remaining for state in states if state.usable_at(at))


def customer_balance(customer_id: int, at: dt.datetime) -> int:
    """What the customer's usable grants have left (minor units): effective, not expired, not void."""
    return balance_at(grant_states(customer_id), at)


def ledger_balance(customer_id: int) -> int:
    """The sum of every entry of the customer (expired remainders the beat job has not yet written off included)."""
    return LedgerEntry.objects.filter(customer_id=customer_id).aggregate(total=Sum("amount"))["total"] or 0


def ledger_entries(customer_id: int | None = None) -> QuerySet[LedgerEntry]:
    entries = LedgerEntry.objects.select_related("grant", "customer", "actor")
    return entries if customer_id is None else entries.filter(customer_id=customer_id)


# --- credits paying invoice lines ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Payable:
    """An invoice line credits may pay: its feature (None for a plain fee), amount (minor units) and the period it
    bills (None: the moment of the close)."""

    feature_key: str | None
    amount: int
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None


@dataclass(frozen=True)
class CreditUse:
    """Credits of one grant paying lines of one invoice (``amount`` minor units, positive)."""

    grant: CreditGrant
    amount: int


def applies(grant: CreditGrant, feature_key: str | None) -> bool:
    return not grant.applies_to or feature_key in grant.applies_to


def covers(grant: CreditGrant, payable: Payable, at: dt.datetime) -> bool:
    """A grant pays for a line whose period overlaps its validity: "$10 of free usage in November" (effective
    November 1, expiring December 1) pays November's usage at the close on December 1 plus the grace period."""
    start = payable.period_start or at
    end = payable.period_end or at
    if end <= start:
        end = start + dt.timedelta(microseconds=1)
    return grant.effective_at < end and (grant.expires_at is None or grant.expires_at > start)


def credits_plan(states: Sequence[GrantState], payables: Sequence[Payable], *, at: dt.datetime) -> list[CreditUse]:
    """Which grants pay which part of these lines: grants in burn order, each paying the eligible lines (its
    features, a period it covers) not yet paid, never more than it has left nor more than the lines' net total (an
    invoice never goes below zero: credit lines of the same invoice reduce what can be paid)."""
    cap = max(sum(p.amount for p in payables), 0)
    unpaid = [max(p.amount, 0) for p in payables]
    uses: list[CreditUse] = []
    for state in states:
        if cap <= 0:
            break
        if not state.payable_at(at):
            continue
        left = min(state.remaining, cap)
        used = 0
        for index, payable in enumerate(payables):
            if left <= 0:
                break
            if (unpaid[index] <= 0 or not applies(state.grant, payable.feature_key)
                    or not covers(state.grant, payable, at)):
                continue
            paid = min(unpaid[index], left)
            unpaid[index] -= paid
            left -= paid
            used += paid
        if used:
            uses.append(CreditUse(state.grant, used))
            cap -= used
    return uses


def customer_has_grants(customer_id: int) -> bool:
    return CreditGrant.objects.filter(customer_id=customer_id).exists()


# --- live balance ------------------------------------------------------------------------------------------

def pending_usage(customer: Customer, at: dt.datetime) -> int:
    """The current period's rated usage, not yet invoiced (minor units): the rule of
    :func:`customers.selectors.pending_usage`, the same the gateway's check subtracts."""
    return customers_pending_usage(customer_terms(customer, at), at)[0]


@dataclass(frozen=True)
class CustomerCredits:
    customer: Customer
    balance: int
    pending_usage: int
    states: list[GrantState]

    @property
    def available(self) -> int:
        return self.balance - self.pending_usage

    def as_json(self) -> dict:
        currency = self.customer.currency
        return {
            "currency": currency,
            "balance": format(to_major(self.balance, currency), "f"),
            "pending_usage": format(to_major(self.pending_usage, currency), "f"),
            "available": format(to_major(self.available, currency), "f"),
            "grants": [grant_json(state) for state in self.states],
        }


def grant_json(state: GrantState) -> dict:
    grant = state.grant
    currency = grant.currency
    return {
        "id": str(grant.pk),
        "amount": format(to_major(grant.amount, currency), "f"),
        "remaining": format(to_major(state.remaining, currency), "f"),
        "priority": grant.priority,
        "effective_at": format_rfc3339(grant.effective_at),
        "expires_at": format_rfc3339(grant.expires_at) if grant.expires_at else None,
        "applies_to": list(grant.applies_to or []),
        "source": grant.source,
        "description": grant.description,
        "status": grant_status(state),
    }


def grant_status(state: GrantState, at: dt.datetime | None = None) -> str:
    at = at or timezone.now()
    grant = state.grant
    if grant.voided_at is not None:
        return "void"
    if not state.available:
        return "pending"
    if grant.expires_at is not None and grant.expires_at <= at:
        return "expired"
    if grant.effective_at > at:
        return "scheduled"
    return "active" if state.remaining > 0 else "used"


def customer_credits(customer: Customer, at: dt.datetime) -> CustomerCredits:
    states = grant_states(customer.pk)
    return CustomerCredits(customer, balance_at(states, at), pending_usage(customer, at), states)


# --- the gateway's check ---------------------------------------------------------------------------------

def balance_subquery(customer: str) -> str:
    """The live balance (minor units) of the customer whose id is the SQL expression ``customer``, at ``%(at)s``: a
    scalar subquery, which the gateway's customer statement embeds (:func:`customers.hooks.register_credit_provider`)
    so that a credit mode's check needs no statement of its own."""
    # ``customer`` is SQL the code names (a column or a placeholder), never a value.
    return f"""(SELECT COALESCE(SUM(e.amount), 0)
               FROM credits_ledgerentry e JOIN credits_creditgrant g ON g.id = e.grant_id
               WHERE g.customer_id = {customer} AND g.voided_at IS NULL AND g.effective_at <= %(at)s
                 AND (g.expires_at IS NULL OR g.expires_at > %(at)s))"""  # noqa: S608


_BALANCE_SQL = "SELECT " + balance_subquery("%(customer)s")


def gateway_balance(customer_id: int, at: dt.datetime) -> int:
    """The live balance (minor units) for an entitlement check, in one statement; registered into customers."""
    with prepared_cursor() as cursor:
        cursor.execute(_BALANCE_SQL, {"customer": customer_id, "at": db_datetime(at)})
        return int(cursor.fetchone()[0] or 0)
