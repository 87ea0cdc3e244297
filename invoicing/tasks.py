"""Celery tasks of the invoicing app: take ids, call one service, safe to run twice. Calls to Stripe retry with
Celery's exponential backoff and jitter; after the last retry the sync is marked failed, for a person to see."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.utils import timezone

from common.jobs import beat_job, tracked_job
from common.models import JobRun
from common.retries import BACKOFF, RetryOptions, give_up_on_last_attempt

from .models import CreditNote, Invoice
from .services.close import Shard, close_cycles, close_shards_queue
from .services.snapshots import record_unbilled_snapshot
from .services.stripe_push import (
    credit_note_push_gave_up,
    push_credit_note_to_stripe,
    push_gave_up,
    push_invoice_to_stripe,
    void_credit_note_in_stripe,
    void_in_stripe,
)
from .services.top_ups import auto_top_ups
from .stripe_gateway import StripeRetryableError

PUSH_RETRIES = 8
STUCK_AFTER_HOURS = 3
STRIPE_RETRIES: RetryOptions = {"autoretry_for": (StripeRetryableError,), "max_retries": PUSH_RETRIES, **BACKOFF}


def stripe_task(name: str, *, time_limit: int) -> Callable[[Callable[..., None]], Any]:
    """A task that calls Stripe: bound (it reads its retry count), retried with backoff on Stripe's temporary
    errors, stopped after ``time_limit`` seconds."""
    return shared_task(name=name, bind=True, time_limit=time_limit, soft_time_limit=time_limit - 30,
                       ignore_result=True, **STRIPE_RETRIES)


def last_attempt_gives_up(task: Task[Any, Any], give_up: Callable[[str], None]) -> AbstractContextManager[None]:
    """Around a Stripe task's body: on its last attempt a temporary Stripe error calls ``give_up(message)``."""
    return give_up_on_last_attempt(task, (StripeRetryableError,), lambda exc: give_up(str(exc)))


@beat_job("invoicing.auto_top_ups", kind="auto_top_ups")
def buy_auto_top_ups() -> str:
    """Beat: buy the auto top-up of every customer whose live credits fell below its threshold between cycles."""
    return f"{auto_top_ups(now=timezone.now())} auto top-ups bought"


@shared_task(name="invoicing.close_cycles", time_limit=3 * 3600, soft_time_limit=3 * 3600 - 60, ignore_result=True)
def close_billing_cycles(job_run_id: int | None = None, shard_index: int = 0, shard_count: int | None = None) -> str:
    """Beat: close every due billing cycle (also issues drafts whose review time has passed).

    With ``INVOICE_CLOSE_SHARDS`` above 1 the run started by beat (or the admin) queues the other shards as tasks
    of their own, for the other workers, and closes the first shard itself; each shard is a job run."""
    trigger = JobRun.Trigger.ADMIN if job_run_id else JobRun.Trigger.BEAT
    first = shard_count is None
    shard = Shard(shard_index, settings.INVOICE_CLOSE_SHARDS if shard_count is None else shard_count)
    with tracked_job(kind="close_cycles", trigger=trigger, job_run_id=job_run_id) as run:
        if first:
            close_shards_queue(job_run=run, count=shard.count)
        actor = run.requested_by
        report = close_cycles(now=timezone.now(), job_run=run, actor=actor, shard=shard,
                              label=actor.get_username() if actor else "scheduled close")
        run.message = report.summary() if shard.count == 1 else f"shard {shard}: {report.summary()}"
        run.result = {"invoices": report.invoices, "issued": report.issued, "credit_notes": report.credit_notes,
                      "errors": report.errors}
    return run.message


def _sync_or_give_up(task: Task[Any, Any], object_id: int, sync: Callable[[int], object],
                     gave_up: Callable[[int, str], None], what: str = "") -> None:
    """One Stripe sync of an invoice or credit note; on the task's last attempt a temporary Stripe error is
    recorded on it by ``gave_up`` (the message prefixed by ``what``)."""
    with last_attempt_gives_up(task, lambda error: gave_up(object_id, what + error)):
        sync(object_id)


@stripe_task("invoicing.push_invoice", time_limit=600)
def push_invoice(self, invoice_id: int) -> None:
    """Push one issued invoice to Stripe (idempotent: continues from the saved state)."""
    _sync_or_give_up(self, invoice_id, push_invoice_to_stripe, push_gave_up)


@stripe_task("invoicing.void_invoice_in_stripe", time_limit=300)
def void_invoice_in_stripe(self, invoice_id: int) -> None:
    """Void in Stripe an invoice voided here after it was pushed."""
    _sync_or_give_up(self, invoice_id, void_in_stripe, push_gave_up, "voiding in Stripe: ")


@stripe_task("invoicing.push_credit_note", time_limit=300)
def push_credit_note(self, credit_note_id: int) -> None:
    """Push one credit note to Stripe as a credit note on its Stripe invoice."""
    _sync_or_give_up(self, credit_note_id, push_credit_note_to_stripe, credit_note_push_gave_up)


@stripe_task("invoicing.void_credit_note_in_stripe", time_limit=300)
def void_credit_note_in_stripe_task(self, credit_note_id: int) -> None:
    """Void in Stripe a credit note voided here after it was pushed."""
    _sync_or_give_up(self, credit_note_id, void_credit_note_in_stripe, credit_note_push_gave_up,
                     "voiding in Stripe: ")


@shared_task(name="invoicing.unbilled_snapshot", time_limit=1800, soft_time_limit=1750, ignore_result=True)
def unbilled_snapshot() -> str:
    """Beat: the dashboard's "unbilled so far this period" (preview totals of every active subscription)."""
    return record_unbilled_snapshot().message


@shared_task(name="invoicing.requeue_stuck_syncs", time_limit=300, soft_time_limit=270, ignore_result=True)
def requeue_stuck_syncs() -> int:
    """Beat: an invoice or credit note left "syncing" for hours (its push was never queued, e.g. the broker was
    down at commit) is pushed again; the pushes are idempotent and continue from the saved state. Invoices go
    first: a credit note waits for its invoice to be finalized in Stripe. Returns how many were queued."""
    cutoff = timezone.now() - dt.timedelta(hours=STUCK_AFTER_HOURS)
    stuck = list(Invoice.objects.filter(sync_status=Invoice.SyncStatus.SYNCING, issued_at__lt=cutoff)
                 .values_list("pk", flat=True)[:500])
    for invoice_id in stuck:
        push_invoice.delay(invoice_id)
    stuck_notes = list(CreditNote.objects.filter(sync_status=Invoice.SyncStatus.SYNCING, issued_at__lt=cutoff)
                       .values_list("pk", flat=True)[:500])
    for credit_note_id in stuck_notes:
        push_credit_note.delay(credit_note_id)
    return len(stuck) + len(stuck_notes)
