"""Celery tasks of the invoicing app: take ids, call one service, safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from common.jobs import tracked_job
from common.models import JobRun

from .services.close import close_cycles


@shared_task(name="invoicing.close_cycles", time_limit=3 * 3600, soft_time_limit=3 * 3600 - 60, ignore_result=True)
def close_billing_cycles(job_run_id: int | None = None) -> str:
    """Beat: close every due billing cycle (also issues drafts whose review time has passed)."""
    trigger = JobRun.Trigger.ADMIN if job_run_id else JobRun.Trigger.BEAT
    with tracked_job(kind="close_cycles", trigger=trigger, job_run_id=job_run_id) as run:
        report = close_cycles(now=timezone.now(), job_run=run)
        run.message = report.summary()
        run.result = {"invoices": report.invoices, "issued": report.issued, "errors": report.errors}
    return report.summary()


PUSH_RETRIES = 8


@shared_task(
    name="invoicing.push_invoice",
    bind=True,
    max_retries=PUSH_RETRIES,
    time_limit=600,
    soft_time_limit=570,
    ignore_result=True,
)
def push_invoice(self, invoice_id: int) -> None:
    """Push one issued invoice to Stripe; temporary failures retry with exponential backoff (bounded)."""
    from .stripe_gateway import StripeRetryableError
    from .stripe_sync import push_gave_up
    from .stripe_sync import push_invoice as push

    try:
        push(invoice_id)
    except StripeRetryableError as exc:
        if self.request.retries >= PUSH_RETRIES:
            push_gave_up(invoice_id, str(exc))
            return
        raise self.retry(exc=exc, countdown=min(3600, 30 * 2**self.request.retries)) from exc


@shared_task(
    name="invoicing.void_invoice_in_stripe",
    bind=True,
    max_retries=PUSH_RETRIES,
    time_limit=300,
    soft_time_limit=270,
    ignore_result=True,
)
def void_invoice_in_stripe(self, invoice_id: int) -> None:
    from .stripe_gateway import StripeRetryableError
    from .stripe_sync import push_gave_up, void_in_stripe

    try:
        void_in_stripe(invoice_id)
    except StripeRetryableError as exc:
        if self.request.retries >= PUSH_RETRIES:
            push_gave_up(invoice_id, f"voiding in Stripe: {exc}")
            return
        raise self.retry(exc=exc, countdown=min(3600, 30 * 2**self.request.retries)) from exc


@shared_task(name="invoicing.unbilled_snapshot", time_limit=1800, soft_time_limit=1750, ignore_result=True)
def unbilled_snapshot() -> str:
    """Beat: the dashboard's "unbilled so far this period" (preview totals of every active subscription)."""
    from .dashboard import record_unbilled_snapshot

    return record_unbilled_snapshot().message


STUCK_AFTER_HOURS = 3


@shared_task(name="invoicing.requeue_stuck_syncs", time_limit=300, soft_time_limit=270, ignore_result=True)
def requeue_stuck_syncs() -> int:
    """Beat: an invoice left "syncing" for hours (its push was never queued, e.g. the broker was down at commit)
    is pushed again; the push is idempotent and continues from the saved state."""
    import datetime as dt

    from .models import Invoice

    cutoff = timezone.now() - dt.timedelta(hours=STUCK_AFTER_HOURS)
    stuck = list(Invoice.objects.filter(sync_status=Invoice.SyncStatus.SYNCING, issued_at__lt=cutoff)
                 .values_list("pk", flat=True)[:500])
    for invoice_id in stuck:
        push_invoice.delay(invoice_id)
    return len(stuck)
