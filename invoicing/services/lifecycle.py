"""Invoice lifecycle: create, issue, void, reissue, paid, uncollectible — with gapless numbers and the audit log.

draft → issued → paid | void | uncollectible; uncollectible → paid | void. Only these transitions happen (the
same table serves the admin, the API and Stripe's webhooks); issued invoices and their lines never change.
Issuing assigns the next number of its sequence inside the issuing transaction, so numbers are unique and
gapless. Everything that changes what a customer is billed takes the customer's billing lock first
(:func:`lock_customer_billing`), so two closes, a void and a reissue never work from the same stale picture.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from common.announcements import announce
from common.bulk import rows_insert
from common.queue import enqueue_on_commit
from credits.models import CreditGrant
from credits.selectors import CreditUse
from credits.services.burns import credits_burn, credits_return
from credits.services.grants import grant_activate, grant_void
from customers.models import Customer, Subscription

from ..models import CreditNote, CycleClose, Invoice, InvoiceEvent, InvoiceLine
from ..stripe_gateway import is_sandbox
from .credit_notes import allocate_credits, credit_note_issue, credit_note_void
from .credits import CreditsLine, invoice_credits
from .cycles import Cycle, subscription_cycles
from .lines import Billed, DraftLine, ItemKey, cycle_bill, split_credits
from .log import invoice_log
from .numbering import invoice_number_into, next_invoice_number

if TYPE_CHECKING:
    from django.contrib.auth.models import User

S = Invoice.Status
LEGAL: dict[str, set[str]] = {
    S.DRAFT: {S.ISSUED, S.VOID},
    S.ISSUED: {S.PAID, S.VOID, S.UNCOLLECTIBLE},
    S.UNCOLLECTIBLE: {S.PAID, S.VOID},
    S.PAID: set(),
    S.VOID: set(),
}
# What a bigint column holds; amounts beyond it hold the cycle instead of failing the whole close.
MAX_AMOUNT = 2**63 - 1
# PreciseDecimalField is numeric(38, 15): 23 digits before the point.
MAX_QUANTITY = 10**23


class InvoiceTransitionError(ValueError):
    pass


class BillingOverflow(ValueError):
    pass


def is_legal(current: str, target: str) -> bool:
    return target in LEGAL.get(current, set())


def lock_customer_billing(customer_id: int, *, skip_locked: bool = False) -> bool:
    """Inside a transaction: serialize everything that bills this customer. False when ``skip_locked`` and
    another transaction holds it (a concurrent close: leave this customer to it)."""
    rows = Customer.objects.select_for_update(skip_locked=skip_locked).filter(pk=customer_id).values_list("pk")
    return bool(list(rows))


def stamp_issued(invoice: Invoice, now: dt.datetime, *, numbered: bool = True) -> None:
    """Number, status, dates and sync state of an invoice being issued (inside the issuing transaction).
    ``numbered=False`` leaves the number to :func:`number_stored` (the caller takes it later)."""
    if numbered:
        invoice.number = next_invoice_number(now)
    invoice.status, invoice.issued_at = S.ISSUED, now
    days = invoice.customer.days_until_due if invoice.customer.collection_method == "send_invoice" else 0
    invoice.due_at = now + dt.timedelta(days=days or 0)
    invoice.sync_status = Invoice.SyncStatus.SANDBOX if is_sandbox() else Invoice.SyncStatus.SYNCING
    invoice.sync_error = ""


def number_stored(invoice: Invoice) -> None:
    """Inside the issuing transaction, as late as it can be: give a stored issued invoice its number. The number's
    sequence row stays locked until the commit, so concurrent closes queue only for what follows this."""
    if invoice.issued_at is None:
        raise InvoiceTransitionError(f"invoice {invoice} is not issued: it takes no number")
    invoice.number = invoice_number_into(invoice.pk, invoice.issued_at)


def schedule_push(invoice: Invoice) -> None:
    """Inside the issuing transaction, once the invoice has its id: push it to Stripe after the commit."""
    if invoice.sync_status == Invoice.SyncStatus.SYNCING:
        enqueue_on_commit("invoicing.push_invoice", invoice_id=invoice.pk)


def check_fits(lines: Sequence[DraftLine]) -> None:
    """Refuse amounts and quantities the columns cannot hold (raises :class:`BillingOverflow`)."""
    total = sum(line.amount for line in lines)
    for line in lines:
        if abs(line.amount) > MAX_AMOUNT:
            raise BillingOverflow(f"the amount of {line.description!r} ({line.amount} minor units) is too large")
        for value in (line.quantity, line.rated_quantity):
            if value is not None and abs(value) >= MAX_QUANTITY:
                raise BillingOverflow(f"the quantity of {line.description!r} ({value}) is too large to store")
    if abs(total) > MAX_AMOUNT:
        raise BillingOverflow(f"the invoice total ({total} minor units) is too large")


def invoice_create(
    *, subscription: Subscription, cycle: Cycle, lines: Sequence[DraftLine], replaces: Invoice | None = None,
    issue_at: dt.datetime | None = None, actor: User | None = None, label: str = "",
    credits: Sequence[CreditsLine] = (), now: dt.datetime | None = None,
    extend: Callable[[Invoice], object] | None = None,
) -> Invoice:
    """Inside the caller's transaction (customer locked): the invoice of a cycle with its lines and totals, logged
    — a draft, or with ``issue_at`` issued, numbered after its lines, credits and ``extend`` so that the number's
    lock is held for the least of the transaction. Its ``credits`` ("Credits applied" lines) are burnt from their
    grants in the same transaction. ``extend`` (the close's auto top-up and cycle row) is called with the stored
    invoice, not yet numbered, once its credits are burnt and before it is announced: it may add lines after them
    (updating the invoice's totals), so the announcement and the push carry them."""
    check_fits(lines)
    period = cycle.invoice_period
    subtotal = sum(line.amount for line in lines)
    total = subtotal + sum(line.amount for line in credits)
    if issue_at is not None and total < 0:
        raise InvoiceTransitionError(f"a negative invoice ({total}) is never issued")
    invoice = Invoice(
        customer=subscription.customer,
        subscription=subscription,
        cycle=cycle.index,
        currency=subscription.plan.currency,
        period_start=period.start,
        period_end=period.end,
        replaces=replaces,
        subtotal=subtotal,
        total=total,
    )
    if issue_at is not None:  # numbered once everything but the log and the announcement is written (below)
        stamp_issued(invoice, issue_at, numbered=False)
    invoice.save(force_insert=True)
    rows_insert(InvoiceLine, [
        InvoiceLine(
            invoice=invoice,
            subscription=line.subscription,
            position=position,
            kind=line.kind,
            rate_card=line.rate_card,
            rate_card_key=line.rate_card.key,
            feature=line.rate_card.feature,
            description=line.description[:500],
            period_start=line.period_start,
            period_end=line.period_end,
            quantity=line.quantity,
            unit_price=line.unit_price,
            tiers=line.tiers,
            amount=line.amount,
            rated_quantity=line.rated_quantity,
            price_part=line.part,
            dimensions=line.dimensions,
        )
        for position, line in enumerate(lines)
    ])
    credit_rows = InvoiceLine.objects.bulk_create([  # with their ids, which the burns name
        InvoiceLine(invoice=invoice, subscription=line.subscription, position=len(lines) + position,
                    kind=InvoiceLine.Kind.CREDITS_APPLIED, rate_card=None, rate_card_key="", grant=line.grant,
                    description=line.description[:500], period_start=line.period_start, period_end=line.period_end,
                    quantity=line.quantity, amount=line.amount)
        for position, line in enumerate(credits)
    ])
    if credits:
        credits_burn(customer_id=invoice.customer_id, uses=[CreditUse(line.grant, -line.amount) for line in credits],
                     invoice_id=invoice.pk, line_ids=[row.pk for row in credit_rows],
                     at=now or issue_at or timezone.now(), label=label or "close")
    if extend is not None:
        extend(invoice)
    if issue_at is not None:
        number_stored(invoice)
    label = label or (actor.get_username() if actor else "system")
    drafted = f"cycle {cycle.index} of subscription {subscription.pk}" + (f"; reissue of {replaces}" if replaces
                                                                          else "")
    events = [InvoiceEvent(invoice=invoice, action="drafted", actor=actor, actor_label=label, detail=drafted)]
    if issue_at is not None:
        events.append(InvoiceEvent(invoice=invoice, action="issued", actor=actor, actor_label=label,
                                   detail=f"number {invoice.number}"))
        schedule_push(invoice)
        announce("invoice.issued", invoice=invoice)
    rows_insert(InvoiceEvent, events)
    return invoice


def _locked(invoice: Invoice) -> Invoice:
    return Invoice.objects.select_for_update().select_related("customer").get(pk=invoice.pk)


def _require(invoice: Invoice, target: str) -> None:
    if not is_legal(invoice.status, target):
        raise InvoiceTransitionError(f"invoice {invoice} is {invoice.status}; it cannot become {target}")


def issue_locked(invoice: Invoice, *, now: dt.datetime, actor: User | None = None, label: str = "") -> Invoice:
    """Inside the caller's transaction, the invoice row locked: issue a draft."""
    _require(invoice, S.ISSUED)
    totals = invoice.lines.aggregate(
        total=Sum("amount"), credits=Sum("amount", filter=Q(kind=InvoiceLine.Kind.CREDITS_APPLIED)))
    total, credits = totals["total"] or 0, totals["credits"] or 0
    if total < 0:
        raise InvoiceTransitionError(f"invoice {invoice} totals {total}: a negative invoice is never issued")
    invoice.subtotal, invoice.total = total - credits, total
    stamp_issued(invoice, now)
    invoice.save(update_fields=["subtotal", "total", "number", "status", "issued_at", "due_at", "sync_status",
                                "sync_error"])
    schedule_push(invoice)
    invoice_log(invoice, "issued", actor=actor, label=label, detail=f"number {invoice.number}")
    CycleClose.objects.filter(invoice=invoice, state=CycleClose.State.HELD).update(state=CycleClose.State.ISSUED)
    return invoice


@transaction.atomic
def invoice_issue(*, invoice: Invoice, actor: User | None = None, label: str = "",
                  now: dt.datetime | None = None) -> Invoice:
    invoice = _locked(invoice)
    if invoice.status == S.ISSUED:
        return invoice  # a rerun of a close that already issued it
    return issue_locked(invoice, now=now or timezone.now(), actor=actor, label=label)


@transaction.atomic
def invoice_void(*, invoice: Invoice, actor: User | None = None, label: str = "", reason: str = "") -> Invoice:
    """Void: the invoice's lines stop counting as billed (the next close or a reissue bills what is then
    missing), and its credit notes are voided with it."""
    lock_customer_billing(invoice.customer_id)
    invoice = _locked(invoice)
    _require(invoice, S.VOID)
    was_issued = invoice.status != S.DRAFT
    invoice.status, invoice.voided_at = S.VOID, timezone.now()
    invoice.save(update_fields=["status", "voided_at"])
    invoice_log(invoice, "voided", actor=actor, label=label, detail=reason)
    credits_return(customer_id=invoice.customer_id, invoice_id=invoice.pk, actor=actor, label=label,
                   reason=f"invoice {invoice} voided", now=invoice.voided_at)
    for bought in CreditGrant.objects.filter(purchase_invoice_id=invoice.pk, voided_at__isnull=True):
        grant_void(grant=bought, reason=f"its top-up invoice {invoice} was voided", actor=actor, label=label)
    for credit_note in invoice.credit_notes.filter(status=CreditNote.Status.ISSUED):
        credit_note_void(credit_note=credit_note, actor=actor, label=label, reason=f"invoice {invoice} voided")
    if was_issued and not is_sandbox() and invoice.stripe_invoice_id:
        enqueue_on_commit("invoicing.void_invoice_in_stripe", invoice_id=invoice.pk)
    return invoice


@transaction.atomic
def invoice_mark_paid(
    *, invoice: Invoice, actor: User | None = None, label: str = "", paid_at: dt.datetime | None = None,
    detail: str = "",
) -> Invoice:
    invoice = _locked(invoice)
    _require(invoice, S.PAID)
    invoice.status, invoice.paid_at = S.PAID, paid_at or timezone.now()
    invoice.save(update_fields=["status", "paid_at"])
    invoice_log(invoice, "paid", actor=actor, label=label, detail=detail)
    for bought in CreditGrant.objects.filter(purchase_invoice_id=invoice.pk):  # credit top-ups: now available
        grant_activate(grant=bought, actor=actor, label=label or "payment", now=invoice.paid_at)
    return invoice


@transaction.atomic
def invoice_mark_uncollectible(*, invoice: Invoice, actor: User | None = None, label: str = "",
                               detail: str = "") -> Invoice:
    invoice = _locked(invoice)
    _require(invoice, S.UNCOLLECTIBLE)
    invoice.status = S.UNCOLLECTIBLE
    invoice.save(update_fields=["status"])
    invoice_log(invoice, "uncollectible", actor=actor, label=label, detail=detail)
    return invoice


def bill_cycle(
    *, subscription: Subscription, cycle: Cycle, lines: list[DraftLine], billed: dict[ItemKey, Billed],
    now: dt.datetime,
    replaces: Invoice | None = None, actor: User | None = None, label: str = "", has_grants: bool | None = None,
    extend: Callable[[Invoice], object] | None = None,
) -> tuple[Invoice | None, list[CreditNote]]:
    """Inside the caller's transaction (customer locked): store what a cycle bills — the invoice (a draft held
    for review when ``INVOICE_DRAFT_REVIEW_HOURS`` > 0, else issued) unless it has no non-zero line, with the
    prepaid credits that pay it (burnt with it), and the credit notes for credits the invoice cannot carry
    without going negative. ``has_grants``: whether the customer has any credit grant, when the caller read it
    (None: look). ``extend``: see :func:`invoice_create` (not called when no invoice is made)."""
    invoice_lines, credit_lines = split_credits(lines)
    check_fits(lines)
    credit_notes: list[CreditNote] = []
    if credit_lines:
        fallback = list(Invoice.objects.filter(customer_id=subscription.customer_id,
                                               status__in=(S.ISSUED, S.PAID, S.UNCOLLECTIBLE))
                        .order_by("-pk").values_list("pk", flat=True)[:100])
        allocation = allocate_credits(credit_lines, billed, fallback_invoice_ids=fallback)
        for invoice_id, parts in sorted(allocation.items()):
            corrected = Invoice.objects.select_related("customer").get(pk=invoice_id)
            reasons = sorted({part.description for part in parts})
            credit_notes.append(credit_note_issue(invoice=corrected, lines=parts, now=now, actor=actor, label=label,
                                                  reason="; ".join(reasons)))
    has_money = any(line.amount for line in invoice_lines)
    if not invoice_lines or not (has_money or settings.INVOICE_ISSUE_ZERO_TOTAL):
        return None, credit_notes
    issue_at = now if settings.INVOICE_DRAFT_REVIEW_HOURS <= 0 else None
    if has_grants is None:
        has_grants = CreditGrant.objects.filter(customer_id=subscription.customer_id).exists()
    period = cycle.invoice_period
    credits = invoice_credits(subscription, invoice_lines, now=now, period_start=period.start,
                              period_end=period.end) if has_grants else []
    invoice = invoice_create(subscription=subscription, cycle=cycle, lines=invoice_lines, replaces=replaces,
                             issue_at=issue_at, actor=actor, label=label, credits=credits, now=now, extend=extend)
    return invoice, credit_notes


class ReissueError(ValueError):
    pass


@transaction.atomic
def invoice_reissue(*, invoice: Invoice, actor: User | None = None, label: str = "",
                    now: dt.datetime | None = None) -> Invoice:
    """A new invoice for the cycle of a voided invoice: what is then missing for its periods (and any other
    period due), from current usage — the same rule as a close. Issued unless draft review is on."""
    now = now or timezone.now()
    lock_customer_billing(invoice.customer_id)
    invoice = (
        Invoice.objects.select_for_update(of=("self",))
        .select_related("subscription__plan", "subscription__customer", "subscription__previous")
        .get(pk=invoice.pk)
    )
    if invoice.status != S.VOID:
        raise ReissueError(f"invoice {invoice} is {invoice.status}: only a voided invoice can be reissued")
    if invoice.subscription is None or invoice.cycle is None:
        raise ReissueError(f"invoice {invoice} bought credits: buy them again instead of reissuing it")
    if invoice.replaced_by.exclude(status=S.VOID).exists():
        raise ReissueError(f"invoice {invoice} was already reissued")
    if Invoice.objects.filter(subscription=invoice.subscription, cycle=invoice.cycle).exclude(status=S.VOID).exists():
        raise ReissueError(f"cycle {invoice.cycle} of this subscription already has a valid invoice")
    subscription = invoice.subscription
    cycle = next((c for c in subscription_cycles(subscription, until=max(now, invoice.period_end))
                  if c.index == invoice.cycle), None)
    if cycle is None:
        raise ReissueError("the cycle of this invoice no longer exists (the subscription changed)")
    also = frozenset(invoice.lines.values_list("subscription_id", "rate_card_key", "period_start"))
    bill = cycle_bill(subscription, cycle, now=now, also=also)
    new, _ = bill_cycle(subscription=subscription, cycle=cycle, lines=bill.lines, billed=bill.billed, now=now,
                        replaces=invoice, actor=actor, label=label)
    if new is None:
        raise ReissueError(f"nothing is missing for the periods of {invoice}: they are billed on later invoices")
    CycleClose.objects.filter(subscription=subscription, cycle=invoice.cycle).update(invoice=new)
    return new
