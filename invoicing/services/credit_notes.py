"""Credit notes: credits to a customer against the issued invoice they correct, never negative invoices.

A close that owes the customer more than its invoice bills (an in-advance fee of a period cut short by a
cancellation or plan change, usage rated lower than billed) issues the credit as re-rating credit notes, each
against an invoice that billed that rate card and period, never for more than that invoice has left to credit.
Finance staff can also issue a manual correction (``adjustment``) against an issued invoice. Each credit note
is numbered in its own gapless sequence when issued (``CN-2026-000001``), is pushed to Stripe as a credit note on
the Stripe invoice, and changes only by a void. Voiding an invoice voids its credit notes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from common.queue import enqueue_on_commit

from ..models import CreditNote, CreditNoteLine, Invoice
from ..stripe_gateway import is_sandbox
from .lines import Billed, DraftLine, ItemKey, split_line
from .log import invoice_log
from .numbering import next_credit_note_number

if TYPE_CHECKING:
    from django.contrib.auth.models import User

CREDITABLE_STATUSES = (Invoice.Status.ISSUED, Invoice.Status.PAID, Invoice.Status.UNCOLLECTIBLE)


class CreditNoteError(ValueError):
    pass


@dataclass
class CreditDraftLine:
    line: DraftLine | None  # the re-rating line it credits (None for a manual adjustment)
    amount: int  # positive minor units
    description: str


def creditable_amounts(invoice_ids: list[int]) -> dict[int, int]:
    """Invoice id → what it has left to credit, for issued ones: what it billed (its subtotal: prepaid credits may
    have paid part of it) less its issued credit notes. A re-rating credit reverses a charge whoever paid it."""
    invoices = dict(Invoice.objects.filter(pk__in=invoice_ids, status__in=CREDITABLE_STATUSES)
                    .values_list("pk", "subtotal"))
    credited = dict(CreditNote.objects.filter(invoice_id__in=invoices, status=CreditNote.Status.ISSUED)
                    .values("invoice_id").annotate(total=Sum("total")).values_list("invoice_id", "total"))
    return {pk: total - (credited.get(pk) or 0) for pk, total in invoices.items()}


def allocate_credits(credit_lines: list[DraftLine], billed: dict[ItemKey, Billed], *,
                     fallback_invoice_ids: list[int]) -> dict[int, list[CreditDraftLine]]:
    """Invoice id → the credit note lines against it. Each credit goes first to the invoices that billed its
    rate card and period (newest first), never beyond what each billed for it less what earlier lines of this
    allocation credited it, then to the customer's other issued invoices (``fallback_invoice_ids``, newest
    first); never beyond what an invoice has left to credit. Raises :class:`CreditNoteError` when a credit
    cannot be placed."""
    candidates = sorted({pk for line in credit_lines for pk in billed.get(line.item_key, Billed()).by_invoice}
                        | set(fallback_invoice_ids), reverse=True)
    left = creditable_amounts(candidates)
    shares_left = {key: dict(entry.by_invoice) for key, entry in billed.items()}
    allocation: dict[int, list[CreditDraftLine]] = {}
    for line in credit_lines:
        needed = -line.amount
        shares = shares_left.setdefault(line.item_key, {})
        billed_it = sorted((pk for pk, share in shares.items() if share > 0), reverse=True)
        order: list[tuple[int, bool]] = [(pk, True) for pk in billed_it]
        # the customer's other invoices: not one that billed this item (it is never credited beyond its share)
        order += [(pk, False) for pk in sorted(fallback_invoice_ids, reverse=True) if pk not in shares]
        for invoice_id, billed_item in order:
            if needed <= 0:
                break
            room = min(left.get(invoice_id, 0), shares[invoice_id]) if billed_item else left.get(invoice_id, 0)
            take = min(needed, room)
            if take <= 0:
                continue
            part = line if take == -line.amount else split_line(line, -take)[0]  # its share of the quantity
            allocation.setdefault(invoice_id, []).append(CreditDraftLine(part, take, line.description))
            left[invoice_id] -= take
            if billed_item:
                shares[invoice_id] -= take
            needed -= take
        if needed > 0:
            raise CreditNoteError(
                f"cannot credit {needed} minor units of {line.description!r}: neither the invoices that billed it "
                "nor the customer's other issued invoices have that much left to credit; credit it by hand"
            )
    return allocation


def _schedule_push(credit_note: CreditNote) -> None:
    if credit_note.sync_status == Invoice.SyncStatus.SYNCING:
        enqueue_on_commit("invoicing.push_credit_note", credit_note_id=credit_note.pk)


def credit_note_issue(*, invoice: Invoice, lines: list[CreditDraftLine], reason: str, now: dt.datetime,
                      actor: User | None = None, label: str = "") -> CreditNote:
    """Inside the caller's transaction: a numbered credit note against ``invoice`` with these lines."""
    total = sum(line.amount for line in lines)
    if total <= 0 or any(line.amount <= 0 for line in lines):
        raise CreditNoteError("a credit note credits a positive amount on every line")
    if invoice.status not in CREDITABLE_STATUSES:
        raise CreditNoteError(f"invoice {invoice} is {invoice.status}: only issued invoices take credit notes")
    credit_note = CreditNote.objects.create(
        invoice=invoice,
        customer_id=invoice.customer_id,
        number=next_credit_note_number(now),
        currency=invoice.currency,
        reason=reason[:2000] or "credit",
        total=total,
        issued_at=now,
        sync_status=Invoice.SyncStatus.SANDBOX if is_sandbox() else Invoice.SyncStatus.SYNCING,
    )
    CreditNoteLine.objects.bulk_create([
        CreditNoteLine(
            credit_note=credit_note,
            position=position,
            kind=CreditNoteLine.Kind.RERATING if item.line is not None else CreditNoteLine.Kind.ADJUSTMENT,
            subscription=item.line.subscription if item.line else None,
            rate_card=item.line.rate_card if item.line else None,
            rate_card_key=item.line.rate_card.key if item.line else "",
            description=item.description[:500],
            period_start=item.line.period_start if item.line else None,
            period_end=item.line.period_end if item.line else None,
            quantity=item.line.quantity if item.line else 1,
            amount=item.amount,
            price_part=item.line.part if item.line else "",
        )
        for position, item in enumerate(lines)
    ])
    invoice_log(invoice, "credit_note_issued", actor=actor, label=label, credit_note=credit_note,
                detail=f"{credit_note.number}: {reason}"[:2000])
    _schedule_push(credit_note)
    return credit_note


@transaction.atomic
def credit_note_create(*, invoice: Invoice, amount: int, reason: str, description: str = "",
                       actor: User | None = None) -> CreditNote:
    """A manual correction of an issued invoice, at most what it has left to credit. It does not change what
    the invoice's periods count as billed (it is not a re-rating), so the next close does not bill it back."""
    invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
    reason = (reason or "").strip()
    if not reason:
        raise CreditNoteError("a credit note needs a reason")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise CreditNoteError("the amount must be positive")
    left = creditable_amounts([invoice.pk]).get(invoice.pk)
    if left is None:
        raise CreditNoteError(f"invoice {invoice} is {invoice.status}: only issued invoices take credit notes")
    if amount > left:
        raise CreditNoteError(f"invoice {invoice} has only {left} minor units left to credit")
    line = CreditDraftLine(None, amount, (description or reason).strip())
    return credit_note_issue(invoice=invoice, lines=[line], reason=reason, now=timezone.now(), actor=actor)


@transaction.atomic
def credit_note_void(*, credit_note: CreditNote, actor: User | None = None, label: str = "",
                     reason: str = "") -> CreditNote:
    credit_note = CreditNote.objects.select_for_update().get(pk=credit_note.pk)
    if credit_note.status == CreditNote.Status.VOID:
        raise CreditNoteError(f"credit note {credit_note} is already void")
    credit_note.status, credit_note.voided_at = CreditNote.Status.VOID, timezone.now()
    credit_note.save(update_fields=["status", "voided_at"])
    invoice_log(credit_note.invoice, "credit_note_voided", actor=actor, label=label, credit_note=credit_note,
                detail=f"{credit_note.number}: {reason}"[:2000])
    if credit_note.stripe_credit_note_id:
        enqueue_on_commit("invoicing.void_credit_note_in_stripe", credit_note_id=credit_note.pk)
    return credit_note
