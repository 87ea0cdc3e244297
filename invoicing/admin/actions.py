"""An invoice's lifecycle actions, on its page and (issue, void, paid, uncollectible) on many from the list: each
confirmed, each for Billing admins (the "issue invoice" permission), each one service."""

from __future__ import annotations

from common.admin.confirm import ConfirmAction

from ..models import Invoice
from ..services.lifecycle import (
    LEGAL,
    invoice_issue,
    invoice_mark_paid,
    invoice_mark_uncollectible,
    invoice_reissue,
    invoice_void,
)
from ..services.stripe_push import retry_sync

ISSUE_PERMISSION = "invoicing.issue_invoice"


def _can_become(status: str):
    return lambda invoice: status in LEGAL.get(invoice.status, set())


def _lifecycle(name: str, label: str, explanation: str, service, becomes: str) -> ConfirmAction:
    return ConfirmAction(
        name=name, label=label, permission=ISSUE_PERMISSION, explanation=f"{label} {explanation}.",
        available=_can_become(becomes), service=lambda request, invoice, data: service(invoice=invoice,
                                                                                       actor=request.user),
    )


ISSUE = _lifecycle("issue", "Issue", "assigns the next invoice number and sends the invoice to Stripe", invoice_issue,
                   "issued")
VOID = _lifecycle("void", "Void", "cancels the invoice for good (also in Stripe); correct it with a reissue",
                  invoice_void, "void")
MARK_PAID = _lifecycle("mark_paid", "Mark paid", "records the payment", invoice_mark_paid, "paid")
MARK_UNCOLLECTIBLE = _lifecycle("mark_uncollectible", "Mark uncollectible", "writes the invoice off",
                                invoice_mark_uncollectible, "uncollectible")
REISSUE = ConfirmAction(
    name="reissue", label="Reissue", button_label="Reissue (corrected draft)", permission=ISSUE_PERMISSION,
    explanation="Reissue creates a new draft for the same cycle from current usage.",
    available=lambda invoice: invoice.status == Invoice.Status.VOID and not invoice.replaced_by.exists(),
    service=lambda request, invoice, data: invoice_reissue(invoice=invoice, actor=request.user),
)
RETRY_SYNC = ConfirmAction(
    name="retry_sync", label="Retry Stripe sync", permission=ISSUE_PERMISSION,
    explanation="Retry Stripe sync pushes the invoice to Stripe again, continuing where it stopped.",
    available=lambda invoice: invoice.sync_status == Invoice.SyncStatus.FAILED,
    service=lambda request, invoice, data: retry_sync(invoice=invoice, actor=request.user),
)
