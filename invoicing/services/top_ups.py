"""Credit top-ups: buying prepaid credits. A purchase is a grant (source ``purchased``) and a "Credit top-up" invoice
line (kind ``credit_top_up``, naming the grant): on its own invoice, issued at once, when bought between cycles (the
API, the admin, the auto top-up beat job); on the invoice a close issues when an auto top-up fires within that close.
The credits are available when the invoice carrying the line is paid (its ``paid`` transition activates the grant),
or at once with ``available_immediately``. Voiding that invoice voids the grant (what is left of it).

On a cycle's invoice the line comes after the usage lines and the "Credits applied" lines: credits never pay for
the purchase of credits, and the line has no subscription, so the re-rating rule never counts it as billed usage.
It only adds to the invoice's subtotal and total (which therefore never go below zero).

**Auto top-up** (:class:`credits.models.AutoTopUp`): when the customer's live credits (``available``: balance less
the current period's usage not yet invoiced) fall below the threshold, buy the configured amount — once per
crossing (not while an earlier auto top-up is still unpaid), at most ``max_per_period`` times a calendar month; an
``AutoTopUpRun`` row unique per customer, month and sequence number makes two closes that cross at once buy once.
Checked within each close of the customer's cycles (after the credits that close burnt) and by a beat job between
cycles.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from catalog.money import format_major, to_major
from credits.models import AutoTopUp, AutoTopUpRun, CreditGrant, LedgerEntry, LowBalanceAlert
from credits.selectors import customer_credits
from credits.services.grants import grant_create
from credits.services.low_balance import credits_low_check
from customers.models import Customer

from ..models import Invoice, InvoiceEvent, InvoiceLine
from .lifecycle import MAX_AMOUNT, lock_customer_billing, schedule_push, stamp_issued

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def _can_carry(invoice: Invoice | None, customer: Customer, amount: int) -> bool:
    """Whether a top-up can be a line of this (cycle) invoice: same currency, not yet final, room in its total."""
    return (invoice is not None and invoice.pk is not None and invoice.customer_id == customer.pk
            and invoice.currency == customer.currency
            and invoice.status in (Invoice.Status.DRAFT, Invoice.Status.ISSUED) and invoice.stripe_invoice_id == ""
            and invoice.subtotal + amount <= MAX_AMOUNT and invoice.total + amount <= MAX_AMOUNT)


@transaction.atomic
def credits_top_up(*, customer: Customer, amount: int, available_immediately: bool = False, priority: int = 100,
                   expires_at: dt.datetime | None = None, applies_to: list[str] | None = None,
                   description: str = "", actor: User | None = None, label: str = "",
                   now: dt.datetime | None = None, invoice: Invoice | None = None) -> tuple[CreditGrant, Invoice]:
    """Buy ``amount`` minor units of credits: the grant and the invoice carrying its "Credit top-up" line — its own,
    issued (pushed to Stripe as any invoice), or ``invoice``, the invoice a close is storing in this transaction
    (the line is added after its other lines and its totals grow by ``amount``; when it cannot carry the line —
    another currency — the top-up gets its own invoice). Raises :class:`credits.services.grants.CreditError` for
    a bad amount or expiry (nothing written)."""
    now = now or timezone.now()
    lock_customer_billing(customer.pk)
    text = description or "Credit top-up"
    grant = grant_create(customer=customer, amount=amount, priority=priority, effective_at=now, expires_at=expires_at,
                         applies_to=applies_to or [], source=CreditGrant.Source.PURCHASED, description=text,
                         available=available_immediately, actor=actor, label=label, now=now)
    who = label or (actor.get_username() if actor is not None else "system")
    own = not _can_carry(invoice, customer, amount)
    if own or invoice is None:
        invoice = Invoice(customer=customer, subscription=None, cycle=None, currency=customer.currency,
                          period_start=now, period_end=now, subtotal=amount, total=amount)
        stamp_issued(invoice, now)
        invoice.save(force_insert=True)
        position = 0
    else:
        position = (invoice.lines.aggregate(last=Max("position"))["last"] or 0) + 1
        invoice.subtotal += amount
        invoice.total += amount
        invoice.save(update_fields=["subtotal", "total"])
    InvoiceLine.objects.create(
        invoice=invoice, subscription=None, position=position, kind=InvoiceLine.Kind.CREDIT_TOP_UP, rate_card=None,
        rate_card_key="", grant=grant, period_start=now, period_end=now, quantity=1,
        unit_price=to_major(amount, customer.currency), amount=amount,
        description=f"{text}: {format_major(amount, customer.currency)} {customer.currency} of prepaid credits "
                    f"(grant #{grant.pk})")
    CreditGrant.objects.filter(pk=grant.pk).update(purchase_invoice_id=invoice.pk)
    grant.purchase_invoice_id = invoice.pk
    if own:
        InvoiceEvent.objects.bulk_create([
            InvoiceEvent(invoice=invoice, action="drafted", actor=actor, actor_label=who,
                         detail=f"credit top-up #{grant.pk}"),
            InvoiceEvent(invoice=invoice, action="issued", actor=actor, actor_label=who,
                         detail=f"number {invoice.number}"),
        ])
        schedule_push(invoice)
    else:  # the close that stores this invoice logs, issues and pushes it
        InvoiceEvent.objects.create(invoice=invoice, action="top-up", actor=actor, actor_label=who,
                                    detail=f"credit top-up #{grant.pk}: {format_major(amount, customer.currency)} "
                                           f"{customer.currency}")
    return grant, invoice


def auto_top_up(*, customer_id: int, now: dt.datetime | None = None, label: str = "auto top-up",
                invoice: Invoice | None = None) -> tuple[CreditGrant, Invoice] | None:
    """Inside a transaction holding the customer's billing lock (a close), or alone: buy the customer's auto
    top-up if its live credits are below the threshold (see the module). ``invoice``: the invoice the close is
    storing for this customer, which then carries the top-up line. None when nothing was bought."""
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
        totals = (invoice.subtotal, invoice.total) if invoice is not None else None
        try:
            with transaction.atomic():
                grant, carrier = credits_top_up(customer=config.customer, amount=config.amount,
                                                available_immediately=config.available_immediately,
                                                priority=config.priority, description="Auto top-up", label=label,
                                                now=now, invoice=invoice)
                AutoTopUpRun.objects.create(customer_id=customer_id, period=period, sequence=bought + 1, grant=grant)
        except IntegrityError:  # another run bought this one: the savepoint took the line back, and so do we
            if invoice is not None and totals is not None:
                invoice.subtotal, invoice.total = totals
            return None
        return grant, carrier


def auto_top_ups(*, now: dt.datetime | None = None) -> int:
    """The beat job: check every enabled auto top-up and low-credit alert (credits used at the gateway between
    cycles lower ``available``). Returns how many top-ups were bought."""
    now = now or timezone.now()
    bought = 0
    topping = set(AutoTopUp.objects.filter(enabled=True).values_list("customer_id", flat=True))
    alerted = set(LowBalanceAlert.objects.filter(enabled=True).values_list("customer_id", flat=True))
    for customer_id in sorted(topping | alerted):
        with transaction.atomic():
            if customer_id in topping and auto_top_up(customer_id=customer_id, now=now) is not None:
                bought += 1
            if customer_id in alerted:
                credits_low_check(customer_id=customer_id, now=now)
    return bought


def credits_buy(**kwargs: Any) -> CreditGrant:
    """The purchase handler registered into ``credits.hooks``: a top-up, returning its grant."""
    return credits_top_up(**kwargs)[0]
