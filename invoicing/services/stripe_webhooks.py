"""Stripe's webhooks coming back: verified, stored once (unique event id), then handled by a table from event
type to handler. Our invoice moves only through legal transitions; unknown types are stored and answered 200."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..models import Invoice, StripeWebhookEvent
from ..stripe_gateway import StripeConfig, construct_webhook_event
from .lifecycle import invoice_mark_paid, invoice_mark_uncollectible, invoice_void, is_legal
from .log import invoice_log
from .stripe_push import fail_sync

S = Invoice.Status


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


def _mirror_status(invoice: Invoice, stripe_object: dict[str, Any]) -> None:
    status = stripe_object.get("status")
    if status:
        Invoice.objects.filter(pk=invoice.pk).update(stripe_status=status)


def _payment_failed(invoice: Invoice, stripe_object: dict[str, Any], stored: StripeWebhookEvent) -> str:
    invoice_log(invoice, "payment_failed", label="stripe", detail=str(stripe_object.get("id", "")))
    return "payment failure recorded; status unchanged"


def _finalization_failed(invoice: Invoice, stripe_object: dict[str, Any], stored: StripeWebhookEvent) -> str:
    error = (stripe_object.get("last_finalization_error") or {}).get("message") or "finalization failed"
    _mirror_status(invoice, stripe_object)
    fail_sync(invoice, f"Stripe could not finalize: {error}")
    return "sync marked failed"


def _move_to(target: str) -> Callable[[Invoice, dict[str, Any], StripeWebhookEvent], str]:
    def handler(invoice: Invoice, stripe_object: dict[str, Any], stored: StripeWebhookEvent) -> str:
        if invoice.status == target:
            _mirror_status(invoice, stripe_object)
            return f"already {target}"
        if not is_legal(invoice.status, target):
            outcome = f"ignored: {invoice.status} → {target} is not a legal transition"
            invoice_log(invoice, "stripe_event_ignored", label="stripe", detail=f"{stored.type}: {outcome}")
            return outcome
        _mirror_status(invoice, stripe_object)
        detail = f"{stored.type} {stored.event_id}"
        if target == S.PAID:
            paid_at = (stripe_object.get("status_transitions") or {}).get("paid_at")
            moment = dt.datetime.fromtimestamp(paid_at, tz=dt.UTC) if isinstance(paid_at, int) else None
            invoice_mark_paid(invoice=invoice, label="stripe", paid_at=moment, detail=detail)
        elif target == S.VOID:
            Invoice.objects.filter(pk=invoice.pk).update(stripe_status="void")
            invoice_void(invoice=invoice, label="stripe", reason=detail)
        else:
            invoice_mark_uncollectible(invoice=invoice, label="stripe", detail=detail)
        return f"{invoice.status} → {target}"

    return handler


HANDLERS: dict[str, Callable[[Invoice, dict[str, Any], StripeWebhookEvent], str]] = {
    "invoice.paid": _move_to(S.PAID),
    "invoice.payment_succeeded": _move_to(S.PAID),
    "invoice.voided": _move_to(S.VOID),
    "invoice.marked_uncollectible": _move_to(S.UNCOLLECTIBLE),
    "invoice.payment_failed": _payment_failed,
    "invoice.finalization_failed": _finalization_failed,
}


def _as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


@transaction.atomic
def _handle(stored: StripeWebhookEvent) -> None:
    payload = _as_dict(stored.payload)
    stripe_object = _as_dict(_as_dict(payload.get("data")).get("object"))
    handler = HANDLERS.get(stored.type)
    invoice = _find_invoice(stripe_object) if handler is not None else None
    if handler is None:
        outcome = "stored; type not handled"
    elif invoice is None:
        outcome = "no matching invoice"
    else:
        invoice = Invoice.objects.select_for_update().get(pk=invoice.pk)
        outcome = handler(invoice, stripe_object, stored)
    StripeWebhookEvent.objects.filter(pk=stored.pk).update(
        processed_at=timezone.now(), outcome=outcome, invoice=invoice
    )
    stored.outcome = outcome
