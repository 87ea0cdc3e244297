"""The invoices' audit log: who did what, and when (append-only)."""

from __future__ import annotations

from ..models import CreditNote, Invoice, InvoiceEvent


def invoice_log(invoice: Invoice, action: str, *, actor=None, label: str = "", detail: str = "",
                credit_note: CreditNote | None = None) -> InvoiceEvent:
    return InvoiceEvent.objects.create(
        invoice=invoice,
        credit_note=credit_note,
        action=action,
        detail=detail,
        actor=actor,
        actor_label=label or (actor.get_username() if actor else "system"),
    )
