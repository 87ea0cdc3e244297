"""Invoice lifecycle: draft → issued → paid | void | uncollectible, gapless numbers, the audit log.

Only legal transitions happen (the same table serves the admin actions and Stripe's webhooks); issued
invoices and their lines never change. Issuing assigns the next number of its sequence inside the issuing
transaction (the sequence row is locked), so numbers are unique and gapless.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.utils import timezone

from ..models import Invoice, InvoiceEvent, InvoiceNumberSequence

S = Invoice.Status
LEGAL = {
    S.DRAFT: {S.ISSUED, S.VOID},
    S.ISSUED: {S.PAID, S.VOID, S.UNCOLLECTIBLE},
    S.UNCOLLECTIBLE: {S.PAID, S.VOID},
    S.PAID: set(),
    S.VOID: set(),
}


class InvoiceTransitionError(ValueError):
    pass


def is_legal(current: str, target: str) -> bool:
    return target in LEGAL.get(current, set())


def invoice_log(invoice: Invoice, action: str, *, actor=None, label: str = "", detail: str = "") -> None:
    InvoiceEvent.objects.create(
        invoice=invoice,
        action=action,
        detail=detail,
        actor=actor,
        actor_label=label or (actor.get_username() if actor else "system"),
    )


def next_invoice_number(at: dt.datetime) -> str:
    """Inside the caller's transaction: take the next number of the (prefix, year) sequence.

    One upsert: it creates the sequence row or increments it, and the row stays locked until the caller's
    transaction ends, so concurrent issuers queue and a rolled-back issue leaves no gap."""
    prefix, year = settings.INVOICE_NUMBER_PREFIX, at.year
    table = InvoiceNumberSequence._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (prefix, year, last_number) VALUES (%s, %s, 1) "  # noqa: S608 - model table name
            f"ON CONFLICT (prefix, year) DO UPDATE SET last_number = {table}.last_number + 1 RETURNING last_number",
            [prefix, year],
        )
        number = cursor.fetchone()[0]
    return f"{prefix}-{year}-{number:06d}"


def stamp_issued(invoice: Invoice, now: dt.datetime) -> None:
    """Number, status, dates and sync state of an invoice being issued (inside the issuing transaction).
    The caller saves it and, once it has an id, calls ``stripe_sync.schedule_push``."""
    from ..stripe_sync import new_sync_status

    invoice.number = next_invoice_number(now)
    invoice.status, invoice.issued_at = S.ISSUED, now
    days = invoice.customer.days_until_due if invoice.customer.collection_method == "send_invoice" else 0
    invoice.due_at = now + dt.timedelta(days=days or 0)
    invoice.sync_status, invoice.sync_error = new_sync_status(), ""


ISSUE_FIELDS = ["subtotal", "total", "number", "status", "issued_at", "due_at", "sync_status", "sync_error"]


def _locked(invoice: Invoice) -> Invoice:
    return Invoice.objects.select_for_update().select_related("customer").get(pk=invoice.pk)


def _require(invoice: Invoice, target: str) -> None:
    if not is_legal(invoice.status, target):
        raise InvoiceTransitionError(f"invoice {invoice} is {invoice.status}; it cannot become {target}")


@transaction.atomic
def invoice_issue(*, invoice: Invoice, actor=None, label: str = "", now: dt.datetime | None = None) -> Invoice:
    invoice = _locked(invoice)
    if invoice.status == S.ISSUED:
        return invoice  # a rerun of a close that already issued it
    _require(invoice, S.ISSUED)
    now = now or timezone.now()
    totals = invoice.lines.aggregate(total=Sum("amount"))["total"] or 0
    invoice.subtotal = invoice.total = totals
    stamp_issued(invoice, now)
    invoice.save(update_fields=ISSUE_FIELDS)
    from ..stripe_sync import schedule_push

    schedule_push(invoice)
    invoice_log(invoice, "issued", actor=actor, label=label, detail=f"number {invoice.number}")
    from ..models import CycleClose

    CycleClose.objects.filter(invoice=invoice, state=CycleClose.State.HELD).update(state=CycleClose.State.ISSUED)
    return invoice


@transaction.atomic
def invoice_void(*, invoice: Invoice, actor=None, label: str = "", reason: str = "") -> Invoice:
    invoice = _locked(invoice)
    _require(invoice, S.VOID)
    was_issued = invoice.status != S.DRAFT
    invoice.status, invoice.voided_at = S.VOID, timezone.now()
    invoice.save(update_fields=["status", "voided_at"])
    invoice_log(invoice, "voided", actor=actor, label=label, detail=reason)
    if was_issued:
        from ..stripe_sync import queue_void

        queue_void(invoice)
    return invoice


@transaction.atomic
def invoice_mark_paid(
    *, invoice: Invoice, actor=None, label: str = "", paid_at: dt.datetime | None = None, detail: str = ""
) -> Invoice:
    invoice = _locked(invoice)
    _require(invoice, S.PAID)
    invoice.status, invoice.paid_at = S.PAID, paid_at or timezone.now()
    invoice.save(update_fields=["status", "paid_at"])
    invoice_log(invoice, "paid", actor=actor, label=label, detail=detail)
    return invoice


@transaction.atomic
def invoice_mark_uncollectible(*, invoice: Invoice, actor=None, label: str = "", detail: str = "") -> Invoice:
    invoice = _locked(invoice)
    _require(invoice, S.UNCOLLECTIBLE)
    invoice.status = S.UNCOLLECTIBLE
    invoice.save(update_fields=["status"])
    invoice_log(invoice, "uncollectible", actor=actor, label=label, detail=detail)
    return invoice
