"""Credit top-ups: buying prepaid credits. A purchase is a grant (source ``purchased``) and its own invoice, issued
at once, with one "Credit top-up" line; the credits are available when that invoice is paid (its ``paid``
transition activates the grant), or at once with ``available_immediately``. Voiding the invoice voids the grant
(what is left of it).

**Auto top-up** (:class:`credits.models.AutoTopUp`): when the customer's live credits (``available``: balance less
the current period's usage not yet invoiced) fall below the threshold, buy the configured amount — once per
crossing (not while an earlier auto top-up is still unpaid), at most ``max_per_period`` times a calendar month; an
``AutoTopUpRun`` row unique per customer, month and sequence number makes two closes that cross at once buy once.
Checked after each close of the customer's cycles and by a beat job between cycles.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.money import format_major, to_major
from credits.models import AutoTopUp, AutoTopUpRun, CreditGrant, LedgerEntry
from credits.selectors import customer_credits
from credits.services.grants import grant_create
from customers.models import Customer

from ..models import Invoice, InvoiceEvent, InvoiceLine
from .lifecycle import lock_customer_billing, schedule_push, stamp_issued

if TYPE_CHECKING:
    from django.contrib.auth.models import User


@transaction.atomic
def credits_top_up(*, customer: Customer, amount: int, available_immediately: bool = False, priority: int = 100,
                   expires_at: dt.datetime | None = None, applies_to: list[str] | None = None,
                   description: str = "", actor: User | None = None, label: str = "",
                   now: dt.datetime | None = None) -> tuple[CreditGrant, Invoice]:
    """Buy ``amount`` minor units of credits: the grant and its issued invoice (pushed to Stripe as any invoice).
    Raises :class:`credits.services.grants.CreditError` for a bad amount or expiry (nothing written)."""
    now = now or timezone.now()
    lock_customer_billing(customer.pk)
    text = description or "Credit top-up"
    grant = grant_create(customer=customer, amount=amount, priority=priority, effective_at=now, expires_at=expires_at,
                         applies_to=applies_to or [], source=CreditGrant.Source.PURCHASED, description=text,
                         available=available_immediately, actor=actor, label=label, now=now)
    invoice = Invoice(customer=customer, subscription=None, cycle=None, currency=customer.currency,
                      period_start=now, period_end=now, subtotal=amount, total=amount)
    stamp_issued(invoice, now)
    invoice.save(force_insert=True)
    InvoiceLine.objects.create(
        invoice=invoice, subscription=None, position=0, kind=InvoiceLine.Kind.CREDIT_TOP_UP, rate_card=None,
        rate_card_key="", grant=grant, period_start=now, period_end=now, quantity=1,
        unit_price=to_major(amount, customer.currency), amount=amount,
        description=f"{text}: {format_major(amount, customer.currency)} {customer.currency} of prepaid credits "
                    f"(grant #{grant.pk})")
    CreditGrant.objects.filter(pk=grant.pk).update(purchase_invoice_id=invoice.pk)
    grant.purchase_invoice_id = invoice.pk
    who = label or (actor.get_username() if actor is not None else "system")
    InvoiceEvent.objects.bulk_create([
        InvoiceEvent(invoice=invoice, action="drafted", actor=actor, actor_label=who,
                     detail=f"credit top-up #{grant.pk}"),
        InvoiceEvent(invoice=invoice, action="issued", actor=actor, actor_label=who,
                     detail=f"number {invoice.number}"),
    ])
    schedule_push(invoice)
    return grant, invoice


def auto_top_up(*, customer_id: int, now: dt.datetime | None = None, label: str = "auto top-up",
                ) -> tuple[CreditGrant, Invoice] | None:
    """Inside a transaction holding the customer's billing lock (a close), or alone: buy the customer's auto
    top-up if its live credits are below the threshold (see the module). None when nothing was bought."""
    now = now or timezone.now()
    with transaction.atomic():
        lock_customer_billing(customer_id)
        config = AutoTopUp.objects.select_related("customer").filter(customer_id=customer_id, enabled=True).first()
        if config is None:
            return None
        if customer_credits(config.customer, now).available >= config.threshold:
            return None
        unpaid = (CreditGrant.objects.filter(customer_id=customer_id, auto_top_up_run__isnull=False,
                                             voided_at__isnull=True)
                  .exclude(entries__kind=LedgerEntry.Kind.GRANT))
        if unpaid.exists():
            return None  # the same crossing: its top-up is not paid yet
        period = f"{now:%Y-%m}"
        bought = AutoTopUpRun.objects.filter(customer_id=customer_id, period=period).count()
        if bought >= config.max_per_period:
            return None
        try:
            with transaction.atomic():
                grant, invoice = credits_top_up(customer=config.customer, amount=config.amount,
                                                available_immediately=config.available_immediately,
                                                priority=config.priority, description="Auto top-up", label=label,
                                                now=now)
                AutoTopUpRun.objects.create(customer_id=customer_id, period=period, sequence=bought + 1, grant=grant)
        except IntegrityError:
            return None  # another run bought this one
        return grant, invoice


def auto_top_ups(*, now: dt.datetime | None = None) -> int:
    """The beat job: check every enabled auto top-up (credits used at the gateway between cycles)."""
    now = now or timezone.now()
    bought = 0
    for customer_id in list(AutoTopUp.objects.filter(enabled=True).order_by("customer_id")
                            .values_list("customer_id", flat=True)):
        if auto_top_up(customer_id=customer_id, now=now) is not None:
            bought += 1
    return bought


def credits_buy(**kwargs: Any) -> CreditGrant:
    """The purchase handler registered into ``credits.hooks``: a top-up, returning its grant."""
    return credits_top_up(**kwargs)[0]
