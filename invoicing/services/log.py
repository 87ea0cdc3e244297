"""The invoices' audit log: who did what, and when (append-only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..models import CreditNote, Invoice, InvoiceEvent

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def invoice_log(invoice: Invoice, action: str, *, actor: User | None = None, label: str = "", detail: str = "",
                credit_note: CreditNote | None = None) -> InvoiceEvent:
    return InvoiceEvent.objects.create(
        invoice=invoice,
        credit_note=credit_note,
        action=action,
        detail=detail,
        actor=actor,
        actor_label=label or (actor.get_username() if actor else "system"),
    )
