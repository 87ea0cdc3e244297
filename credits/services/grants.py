"""Grants: create, activate (a purchase paid), void, adjust, expire."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from catalog.models import Feature
from customers.models import Customer

from ..hooks import purchase_handler
from ..models import CreditGrant, LedgerEntry
from .locking import lock_customer
from .low_balance import credits_low_check

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# What a bigint column holds.
MAX_AMOUNT = 2**63 - 1
MAX_REASON = 500


class CreditError(ValueError):
    """A refused credits write; ``errors`` maps each field to its problem (nothing was written)."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{key}: {value}" for key, value in errors.items()))


def remaining_of(grant_id: int) -> int:
    return LedgerEntry.objects.filter(grant_id=grant_id).aggregate(total=Sum("amount"))["total"] or 0


def _label(actor: User | None, label: str) -> str:
    return (label or (actor.get_username() if actor is not None else "system"))[:150]


def grant_problems(*, customer: Customer, amount: object, currency: str | None, effective_at: dt.datetime,
                   expires_at: dt.datetime | None, applies_to: Sequence[str], source: str) -> dict[str, str]:
    errors: dict[str, str] = {}
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        errors["amount"] = "the amount must be more than zero"
    elif amount > MAX_AMOUNT:
        errors["amount"] = "the amount is too large"
    if currency is not None and currency != customer.currency:
        errors["currency"] = f"the customer is billed in {customer.currency}, not {currency}"
    if expires_at is not None and expires_at <= effective_at:
        errors["expires_at"] = "the expiry must be after the effective time"
    if source not in CreditGrant.Source.values:
        errors["source"] = f"unknown source {source!r} (one of {', '.join(CreditGrant.Source.values)})"
    keys = list(applies_to)
    if any(not isinstance(key, str) for key in keys):
        errors["applies_to"] = "applies_to is a list of feature keys"
    else:
        known = set(Feature.objects.filter(key__in=keys).values_list("key", flat=True))
        unknown = [key for key in keys if key not in known]
        if unknown:
            errors["applies_to"] = "unknown feature " + ", ".join(repr(key) for key in unknown)
    return errors


@transaction.atomic
def grant_create(
    *,
    customer: Customer,
    amount: int,
    currency: str | None = None,
    priority: int = 100,
    effective_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    applies_to: Sequence[str] = (),
    source: str = CreditGrant.Source.MANUAL,
    description: str = "",
    available: bool = True,
    recurring_key: str | None = None,
    purchase_invoice_id: int | None = None,
    actor: User | None = None,
    label: str = "",
    now: dt.datetime | None = None,
) -> CreditGrant:
    """A grant of ``amount`` minor units in the customer's currency. With ``available`` its ``grant`` entry is
    written at once (at its effective time); otherwise it waits for :func:`grant_activate` (a purchase paid).
    Raises :class:`CreditError` (nothing written) for a non-positive amount, another currency, an expiry not after
    the effective time, an unknown source or feature."""
    now = now or timezone.now()
    effective_at = effective_at or now
    applies_to = list(dict.fromkeys(applies_to))
    errors = grant_problems(customer=customer, amount=amount, currency=currency, effective_at=effective_at,
                            expires_at=expires_at, applies_to=applies_to, source=source)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 2**31 - 1:
        errors["priority"] = "the priority is a whole number from 0"
    if errors:
        raise CreditError(errors)
    lock_customer(customer.pk)
    grant = CreditGrant.objects.create(
        customer=customer, currency=customer.currency, amount=amount, priority=priority, effective_at=effective_at,
        expires_at=expires_at, applies_to=applies_to, source=source, description=description[:500],
        recurring_key=recurring_key, purchase_invoice_id=purchase_invoice_id, created_by=actor,
        created_by_label=_label(actor, label))
    if available:
        _write_grant_entry(grant, actor=actor, label=label, at=effective_at)
        credits_low_check(customer_id=customer.pk, now=now)  # more credits may re-arm the low-credit alert
    return grant


def grant_bought_or_created(*, customer: Customer, amount: int, source: str = CreditGrant.Source.MANUAL,
                            available_immediately: bool = False, currency: str | None = None,
                            effective_at: dt.datetime | None = None, priority: int = 100,
                            expires_at: dt.datetime | None = None, applies_to: Sequence[str] = (),
                            description: str = "", actor: User | None = None, label: str = "") -> CreditGrant:
    """A grant typed by staff or sent to the API: a ``purchased`` one is a top-up billed by the registered
    purchase handler (invoicing: its own invoice, available when paid or at once); any other is granted as is."""
    buy = purchase_handler()
    if source == CreditGrant.Source.PURCHASED and buy is not None:
        errors = grant_problems(customer=customer, amount=amount, currency=currency,
                                effective_at=effective_at or timezone.now(), expires_at=expires_at,
                                applies_to=applies_to, source=source)
        if errors:
            raise CreditError(errors)
        return buy(customer=customer, amount=amount, available_immediately=available_immediately, priority=priority,
                   expires_at=expires_at, applies_to=list(applies_to), description=description, actor=actor,
                   label=label)
    return grant_create(customer=customer, amount=amount, currency=currency, priority=priority,
                        effective_at=effective_at, expires_at=expires_at, applies_to=applies_to, source=source,
                        description=description, actor=actor, label=label)


def _write_grant_entry(grant: CreditGrant, *, actor: User | None, label: str, at: dt.datetime) -> None:
    LedgerEntry.objects.create(customer_id=grant.customer_id, grant=grant, kind=LedgerEntry.Kind.GRANT,
                               amount=grant.amount, at=at, actor=actor, actor_label=_label(actor, label),
                               reason=grant.description or grant.get_source_display())


@transaction.atomic
def grant_activate(*, grant: CreditGrant, actor: User | None = None, label: str = "",
                   now: dt.datetime | None = None) -> bool:
    """Make a purchased grant's credits available (its invoice was paid). Once: False when it already was, or
    was voided."""
    now = now or timezone.now()
    lock_customer(grant.customer_id)
    grant = CreditGrant.objects.get(pk=grant.pk)
    if grant.voided_at is not None or grant.entries.filter(kind=LedgerEntry.Kind.GRANT).exists():
        return False
    _write_grant_entry(grant, actor=actor, label=label, at=max(now, grant.effective_at))
    credits_low_check(customer_id=grant.customer_id, now=now)
    return True


@transaction.atomic
def grant_void(*, grant: CreditGrant, reason: str = "", actor: User | None = None, label: str = "",
               now: dt.datetime | None = None) -> CreditGrant:
    """Void what is left of a grant (a ``void`` entry); a purchase not yet paid never becomes available.
    Voiding twice is refused."""
    now = now or timezone.now()
    lock_customer(grant.customer_id)
    grant = CreditGrant.objects.get(pk=grant.pk)
    if grant.voided_at is not None:
        raise CreditError({"grant": f"grant #{grant.pk} is already void"})
    remaining = remaining_of(grant.pk)
    if remaining > 0:
        LedgerEntry.objects.create(customer_id=grant.customer_id, grant=grant, kind=LedgerEntry.Kind.VOID,
                                   amount=-remaining, at=now, actor=actor, actor_label=_label(actor, label),
                                   reason=(reason or "grant voided")[:MAX_REASON])
    grant.voided_at = now
    grant.save(update_fields=["voided_at"])
    credits_low_check(customer_id=grant.customer_id, now=now)
    return grant


@transaction.atomic
def grant_adjust(*, grant: CreditGrant, amount: int, reason: str, actor: User | None = None, label: str = "",
                 now: dt.datetime | None = None) -> LedgerEntry:
    """A manual correction of a grant's remainder (``amount`` minor units, either sign, not zero), with a
    required reason; the remainder never goes below zero. Not on a void or expired grant."""
    now = now or timezone.now()
    errors: dict[str, str] = {}
    if not str(reason or "").strip():
        errors["reason"] = "a reason is required"
    if isinstance(amount, bool) or not isinstance(amount, int) or amount == 0:
        errors["amount"] = "the adjustment is a non-zero amount"
    elif abs(amount) > MAX_AMOUNT:
        errors["amount"] = "the amount is too large"
    if errors:
        raise CreditError(errors)
    lock_customer(grant.customer_id)
    grant = CreditGrant.objects.get(pk=grant.pk)
    if grant.voided_at is not None:
        raise CreditError({"grant": f"grant #{grant.pk} is void"})
    if grant.expires_at is not None and grant.expires_at <= now:
        raise CreditError({"grant": f"grant #{grant.pk} has expired"})
    remaining = remaining_of(grant.pk)
    if not grant.entries.filter(kind=LedgerEntry.Kind.GRANT).exists():
        raise CreditError({"grant": f"grant #{grant.pk} is not available yet (its purchase is not paid)"})
    if remaining + amount < 0:
        raise CreditError({"amount": f"only {remaining} minor units are left on grant #{grant.pk}"})
    if remaining + amount > MAX_AMOUNT:
        raise CreditError({"amount": "the amount is too large"})
    entry = LedgerEntry.objects.create(customer_id=grant.customer_id, grant=grant,
                                       kind=LedgerEntry.Kind.ADJUSTMENT, amount=amount, at=now, actor=actor,
                                       actor_label=_label(actor, label), reason=reason.strip()[:MAX_REASON])
    credits_low_check(customer_id=grant.customer_id, now=now)
    return entry


def expiry_delay() -> dt.timedelta:
    """How long after its expiry a grant's remainder is written off: the close of the period it covered (at the
    period's end plus the collection grace period) may still burn it for that period's usage."""
    return dt.timedelta(seconds=settings.CREDITS_EXPIRY_DELAY_SECONDS)


def grants_expire(*, now: dt.datetime | None = None) -> int:
    """The beat job: an ``expiry`` entry (at the grant's expiry) for the remainder of every grant whose expiry
    is :func:`expiry_delay` past, once (a grant with nothing left gets none). Returns how many were written."""
    now = now or timezone.now()
    written = 0
    candidates = (CreditGrant.objects.filter(expires_at__lte=now - expiry_delay(), voided_at__isnull=True)
                  .annotate(left=Sum("entries__amount")).filter(left__gt=0)
                  .values_list("pk", "customer_id"))
    for grant_id, customer_id in list(candidates):
        with transaction.atomic():
            lock_customer(customer_id)
            remaining = remaining_of(grant_id)
            if remaining <= 0:
                continue  # a concurrent run expired it, or a burn used it
            expires_at = CreditGrant.objects.values_list("expires_at", flat=True).get(pk=grant_id)
            LedgerEntry.objects.create(customer_id=customer_id, grant_id=grant_id, kind=LedgerEntry.Kind.EXPIRY,
                                       amount=-remaining, at=expires_at or now, actor_label="expiry",
                                       reason="expired")
            credits_low_check(customer_id=customer_id, now=now)
            written += 1
    return written
