"""Pushing issued invoices to Stripe and following them back through webhooks.

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

import datetime as dt
import hashlib
import json
import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from customers.models import Customer

from .models import Invoice, InvoiceLine, StripeWebhookEvent
from .services.lifecycle import (
    invoice_log,
    invoice_mark_paid,
    invoice_mark_uncollectible,
    invoice_void,
    is_legal,
)
from .stripe_gateway import (
    StripeConfig,
    StripeGateway,
    StripePermanentError,
    StripeRetryableError,
    construct_webhook_event,
    idempotency_key,
    is_sandbox,
)

logger = logging.getLogger(__name__)
S = Invoice.Status


def gateway() -> StripeGateway:
    return StripeGateway(StripeConfig.from_settings())


def new_sync_status() -> str:
    return Invoice.SyncStatus.SANDBOX if is_sandbox() else Invoice.SyncStatus.SYNCING


def schedule_push(invoice: Invoice) -> None:
    """Inside the issuing transaction, once the invoice has its id: push it to Stripe after the commit."""
    if invoice.sync_status != Invoice.SyncStatus.SYNCING:
        return
    from .tasks import push_invoice

    invoice_id = invoice.pk
    transaction.on_commit(lambda: push_invoice.delay(invoice_id))


def queue_push(invoice: Invoice) -> None:
    """Inside the issuing transaction: set the sync state on the instance (the caller saves it) and push to
    Stripe after the commit."""
    invoice.sync_error = ""
    invoice.sync_status = new_sync_status()
    schedule_push(invoice)


def queue_void(invoice: Invoice) -> None:
    if is_sandbox() or not invoice.stripe_invoice_id:
        return
    from .tasks import void_invoice_in_stripe

    transaction.on_commit(lambda: void_invoice_in_stripe.delay(invoice.pk))


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
        from .tasks import push_invoice

        transaction.on_commit(lambda: push_invoice.delay(invoice.pk))
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


def push_invoice(invoice_id: int) -> Invoice:
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
        _fail(invoice, f"Stripe refused: {exc}")
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


def _fail(invoice: Invoice, message: str) -> None:
    Invoice.objects.filter(pk=invoice.pk).update(sync_status=Invoice.SyncStatus.FAILED, sync_error=message[:2000])
    invoice_log(invoice, "stripe_failed", label="stripe", detail=message[:2000])
    logger.warning("Stripe sync of invoice %s failed: %s", invoice.pk, message)


def push_gave_up(invoice_id: int, error: str) -> None:
    """The task ran out of retries on temporary errors."""
    invoice = Invoice.objects.get(pk=invoice_id)
    _fail(invoice, f"gave up after retries: {error}")


def void_in_stripe(invoice_id: int) -> Invoice:
    invoice = Invoice.objects.get(pk=invoice_id)
    if not invoice.stripe_invoice_id or invoice.stripe_status in ("void", "draft"):
        return invoice  # a Stripe draft is left unfinalized: push_invoice stops for void invoices
    try:
        voided = gateway().void_invoice(
            stripe_invoice_id=invoice.stripe_invoice_id, idempotency_key=idempotency_key("invoice-void", invoice.pk)
        )
    except StripePermanentError as exc:
        _fail(invoice, f"voiding in Stripe failed: {exc}")
        return invoice
    _store_stripe_invoice(invoice, voided)
    invoice_log(invoice, "stripe_voided", label="stripe")
    return invoice


# --- webhooks ------------------------------------------------------------------------------------------------

TARGETS = {
    "invoice.paid": S.PAID,
    "invoice.payment_succeeded": S.PAID,
    "invoice.voided": S.VOID,
    "invoice.marked_uncollectible": S.UNCOLLECTIBLE,
}
HANDLED = {*TARGETS, "invoice.payment_failed", "invoice.finalization_failed"}


def _find_invoice(stripe_object: dict[str, Any]) -> Invoice | None:
    stripe_id = stripe_object.get("id") or ""
    if stripe_id:
        found = Invoice.objects.filter(stripe_invoice_id=stripe_id).first()
        if found is not None:
            return found
    metadata = stripe_object.get("metadata") or {}
    if str(metadata.get("invoice_id", "")).isascii() and str(metadata.get("invoice_id", "")).isdigit():
        # Only for ours whose Stripe id was never stored (the answer to the create was lost); the number must
        # match too, since another installation sharing the Stripe account has its own invoice ids.
        return Invoice.objects.filter(
            pk=int(metadata["invoice_id"]), stripe_invoice_id="", number=metadata.get("invoice_number") or "-"
        ).first()
    return None


def webhook_receive(*, payload: bytes, signature: str | None) -> tuple[StripeWebhookEvent, bool]:
    """Verify, store once, handle. Returns the stored event and whether it was new. Raises
    :class:`WebhookSignatureError` (nothing stored) for a bad, missing or expired signature."""
    config = StripeConfig.from_settings()
    event = construct_webhook_event(payload, signature, secret=config.webhook_secret)
    with transaction.atomic():  # stored and handled together: a crash while handling stores nothing
        try:
            with transaction.atomic():
                stored = StripeWebhookEvent.objects.create(event_id=event["id"], type=event["type"], payload=event)
        except IntegrityError:
            return StripeWebhookEvent.objects.get(event_id=event["id"]), False
        _handle(stored)
    return stored, True


@transaction.atomic
def _handle(stored: StripeWebhookEvent) -> None:
    event_type = stored.type
    stripe_object = (stored.payload.get("data") or {}).get("object") or {}
    invoice = _find_invoice(stripe_object) if event_type.startswith("invoice.") else None
    if event_type not in HANDLED:
        outcome = "stored; type not handled"
    elif invoice is None:
        outcome = "no matching invoice"
    else:
        invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
        status = stripe_object.get("status")

        def mirror_status() -> None:
            if status:
                Invoice.objects.filter(pk=invoice.pk).update(stripe_status=status)

        if event_type == "invoice.payment_failed":
            invoice_log(invoice, "payment_failed", label="stripe", detail=str(stripe_object.get("id", "")))
            outcome = "payment failure recorded; status unchanged"
        elif event_type == "invoice.finalization_failed":
            error = (stripe_object.get("last_finalization_error") or {}).get("message") or "finalization failed"
            mirror_status()
            _fail(invoice, f"Stripe could not finalize: {error}")
            outcome = "sync marked failed"
        else:
            target = TARGETS[event_type]
            if invoice.status == target:
                mirror_status()
                outcome = f"already {target}"
            elif not is_legal(invoice.status, target):
                outcome = f"ignored: {invoice.status} → {target} is not a legal transition"
                invoice_log(invoice, "stripe_event_ignored", label="stripe", detail=f"{event_type}: {outcome}")
            else:
                mirror_status()
                detail = f"{event_type} {stored.event_id}"
                if target == S.PAID:
                    paid_at = (stripe_object.get("status_transitions") or {}).get("paid_at")
                    moment = dt.datetime.fromtimestamp(paid_at, tz=dt.UTC) if paid_at else None
                    invoice_mark_paid(invoice=invoice, label="stripe", paid_at=moment, detail=detail)
                elif target == S.VOID:
                    Invoice.objects.filter(pk=invoice.pk).update(stripe_status="void")
                    invoice_void(invoice=invoice, label="stripe", reason=detail)
                else:
                    invoice_mark_uncollectible(invoice=invoice, label="stripe", detail=detail)
                outcome = f"{invoice.status} → {target}"
    StripeWebhookEvent.objects.filter(pk=stored.pk).update(
        processed_at=timezone.now(), outcome=outcome, invoice=invoice
    )
    stored.outcome = outcome
