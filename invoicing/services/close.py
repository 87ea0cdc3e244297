"""Closing billing cycles: exactly one invoice per subscription and cycle, safe to run twice at once and
to rerun after a crash at any step.

For each due cycle (boundary + grace period has passed) the state is recorded on a ``CycleClose`` row:

1. **claim**: the rows of a whole chunk are inserted at once (unique per subscription and cycle; rows another
   run already claimed are left as they are);
2. **bill**: under the customer's billing lock and the row's lock (another closer skips both), the lines are
   computed by the re-rating rule (:mod:`invoicing.services.lines`), the invoice is stored with them and issued
   (numbered), credits it cannot carry become credit notes, and the row moves to ``issued`` (or ``empty``:
   nothing to bill) — one transaction, so a crash leaves the claim and nothing else, and the rerun does the
   step again. With draft review on (``INVOICE_DRAFT_REVIEW_HOURS``) the invoice stays a draft and the row
   ``held``; :func:`issue_reviewed_drafts` issues it once the review time has passed.

A cycle that fails (an amount too large to store, a credit that cannot be placed, a bug) keeps its claim with
the error on its row, shown on the dashboard, and is retried by the next run; every other cycle closes. A
chunk's usage reads are batched (:class:`~invoicing.services.lines.BillingContext`); subscriptions are read in
chunks by primary key, so memory stays flat whatever the number of customers.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from common.jobs import job_run_progress, job_run_queue
from common.models import JobRun
from common.queue import enqueues_coalesced
from credits.services.low_balance import credits_low_check
from customers.models import Subscription

from ..models import CycleClose, Invoice
from .cycles import Cycle, due_cycles
from .lifecycle import bill_cycle, issue_locked
from .lines import BillingContext, Fingerprint, cycle_bill
from .top_ups import auto_top_up

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)
DONE_STATES = CycleClose.DONE_STATES
BEAT = "scheduled close"


@dataclass
class CloseReport:
    subscriptions: int = 0
    cycles: int = 0
    invoices: int = 0
    issued: int = 0
    empty: int = 0
    held: int = 0
    credit_notes: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.subscriptions:,} subscriptions, {self.cycles:,} cycles closed: {self.invoices:,} invoices "
            f"({self.issued:,} issued, {self.held:,} held for review), {self.empty:,} with nothing to bill"
        )
        if self.credit_notes:
            text += f", {self.credit_notes:,} credit notes"
        if self.skipped:
            text += f", {self.skipped:,} left to a concurrent run"
        if self.errors:
            text += f"; {len(self.errors)} failed: " + "; ".join(self.errors[:5])
        return text


def _record_failure(subscription: Subscription, cycle: Cycle, error: str, now: dt.datetime) -> None:
    CycleClose.objects.filter(subscription=subscription, cycle=cycle.index).exclude(state__in=DONE_STATES).update(
        error=error[:4000], failed_at=now)


def close_cycle(
    *,
    subscription: Subscription,
    cycle: Cycle,
    now: dt.datetime,
    report: CloseReport,
    context: BillingContext | None = None,
    claimed: bool = False,
    label: str = BEAT,
    actor: User | None = None,
) -> None:
    if not claimed:
        with transaction.atomic():
            CycleClose.objects.get_or_create(
                subscription=subscription, cycle=cycle.index, defaults={"boundary": cycle.boundary}
            )
    try:
        _bill_claimed_cycle(subscription, cycle, now=now, report=report, context=context, label=label, actor=actor)
    except Exception as exc:  # one bad cycle must not stop the others; the row keeps the error, reruns retry
        logger.exception("closing cycle %s of subscription %s failed", cycle.index, subscription.pk)
        message = f"{type(exc).__name__}: {exc}"
        report.errors.append(f"subscription {subscription.pk} cycle {cycle.index}: {message}")
        _record_failure(subscription, cycle, message, now)


_CLAIM_SQL = """
    SELECT cc.id, cc.state, cc.invoice_id,
           (SELECT COALESCE(MAX(i.id), 0) FROM invoicing_invoice i WHERE i.customer_id = c.id),
           (SELECT COUNT(*) FROM invoicing_invoice i WHERE i.customer_id = c.id AND i.status = 'void'),
           (SELECT COALESCE(MAX(n.id), 0) FROM invoicing_creditnote n WHERE n.customer_id = c.id),
           (SELECT COUNT(*) FROM invoicing_creditnote n WHERE n.customer_id = c.id AND n.status = 'void'),
           EXISTS (SELECT 1 FROM credits_creditgrant g WHERE g.customer_id = c.id),
           EXISTS (SELECT 1 FROM credits_autotopup a WHERE a.customer_id = c.id AND a.enabled),
           EXISTS (SELECT 1 FROM credits_lowbalancealert l WHERE l.customer_id = c.id AND l.enabled)
    FROM customers_customer c
    JOIN invoicing_cycleclose cc ON cc.subscription_id = %s AND cc.cycle = %s
    WHERE c.id = %s
"""


def _claim(subscription: Subscription, cycle: Cycle,
           ) -> tuple[int, str, int | None, Fingerprint, bool, bool, bool] | None:
    """Inside a transaction: lock the customer's billing and the cycle's row in one statement (None when another
    close holds either: this run leaves the cycle to it); the row's id and state, the customer's billing
    fingerprint, and whether it has prepaid credit grants, an auto top-up and a low-credit alert (so a customer
    without them costs no query for them)."""
    sql = _CLAIM_SQL
    if connection.vendor == "postgresql":
        sql += " FOR UPDATE OF c, cc SKIP LOCKED"
    with connection.cursor() as cursor:
        cursor.execute(sql, [subscription.pk, cycle.index, subscription.customer_id])
        row = cursor.fetchone()
    if row is None:
        return None
    close_id, state, invoice_id, *fingerprint, has_grants, tops_up, alerts = row
    return (close_id, state, invoice_id, (fingerprint[0], fingerprint[1], fingerprint[2], fingerprint[3]),
            bool(has_grants), bool(tops_up), bool(alerts))


def _bill_claimed_cycle(subscription: Subscription, cycle: Cycle, *, now: dt.datetime, report: CloseReport,
                        context: BillingContext | None, label: str, actor: User | None) -> None:
    with transaction.atomic():
        claim = _claim(subscription, cycle)
        if claim is None:
            report.skipped += 1
            return
        close_id, state, invoice_id, fingerprint, has_grants, tops_up, alerts = claim
        if state in DONE_STATES:
            return
        row = CycleClose.objects.filter(pk=close_id)
        if state == CycleClose.State.DRAFTED:  # left by an earlier version: issue its draft
            draft = None if invoice_id is None else Invoice.objects.select_for_update().select_related(
                "customer").filter(pk=invoice_id, status=Invoice.Status.DRAFT).first()
            if draft is not None:
                issue_locked(draft, now=now, actor=actor, label=label)
            row.update(state=CycleClose.State.ISSUED, updated_at=timezone.now())
            report.issued += 1
            return
        bill = cycle_bill(subscription, cycle, now=now, context=context, fingerprint=fingerprint)
        report.cycles += 1
        checked: list[int] = []

        def record(invoice: Invoice | None) -> None:
            state = (CycleClose.State.EMPTY if invoice is None else
                     CycleClose.State.HELD if invoice.status == Invoice.Status.DRAFT else CycleClose.State.ISSUED)
            review_until = (now + dt.timedelta(hours=settings.INVOICE_DRAFT_REVIEW_HOURS)
                            if state == CycleClose.State.HELD else None)
            row.update(invoice=invoice, state=state, review_until=review_until, closed_at=now, error="",
                       failed_at=None, updated_at=timezone.now())

        def before_numbering(invoice: Invoice) -> None:
            """With the stored invoice, before it takes its number (whose lock queues concurrent closes until the
            commit): the credits this close burnt may cross the customer's auto top-up threshold, whose top-up is
            then a line of this invoice; and the cycle's row records the invoice — first, so that the live credits
            the top-up reads no longer count the period this invoice bills as unbilled usage."""
            record(invoice)
            if tops_up:
                checked.append(invoice.pk)
                auto_top_up(customer_id=subscription.customer_id, now=now, label=label, invoice=invoice)

        invoice, credit_notes = bill_cycle(subscription=subscription, cycle=cycle, lines=bill.lines,
                                           billed=bill.billed, now=now, actor=actor, label=label,
                                           has_grants=has_grants, extend=before_numbering)
        report.credit_notes += len(credit_notes)
        if invoice is None:
            record(None)
            report.empty += 1
        else:
            report.invoices += 1
            if invoice.status == Invoice.Status.DRAFT:
                report.held += 1
            else:
                report.issued += 1
        if tops_up and not checked:  # no invoice (nothing to bill): a top-up gets its own invoice
            auto_top_up(customer_id=subscription.customer_id, now=now, label=label)
        if alerts:  # the credits this close burnt (and any top-up) decide the low-credit alert, announced with them
            credits_low_check(customer_id=subscription.customer_id, now=now)
    if context is not None and context.done is not None:
        context.done.add((subscription.pk, cycle.index))


@dataclass(frozen=True)
class Shard:
    """One of ``count`` disjoint parts of the subscriptions (those whose id modulo ``count`` is ``index``), so
    that several workers close one month-end together; ``Shard(0, 1)`` is all of them."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ValueError(f"no shard {self.index} of {self.count}")

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


def close_cycles(*, now: dt.datetime | None = None, job_run: JobRun | None = None, chunk_size: int | None = None,
                 label: str = BEAT, actor: User | None = None, shard: Shard = Shard()) -> CloseReport:
    """Close every due cycle of every subscription (of ``shard``); returns what happened.

    The tasks a chunk's invoices queue when they commit are sent when the chunk ends, each distinct one once (one
    outbox dispatch per chunk rather than per invoice). A worker that dies mid-chunk loses none of them for good:
    the beat's outbox sweep and ``requeue_stuck_syncs`` pick up what was committed."""
    now = now or timezone.now()
    chunk_size = chunk_size or settings.INVOICE_CLOSE_CHUNK_SIZE
    report = CloseReport()
    subscriptions = Subscription.objects.filter(start__lte=now).order_by("pk")
    if shard.count > 1:
        subscriptions = subscriptions.alias(shard_slot=F("pk") % shard.count).filter(shard_slot=shard.index)
    total = subscriptions.count()
    if job_run is not None:
        job_run_progress(job_run=job_run, done=0, total=total)
    last_pk = 0
    while True:
        chunk = list(
            subscriptions.filter(pk__gt=last_pk)
            .select_related("plan", "customer", "previous__plan", "next")
            .prefetch_related("customer__attributions")[:chunk_size]
        )
        if not chunk:
            break
        last_pk = chunk[-1].pk
        done: dict[int, set[int]] = {}
        for subscription_id, index in CycleClose.objects.filter(
            subscription__in=chunk, state__in=DONE_STATES
        ).values_list("subscription_id", "cycle"):
            done.setdefault(subscription_id, set()).add(index)
        due = [(s, due_cycles(s, now=now, done=done.get(s.pk, set()))) for s in chunk]
        CycleClose.objects.bulk_create(
            [CycleClose(subscription=s, cycle=c.index, boundary=c.boundary) for s, cycles in due for c in cycles],
            ignore_conflicts=True,
        )
        context = BillingContext()
        read_at = timezone.now()
        context.prepare([(s, c) for s, cycles in due for c in cycles], now=now, read_at=read_at)
        with enqueues_coalesced():
            for subscription, cycles in due:
                report.subscriptions += 1
                for cycle in cycles:
                    close_cycle(subscription=subscription, cycle=cycle, now=now, report=report, context=context,
                                claimed=True, label=label, actor=actor)
        if job_run is not None:
            job_run_progress(job_run=job_run, done=report.subscriptions, total=total, message=report.summary())
    if shard.index == 0:
        report.issued += issue_reviewed_drafts(now=now)
    return report


def close_shards_queue(*, job_run: JobRun, count: int) -> list[JobRun]:
    """The first shard's job run (started by beat or the admin) queues the other ``count - 1`` shards of the
    close: a job run each, with its trigger and requester, started as ``invoicing.close_cycles`` tasks after the
    commit. With ``count`` 1 nothing is queued."""
    if count <= 1:
        return []
    job_run.params = {**job_run.params, "shard": str(Shard(0, count))}
    JobRun.objects.filter(pk=job_run.pk).update(params=job_run.params)
    return [job_run_queue(kind="close_cycles", task_name="invoicing.close_cycles", params={"shard": str(shard)},
                          requested_by=job_run.requested_by, trigger=job_run.trigger,
                          shard_index=shard.index, shard_count=shard.count)
            for shard in (Shard(index, count) for index in range(1, count))]


def issue_reviewed_drafts(*, now: dt.datetime | None = None) -> int:
    """Issue drafts held for review once their review time (``INVOICE_DRAFT_REVIEW_HOURS`` after the close that
    made them) has passed."""
    now = now or timezone.now()
    issued = 0
    held = CycleClose.objects.filter(state=CycleClose.State.HELD, review_until__lte=now).values_list("pk", flat=True)
    for pk in list(held):
        with transaction.atomic():
            close = (
                CycleClose.objects.select_for_update(skip_locked=True, of=("self",))
                .select_related("invoice")
                .filter(pk=pk, state=CycleClose.State.HELD)
                .first()
            )
            if close is None:
                continue
            if close.invoice is not None and close.invoice.status == Invoice.Status.DRAFT:
                invoice = Invoice.objects.select_for_update().select_related("customer").get(pk=close.invoice.pk)
                issue_locked(invoice, now=now, label=BEAT)
                issued += 1
            close.state = CycleClose.State.ISSUED
            close.save(update_fields=["state", "updated_at"])
    return issued


