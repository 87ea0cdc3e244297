"""The invoices' audit log: who did what, and when (append-only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.announcements import announce

from ..models import CreditNote, Invoice, InvoiceEvent

if TYPE_CHECKING:
    from django.contrib.auth.models import User


# Log actions other apps hear about (``common.announcements``), as the event type they are announced as.
ANNOUNCED = {
    "issued": "invoice.issued",
    "paid": "invoice.paid",
    "voided": "invoice.voided",
    "payment_failed": "invoice.payment_failed",
    "uncollectible": "invoice.uncollectible",
    "credit_note_issued": "credit_note.issued",
}


def invoice_log(invoice: Invoice, action: str, *, actor: User | None = None, label: str = "", detail: str = "",
                credit_note: CreditNote | None = None) -> InvoiceEvent:
    """Append to the log (inside the caller's transaction) and announce what other apps listen for."""
    if action in ANNOUNCED:
        announce(ANNOUNCED[action], invoice=invoice, credit_note=credit_note)
    return InvoiceEvent.objects.create(
        invoice=invoice,
        credit_note=credit_note,
        action=action,
        detail=detail,
        actor=actor,
        actor_label=label or (actor.get_username() if actor else "system"),
    )
