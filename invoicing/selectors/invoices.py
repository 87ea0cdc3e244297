"""Reads of invoices and credit notes: lists, one by id or number, and their JSON shapes (also the preview's)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Prefetch, QuerySet

from catalog.money import format_major
from common.time import format_rfc3339

from ..models import CreditNote, CreditNoteLine, Invoice, InvoiceLine
from .previews import Preview

# Bigger than any id this database hands out: a longer run of digits is a number, not an id.
MAX_ID_DIGITS = 18


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _stamp(value) -> str | None:
    return format_rfc3339(value) if value else None


def line_json(line, currency: str) -> dict[str, Any]:
    """One invoice line (stored, or drafted by a preview) in the API's shape; a "Credits applied" line has no rate
    card and names its grant."""
    rate_card = line.rate_card
    if rate_card is None:
        return {
            "kind": line.kind,
            "rate_card": None,
            "name": "Credits applied",
            "feature": None,
            "grant": str(line.grant_id if isinstance(line, InvoiceLine) else line.grant.pk),
            "description": line.description,
            "quantity": _decimal(line.quantity),
            "unit_price": None,
            "amount": format_major(line.amount, currency),
            "period_start": format_rfc3339(line.period_start),
            "period_end": format_rfc3339(line.period_end),
            "tiers": [],
        }
    return {
        "kind": line.kind,
        "rate_card": rate_card.key,
        "name": rate_card.display_name,
        "feature": rate_card.feature.key if rate_card.feature_id else None,
        "description": line.description,
        "quantity": _decimal(line.quantity),
        "unit_price": _decimal(line.unit_price),
        "amount": format_major(line.amount, currency),
        "period_start": format_rfc3339(line.period_start),
        "period_end": format_rfc3339(line.period_end),
        "tiers": line.tiers or [],
        "dimensions": line.dimensions,
    }


def preview_json(preview: Preview) -> dict[str, Any]:
    currency = preview.currency
    body = {
        "customer": preview.customer.key,
        "currency": currency,
        "period_start": _stamp(preview.period_start),
        "period_end": _stamp(preview.period_end),
        "lines": [line_json(line, currency) for line in preview.lines],
        "subtotal": format_major(preview.total, currency),
        "total": format_major(preview.total, currency),
    }
    if preview.credits:
        body["credit_notes"] = [line_json(line, currency) for line in preview.credits]
    if preview.unpriced:  # usage no row of a dimensional price prices: not billed, shown
        body["unpriced"] = [{"rate_card": u.rate_card.key, "period_start": _stamp(u.period.start),
                             "quantity": format(u.usage.quantity, "f"), "warning": u.usage.label,
                             "dimensions": dict(u.usage.values)} for u in preview.unpriced]
    return body


def _document_json(document: Invoice | CreditNote, **after_status: Any) -> dict[str, Any]:
    """The members an invoice and a credit note open with, in this order (``after_status`` between status and
    customer)."""
    return {"id": str(document.pk), "number": document.number, "status": document.status, **after_status,
            "customer": document.customer.key, "currency": document.currency}


def invoice_json(invoice: Invoice) -> dict[str, Any]:
    currency = invoice.currency
    return {
        **_document_json(invoice),
        "period_start": format_rfc3339(invoice.period_start),
        "period_end": format_rfc3339(invoice.period_end),
        "subtotal": format_major(invoice.subtotal, currency),
        "total": format_major(invoice.total, currency),
        "issued_at": _stamp(invoice.issued_at),
        "due_at": _stamp(invoice.due_at),
        "paid_at": _stamp(invoice.paid_at),
        "voided_at": _stamp(invoice.voided_at),
        "replaces": invoice.replaces.number if invoice.replaces_id and invoice.replaces else None,
        "stripe": {
            "sync_status": invoice.sync_status,
            "invoice_id": invoice.stripe_invoice_id or None,
            "hosted_invoice_url": invoice.stripe_hosted_url or None,
        },
        "lines": [line_json(line, currency) for line in invoice.lines.all()],
        "credit_notes": [note.number for note in invoice.credit_notes.all()],
    }


def credit_note_json(credit_note: CreditNote) -> dict[str, Any]:
    currency = credit_note.currency
    return {
        **_document_json(credit_note, invoice=credit_note.invoice.number),
        "total": format_major(credit_note.total, currency),
        "reason": credit_note.reason,
        "issued_at": _stamp(credit_note.issued_at),
        "voided_at": _stamp(credit_note.voided_at),
        "stripe": {"sync_status": credit_note.sync_status,
                   "credit_note_id": credit_note.stripe_credit_note_id or None},
        "lines": [
            {
                "kind": line.kind,
                "rate_card": line.rate_card_key or None,
                "description": line.description,
                "quantity": _decimal(line.quantity),
                "amount": format_major(line.amount, currency),
                "period_start": _stamp(line.period_start),
                "period_end": _stamp(line.period_end),
            }
            for line in credit_note.lines.all()
        ],
    }


def _invoices_with_lines() -> QuerySet[Invoice]:
    """Invoices with their customer, lines (with rate card, feature) and credit notes, in a bounded number of
    queries whatever the count."""
    return Invoice.objects.select_related("customer", "replaces").prefetch_related(
        Prefetch("lines", InvoiceLine.objects.select_related("rate_card", "rate_card__feature")),
        Prefetch("credit_notes", CreditNote.objects.order_by("issued_at", "id")),
    )


def invoice_list(*, customer_key: str | None = None, statuses: list[str] | None = None,
                 limit: int = 100) -> list[Invoice]:
    """Newest period first, optionally one customer's and only some statuses."""
    invoices = _invoices_with_lines().order_by("-period_start", "-id")
    if customer_key:
        invoices = invoices.filter(customer__key=customer_key)
    if statuses:
        invoices = invoices.filter(status__in=statuses)
    return list(invoices[:limit])


def _by_id_or_number(queryset: QuerySet, value: str):
    numeric = value.isascii() and value.isdigit() and len(value) <= MAX_ID_DIGITS
    found = queryset.filter(pk=int(value)).first() if numeric else None
    return found if found is not None else queryset.filter(number=value).first()


def invoice_by_id_or_number(id_or_number: str) -> Invoice | None:
    return _by_id_or_number(_invoices_with_lines(), id_or_number)


def _credit_notes() -> QuerySet[CreditNote]:
    return CreditNote.objects.select_related("invoice", "customer").prefetch_related(
        Prefetch("lines", CreditNoteLine.objects.order_by("position", "id")))


def credit_note_list(*, customer_key: str | None = None, invoice: Invoice | None = None,
                     limit: int = 100) -> list[CreditNote]:
    notes = _credit_notes().order_by("-issued_at", "-id")
    if customer_key:
        notes = notes.filter(customer__key=customer_key)
    if invoice is not None:
        notes = notes.filter(invoice=invoice)
    return list(notes[:limit])


def credit_note_by_id_or_number(id_or_number: str) -> CreditNote | None:
    return _by_id_or_number(_credit_notes(), id_or_number)
