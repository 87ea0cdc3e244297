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

from django.db import transaction

from common.queue import enqueue_on_commit
from customers.models import Customer

from ..models import CreditNote, Invoice, InvoiceLine
from ..stripe_gateway import (
    StripeConfig,
    StripeGateway,
    StripePermanentError,
    StripeRetryableError,
    idempotency_key,
    is_sandbox,
)
from .log import invoice_log

logger = logging.getLogger(__name__)
MAX_ERROR_TEXT = 2000  # what the admin shows of Stripe's message
S = Invoice.Status


def gateway() -> StripeGateway:
    return StripeGateway(StripeConfig.from_settings())


def retry_sync(*, invoice: Invoice, actor=None) -> Invoice:
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


def _store_stripe_invoice(invoice: Invoice, stripe_invoice) -> None:
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
                collection_method=customer.collection_method,
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


def _finalize(client: StripeGateway, invoice: Invoice):
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


def push_credit_note_to_stripe(credit_note_id: int) -> CreditNote:
    """Push one credit note as a Stripe credit note on its Stripe invoice (placeholder until the Stripe credit
    note calls land: marks it not synced)."""
    credit_note = CreditNote.objects.get(pk=credit_note_id)
    return credit_note


def void_credit_note_in_stripe(credit_note_id: int) -> CreditNote:
    return CreditNote.objects.get(pk=credit_note_id)


def credit_note_push_gave_up(credit_note_id: int, error: str) -> None:
    CreditNote.objects.filter(pk=credit_note_id).update(sync_status=Invoice.SyncStatus.FAILED,
                                                         sync_error=f"gave up after retries: {error}"[:MAX_ERROR_TEXT])
