"""Pushing issued invoices to Stripe (webhooks coming back are :mod:`invoicing.services.stripe_webhooks`).

The HTTP calls live in :mod:`invoicing.stripe_gateway` (the only module importing ``stripe``). The push runs
in a Celery task after the issuing transaction commits, in steps, saving state after each:

1. the Stripe customer exists (created with our customer key in metadata; name/email/address updated when
   they changed since the last push);
2. the Stripe invoice exists (``auto_advance=false``, collection method and days until due from the customer,
   our invoice id and number in metadata);
3. one invoice item per line (amount in minor units, our line id in metadata); each line's item id is saved as
   soon as it exists, and items already on the Stripe invoice (found by our line id) are never added again;
4. the invoice is finalized; Stripe's number, hosted URL and status are stored.

Every create call carries a deterministic idempotency key from our ids, so a retry after a crash or a timeout
replays instead of duplicating. Network errors, 5xx and 429 are retried with backoff (in the gateway, then by
the task); other 4xx mark the sync failed with Stripe's message, shown in the admin with a "Retry" action.
Without ``STRIPE_API_KEY`` the system is in sandbox mode: invoices stay local.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING

from django.db import transaction

from common.queue import enqueue_on_commit
from customers.models import Customer

from ..models import CreditNote, CreditNoteLine, Invoice, InvoiceLine
from ..stripe_gateway import (
    StripeConfig,
    StripeCreditNote,
    StripeGateway,
    StripeInvoice,
    StripePermanentError,
    StripeRetryableError,
    collection_method,
    idempotency_key,
    is_sandbox,
)
from .log import invoice_log

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)
MAX_ERROR_TEXT = 2000  # what the admin shows of Stripe's message
S = Invoice.Status


def gateway() -> StripeGateway:
    return StripeGateway(StripeConfig.from_settings())


def retry_sync(*, invoice: Invoice, actor: User | None = None) -> Invoice:
    """Admin action "Retry Stripe sync": push again from where the last attempt stopped."""
    if is_sandbox():
        raise ValueError("sandbox mode: no STRIPE_API_KEY is set")
    if invoice.status == S.DRAFT:
        raise ValueError("drafts are pushed when they are issued")
    with transaction.atomic():
        Invoice.objects.filter(pk=invoice.pk).update(
            sync_status=Invoice.SyncStatus.SYNCING, sync_error="", sync_attempts=0
        )
        invoice_log(invoice, "stripe_retry", actor=actor)
        enqueue_on_commit("invoicing.push_invoice", invoice_id=invoice.pk)
    invoice.refresh_from_db()
    return invoice


def _customer_fingerprint(customer: Customer) -> str:
    data = {"name": customer.name, "email": customer.email, "address": customer.address}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _ensure_customer(client: StripeGateway, customer: Customer) -> str:
    fingerprint = _customer_fingerprint(customer)
    if not customer.stripe_customer_id:
        stripe_id = client.create_customer(
            customer_key=customer.key,
            name=customer.name,
            email=customer.email or None,
            address=customer.address,
            idempotency_key=idempotency_key("customer", customer.pk),
        )
        Customer.objects.filter(pk=customer.pk).update(stripe_customer_id=stripe_id, stripe_synced_hash=fingerprint)
        return stripe_id
    if customer.stripe_synced_hash != fingerprint:
        client.update_customer(
            stripe_customer_id=customer.stripe_customer_id,
            name=customer.name,
            email=customer.email or None,
            address=customer.address,
        )
        Customer.objects.filter(pk=customer.pk).update(stripe_synced_hash=fingerprint)
    return customer.stripe_customer_id


def _store_stripe_invoice(invoice: Invoice, stripe_invoice: StripeInvoice) -> None:
    fields = {
        "stripe_invoice_id": stripe_invoice.id,
        "stripe_status": stripe_invoice.status or "",
        "stripe_number": stripe_invoice.number or "",
        "stripe_hosted_url": stripe_invoice.hosted_invoice_url or "",
    }
    Invoice.objects.filter(pk=invoice.pk).update(**fields)
    for name, value in fields.items():
        setattr(invoice, name, value)


def push_invoice_to_stripe(invoice_id: int) -> Invoice:
    """Push (or continue pushing) one issued invoice. Raises StripeRetryableError for the task to retry."""
    invoice = Invoice.objects.select_related("customer").get(pk=invoice_id)
    if invoice.status == S.DRAFT or invoice.sync_status in (Invoice.SyncStatus.SYNCED, Invoice.SyncStatus.SANDBOX):
        return invoice
    if invoice.status == S.VOID and invoice.stripe_status in ("", "draft"):
        # Voided before Stripe finalized it: never make it payable there (a Stripe draft is neither sent nor charged).
        Invoice.objects.filter(pk=invoice.pk).update(sync_status=Invoice.SyncStatus.NOT_SYNCED, sync_error="")
        invoice_log(invoice, "stripe_skipped", label="stripe", detail="void before it was finalized in Stripe")
        invoice.refresh_from_db()
        return invoice
    Invoice.objects.filter(pk=invoice.pk).update(
        sync_attempts=invoice.sync_attempts + 1, sync_status=Invoice.SyncStatus.SYNCING
    )
    try:
        client = gateway()
        customer = invoice.customer
        stripe_customer = _ensure_customer(client, customer)
        if not invoice.stripe_invoice_id:
            created = client.create_invoice(
                stripe_customer_id=stripe_customer,
                currency=invoice.currency,
                collection_method=collection_method(customer.collection_method),
                days_until_due=customer.days_until_due if customer.collection_method == "send_invoice" else None,
                metadata={"invoice_id": str(invoice.pk), "invoice_number": invoice.number or ""},
                description=f"Invoice {invoice.number}",
                idempotency_key=idempotency_key("invoice", invoice.pk),
            )
            _store_stripe_invoice(invoice, created)
        if invoice.stripe_status in ("", "draft"):
            already = {
                item.metadata.get("invoice_line_id"): item.id
                for item in client.list_invoice_items(stripe_invoice_id=invoice.stripe_invoice_id)
            }
            for line in invoice.lines.all():
                if line.stripe_item_id:
                    continue
                item_id = already.get(str(line.pk))
                if item_id is None:
                    item_id = client.add_invoice_item(
                        stripe_customer_id=stripe_customer,
                        stripe_invoice_id=invoice.stripe_invoice_id,
                        amount=line.amount,
                        currency=invoice.currency,
                        description=line.description,
                        metadata={
                            "invoice_line_id": str(line.pk),
                            "invoice_id": str(invoice.pk),
                            "rate_card": line.rate_card_key,
                            **({"credit_grant": str(line.grant_id)} if line.grant_id else {}),
                        },
                        period_start=int(line.period_start.timestamp()),
                        period_end=int(line.period_end.timestamp()),
                        idempotency_key=idempotency_key("invoice-line", line.pk),
                    )
                InvoiceLine.objects.filter(pk=line.pk).update(stripe_item_id=item_id)
            _store_stripe_invoice(invoice, _finalize(client, invoice))
    except StripePermanentError as exc:
        fail_sync(invoice, f"Stripe refused: {exc}")
        return invoice
    except StripeRetryableError as exc:
        Invoice.objects.filter(pk=invoice.pk).update(sync_error=f"retrying: {exc}")
        raise
    Invoice.objects.filter(pk=invoice.pk).update(sync_status=Invoice.SyncStatus.SYNCED, sync_error="")
    invoice_log(invoice, "stripe_synced", label="stripe", detail=f"{invoice.stripe_invoice_id} {invoice.stripe_number}")
    invoice.refresh_from_db()
    return invoice


def _finalize(client: StripeGateway, invoice: Invoice) -> StripeInvoice:
    """Finalize; if Stripe says it already is (an earlier attempt went through but its answer was lost, and
    the idempotency key has expired), take Stripe's current state instead of failing."""
    try:
        return client.finalize_invoice(
            stripe_invoice_id=invoice.stripe_invoice_id,
            idempotency_key=idempotency_key("invoice-finalize", invoice.pk),
        )
    except StripePermanentError:
        current = client.retrieve_invoice(invoice.stripe_invoice_id)
        if current.status and current.status != "draft":
            return current
        raise


def fail_sync(invoice: Invoice, message: str) -> None:
    Invoice.objects.filter(pk=invoice.pk).update(sync_status=Invoice.SyncStatus.FAILED,
                                                 sync_error=message[:MAX_ERROR_TEXT])
    invoice_log(invoice, "stripe_failed", label="stripe", detail=message[:MAX_ERROR_TEXT])
    logger.warning("Stripe sync of invoice %s failed: %s", invoice.pk, message)


def push_gave_up(invoice_id: int, error: str) -> None:
    """The task ran out of retries on temporary errors."""
    invoice = Invoice.objects.get(pk=invoice_id)
    fail_sync(invoice, f"gave up after retries: {error}")


def void_in_stripe(invoice_id: int) -> Invoice:
    invoice = Invoice.objects.get(pk=invoice_id)
    if not invoice.stripe_invoice_id or invoice.stripe_status in ("void", "draft"):
        return invoice  # a Stripe draft is left unfinalized: push_invoice stops for void invoices
    try:
        voided = gateway().void_invoice(
            stripe_invoice_id=invoice.stripe_invoice_id, idempotency_key=idempotency_key("invoice-void", invoice.pk)
        )
    except StripePermanentError as exc:
        fail_sync(invoice, f"voiding in Stripe failed: {exc}")
        return invoice
    _store_stripe_invoice(invoice, voided)
    invoice_log(invoice, "stripe_voided", label="stripe")
    return invoice


# --- credit notes ------------------------------------------------------------------------------------------------
#
# A credit note becomes a Stripe credit note on the Stripe invoice it corrects, which must be finalized there first:
# while the invoice's push is unfinished the credit note's push raises a retryable error (the task retries with
# backoff); if the invoice's push failed, the credit note's is marked failed saying so. One custom line per credit
# note line (its description, its amount as unit_amount × 1). Stripe first lowers what the invoice still owes; the
# rest -- all of it once the invoice is paid -- goes to the customer's Stripe balance (``credit_amount``), which
# Stripe applies to their next invoice. We chose the balance over a refund because our invoices are often paid
# outside Stripe (nothing to refund there) and a credit is what our credit note says; finance can still refund by
# hand. Before creating, the push looks for a Stripe credit note carrying our id in its metadata (an earlier
# attempt's answer may have been lost); the create carries the key ``credit-note-<id>``.

CN = CreditNote.Status
SYNC = Invoice.SyncStatus


def retry_credit_note_sync(*, credit_note: CreditNote, actor: User | None = None) -> CreditNote:
    """Admin action "Retry Stripe sync" of a credit note: push it again (or, for a void one, void it again in
    Stripe), from where the last attempt stopped."""
    if is_sandbox():
        raise ValueError("sandbox mode: no STRIPE_API_KEY is set")
    credit_note = CreditNote.objects.select_related("invoice").get(pk=credit_note.pk)
    if credit_note.status == CN.VOID and not credit_note.stripe_credit_note_id:
        raise ValueError(f"credit note {credit_note} was voided before it reached Stripe: nothing to sync")
    task = ("invoicing.void_credit_note_in_stripe" if credit_note.status == CN.VOID
            else "invoicing.push_credit_note")
    with transaction.atomic():
        CreditNote.objects.filter(pk=credit_note.pk).update(sync_status=SYNC.SYNCING, sync_error="", sync_attempts=0)
        invoice_log(credit_note.invoice, "stripe_retry", actor=actor, credit_note=credit_note,
                    detail=credit_note.number)
        enqueue_on_commit(task, credit_note_id=credit_note.pk)
    credit_note.refresh_from_db()
    return credit_note


def _find_in_stripe(client: StripeGateway, credit_note: CreditNote, stripe_invoice_id: str) -> StripeCreditNote | None:
    """The Stripe credit note carrying our id in its metadata, if an earlier attempt created it."""
    for found in client.list_credit_notes(stripe_invoice_id=stripe_invoice_id):
        if found.metadata.get("credit_note_id") == str(credit_note.pk):
            return found
    return None


def _waiting_for_invoice(invoice: Invoice) -> str | None:
    """Why the credit note cannot be pushed yet (the invoice's own push is unfinished), or None."""
    if invoice.sync_status == SYNC.SYNCING or not invoice.stripe_invoice_id or invoice.stripe_status in ("", "draft"):
        return f"invoice {invoice} is not finalized in Stripe yet (its sync is {invoice.get_sync_status_display()})"
    return None


def push_credit_note_to_stripe(credit_note_id: int) -> CreditNote:
    """Push (or finish pushing) one credit note as a Stripe credit note on its Stripe invoice. Raises
    StripeRetryableError for the task to retry: on transient Stripe errors, and while the invoice's push is
    unfinished."""
    credit_note = CreditNote.objects.select_related("invoice").get(pk=credit_note_id)
    invoice = credit_note.invoice
    if credit_note.sync_status in (SYNC.SYNCED, SYNC.SANDBOX):
        return credit_note
    if credit_note.status == CN.VOID and not credit_note.stripe_credit_note_id:
        return _void_before_push(credit_note)
    if credit_note.status == CN.VOID:
        return void_credit_note_in_stripe(credit_note.pk)
    if invoice.sync_status == SYNC.FAILED:
        cause = invoice.sync_error or "no detail"
        _fail_credit_note(credit_note, f"the Stripe sync of invoice {invoice} failed ({cause}); retry the invoice's "
                                       "sync first, then this credit note's")
        return _refreshed(credit_note)
    if invoice.sync_status == SYNC.SANDBOX:
        _fail_credit_note(credit_note, f"invoice {invoice} was issued in sandbox mode and is not in Stripe")
        return _refreshed(credit_note)
    CreditNote.objects.filter(pk=credit_note.pk).update(sync_attempts=credit_note.sync_attempts + 1,
                                                        sync_status=SYNC.SYNCING)
    waiting = _waiting_for_invoice(invoice)
    if waiting:
        CreditNote.objects.filter(pk=credit_note.pk).update(sync_error=f"retrying: {waiting}"[:MAX_ERROR_TEXT])
        raise StripeRetryableError(waiting)
    try:
        client = gateway()
        stripe_note = None
        if credit_note.stripe_credit_note_id:
            stripe_note = client.retrieve_credit_note(credit_note.stripe_credit_note_id)
        if stripe_note is None:
            stripe_note = _find_in_stripe(client, credit_note, invoice.stripe_invoice_id)
        if stripe_note is None:
            # What Stripe still lets the invoice owe decides the split; the rest goes to the customer's balance.
            stripe_invoice = client.retrieve_invoice(invoice.stripe_invoice_id)
            beyond_due = credit_note.total - min(credit_note.total, max(stripe_invoice.amount_remaining, 0))
            lines = list(credit_note.lines.all())
            rerating = all(line.kind == CreditNoteLine.Kind.RERATING for line in lines)
            stripe_note = client.create_credit_note(
                stripe_invoice_id=invoice.stripe_invoice_id,
                lines=[(line.description, line.amount) for line in lines],
                metadata={
                    "credit_note_id": str(credit_note.pk),
                    "credit_note_number": credit_note.number,
                    "invoice_id": str(invoice.pk),
                    "invoice_number": invoice.number or "",
                },
                memo=f"{credit_note.number}: {credit_note.reason}",
                credit_amount=beyond_due or None,
                reason="order_change" if rerating else None,
                idempotency_key=idempotency_key("credit-note", credit_note.pk),
            )
    except StripePermanentError as exc:
        _fail_credit_note(credit_note, f"Stripe refused: {exc}")
        return _refreshed(credit_note)
    except StripeRetryableError as exc:
        CreditNote.objects.filter(pk=credit_note.pk).update(sync_error=f"retrying: {exc}"[:MAX_ERROR_TEXT])
        raise
    with transaction.atomic():
        locked = CreditNote.objects.select_for_update().get(pk=credit_note.pk)
        locked.stripe_credit_note_id, locked.stripe_status = stripe_note.id, stripe_note.status
        locked.sync_status, locked.sync_error = SYNC.SYNCED, ""
        locked.save(update_fields=["stripe_credit_note_id", "stripe_status", "sync_status", "sync_error"])
        invoice_log(invoice, "stripe_synced", label="stripe", credit_note=locked,
                    detail=f"{stripe_note.id} {stripe_note.number} on {invoice.stripe_invoice_id}"
                           + (f" ({stripe_note.post_payment_amount} to the customer's Stripe balance)"
                              if stripe_note.post_payment_amount else ""))
        voided_meanwhile = locked.status == CN.VOID
    if voided_meanwhile:  # voided here while the push was under way: its void found no Stripe id to void
        return void_credit_note_in_stripe(credit_note.pk)
    return _refreshed(credit_note)


def _void_before_push(credit_note: CreditNote) -> CreditNote:
    """A credit note voided before we knew its Stripe id: if an earlier attempt may have created it in Stripe (its
    answer lost), find it there and void it; otherwise there is nothing in Stripe and nothing to do."""
    invoice = credit_note.invoice
    if credit_note.sync_attempts and invoice.stripe_invoice_id:
        try:
            found = _find_in_stripe(gateway(), credit_note, invoice.stripe_invoice_id)
        except StripePermanentError as exc:
            _fail_credit_note(credit_note, f"looking for it in Stripe failed: {exc}")
            return _refreshed(credit_note)
        if found is not None:
            CreditNote.objects.filter(pk=credit_note.pk).update(stripe_credit_note_id=found.id,
                                                                stripe_status=found.status)
            return void_credit_note_in_stripe(credit_note.pk)
    CreditNote.objects.filter(pk=credit_note.pk).update(sync_status=SYNC.NOT_SYNCED, sync_error="")
    invoice_log(invoice, "stripe_skipped", label="stripe", credit_note=credit_note,
                detail=f"{credit_note.number} was voided before it reached Stripe")
    return _refreshed(credit_note)


def void_credit_note_in_stripe(credit_note_id: int) -> CreditNote:
    """Void a voided credit note's Stripe twin (key ``credit-note-void-<id>``). Idempotent: a credit note already
    void in Stripe, or never there, is left alone. Stripe voids credit notes only on open invoices; its refusal
    marks the sync failed with its message."""
    credit_note = CreditNote.objects.select_related("invoice").get(pk=credit_note_id)
    if credit_note.status != CN.VOID:
        return credit_note
    if not credit_note.stripe_credit_note_id:
        return push_credit_note_to_stripe(credit_note.pk)  # finds a lost one in Stripe, or skips
    if credit_note.stripe_status == "void":
        if credit_note.sync_status != SYNC.SYNCED:
            CreditNote.objects.filter(pk=credit_note.pk).update(sync_status=SYNC.SYNCED, sync_error="")
        return _refreshed(credit_note)
    client = gateway()
    try:
        voided = client.void_credit_note(stripe_credit_note_id=credit_note.stripe_credit_note_id,
                                         idempotency_key=idempotency_key("credit-note-void", credit_note.pk))
    except StripePermanentError as exc:
        try:
            current = client.retrieve_credit_note(credit_note.stripe_credit_note_id)
        except StripePermanentError:
            current = None
        if current is None or current.status != "void":
            _fail_credit_note(credit_note, f"voiding in Stripe failed: {exc}")
            return _refreshed(credit_note)
        voided = current  # voided earlier, its answer lost and the key expired
    CreditNote.objects.filter(pk=credit_note.pk).update(stripe_status=voided.status, sync_status=SYNC.SYNCED,
                                                        sync_error="")
    invoice_log(credit_note.invoice, "stripe_voided", label="stripe", credit_note=credit_note,
                detail=f"{voided.id} {voided.number}")
    return _refreshed(credit_note)


def _refreshed(credit_note: CreditNote) -> CreditNote:
    credit_note.refresh_from_db()
    return credit_note


def _fail_credit_note(credit_note: CreditNote, message: str) -> None:
    CreditNote.objects.filter(pk=credit_note.pk).update(sync_status=SYNC.FAILED, sync_error=message[:MAX_ERROR_TEXT])
    invoice_log(credit_note.invoice, "stripe_failed", label="stripe", credit_note=credit_note,
                detail=f"{credit_note.number}: {message}"[:MAX_ERROR_TEXT])
    logger.warning("Stripe sync of credit note %s failed: %s", credit_note.pk, message)


def credit_note_push_gave_up(credit_note_id: int, error: str) -> None:
    """The credit note task ran out of retries on temporary errors (or on waiting for its invoice)."""
    credit_note = CreditNote.objects.select_related("invoice").get(pk=credit_note_id)
    _fail_credit_note(credit_note, f"gave up after retries: {error}")
