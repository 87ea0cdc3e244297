"""Closing billing cycles: exactly one invoice per subscription and cycle, safe to run twice at once and
to rerun after a crash at any step.

For each due cycle (boundary + grace period has passed) the state is recorded on a ``CycleClose`` row:

1. **claim**: the rows of a whole chunk are inserted at once (unique per subscription and cycle; rows another
   run already claimed are left as they are);
2. **draft and issue**: under the row's lock (another closer skips a locked row) the lines are computed, the
   invoice is stored with them and issued (numbered) and the row moves to ``issued`` — one transaction, so a
   crash leaves the claim and nothing else, and the rerun does the step again. With nothing to bill the row
   becomes ``empty``. With draft review on (``INVOICE_DRAFT_REVIEW_HOURS``) the invoice stays a draft and the
   row ``held``; :func:`issue_reviewed_drafts` issues it once the review time has passed.

A chunk's reads are batched (:class:`invoicing.billing.BillingContext`): plans once per version, billed lines
in one query, usage in one query per meter. Subscriptions are read in chunks by primary key, so memory stays
flat whatever the number of customers; the run's progress is a job run in the admin.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from common.jobs import job_run_progress
from customers.models import Subscription

from ..billing import BillingContext, Cycle, cycle_lines, grace_period, subscription_cycles
from ..models import CycleClose, Invoice, InvoiceEvent, InvoiceLine
from ..stripe_sync import schedule_push
from .lifecycle import invoice_issue, invoice_log, stamp_issued

logger = logging.getLogger(__name__)
DONE_STATES = (CycleClose.State.ISSUED, CycleClose.State.EMPTY, CycleClose.State.HELD)


@dataclass
class CloseReport:
    subscriptions: int = 0
    cycles: int = 0
    invoices: int = 0
    issued: int = 0
    empty: int = 0
    held: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.subscriptions:,} subscriptions, {self.cycles:,} cycles closed: {self.invoices:,} invoices "
            f"({self.issued:,} issued, {self.held:,} held for review), {self.empty:,} with nothing to bill"
        )
        if self.skipped:
            text += f", {self.skipped:,} left to a concurrent run"
        if self.errors:
            text += f"; {len(self.errors)} failed: " + "; ".join(self.errors[:5])
        return text


def store_draft(
    subscription: Subscription,
    cycle: Cycle,
    lines,
    *,
    replaces: Invoice | None = None,
    issue_at: dt.datetime | None = None,
) -> Invoice:
    """Inside the caller's transaction: the invoice of a cycle with its lines and totals — a draft, or, with
    ``issue_at``, issued (numbered) as it is inserted."""
    period = cycle.invoice_period
    total = sum(line.amount for line in lines)
    invoice = Invoice(
        customer=subscription.customer,
        subscription=subscription,
        cycle=cycle.index,
        currency=subscription.plan.currency,
        period_start=period.start,
        period_end=period.end,
        replaces=replaces,
        subtotal=total,
        total=total,
    )
    if issue_at is not None:
        stamp_issued(invoice, issue_at)
    invoice.save(force_insert=True)
    if issue_at is not None:
        schedule_push(invoice)
    InvoiceLine.objects.bulk_create(
        [
            InvoiceLine(
                invoice=invoice,
                position=position,
                kind=line.kind,
                rate_card=line.rate_card,
                rate_card_key=line.rate_card.key,
                feature=line.rate_card.feature,
                description=line.description[:500],
                period_start=line.period_start,
                period_end=line.period_end,
                quantity=line.quantity,
                unit_price=line.unit_price,
                tiers=line.tiers,
                amount=line.amount,
            )
            for position, line in enumerate(lines)
        ]
    )
    return invoice


def close_cycle(
    *,
    subscription: Subscription,
    cycle: Cycle,
    now: dt.datetime,
    report: CloseReport,
    context: BillingContext | None = None,
    claimed: bool = False,
) -> None:
    # 1. claim (close_cycles claims a whole chunk at once; this covers a direct call)
    if not claimed:
        with transaction.atomic():
            CycleClose.objects.get_or_create(
                subscription=subscription, cycle=cycle.index, defaults={"boundary": cycle.boundary}
            )
    # 2. draft and, with draft review off, issue: one transaction, so a crash leaves the claim or everything
    with transaction.atomic():
        close = (
            CycleClose.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(subscription=subscription, cycle=cycle.index)
            .first()
        )
        if close is None:
            report.skipped += 1
            return
        if close.state in DONE_STATES:
            return
        if close.state == CycleClose.State.CLAIMED:
            lines = cycle_lines(subscription, cycle, now=now, context=context)
            report.cycles += 1
            if not lines:
                close.state = CycleClose.State.EMPTY
                close.save(update_fields=["state", "updated_at"])
                report.empty += 1
                return
            review = settings.INVOICE_DRAFT_REVIEW_HOURS > 0
            invoice = store_draft(subscription, cycle, lines, issue_at=None if review else now)
            drafted = f"cycle {cycle.index} of subscription {subscription.pk}"
            InvoiceEvent.objects.bulk_create(
                [InvoiceEvent(invoice=invoice, action="drafted", actor_label="beat", detail=drafted)]
                + (
                    []
                    if review
                    else [
                        InvoiceEvent(
                            invoice=invoice, action="issued", actor_label="beat", detail=f"number {invoice.number}"
                        )
                    ]
                )
            )
            report.invoices += 1
            close.invoice = invoice
            if review:
                close.state = CycleClose.State.HELD
                close.review_until = now + dt.timedelta(hours=settings.INVOICE_DRAFT_REVIEW_HOURS)
                report.held += 1
            else:
                close.state = CycleClose.State.ISSUED
                report.issued += 1
            close.save(update_fields=["invoice", "state", "review_until", "updated_at"])
            return
    # 3. a draft left by an earlier version or an interrupted review step: issue it now
    with transaction.atomic():
        close = (
            CycleClose.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("invoice")
            .filter(subscription=subscription, cycle=cycle.index, state=CycleClose.State.DRAFTED)
            .first()
        )
        if close is None:
            return
        if close.invoice is not None and close.invoice.status == Invoice.Status.DRAFT:
            invoice_issue(invoice=close.invoice, label="beat", now=now)
        close.state = CycleClose.State.ISSUED
        close.save(update_fields=["state", "updated_at"])
        report.issued += 1


def _due_cycles(subscription: Subscription, now: dt.datetime, done: set[int]) -> list[Cycle]:
    grace = grace_period()
    return [c for c in subscription_cycles(subscription, until=now) if c.index not in done and c.due_at(grace) <= now]


def close_cycles(*, now: dt.datetime | None = None, job_run=None, chunk_size: int | None = None) -> CloseReport:
    """Close every due cycle of every subscription; returns what happened."""
    now = now or timezone.now()
    chunk_size = chunk_size or settings.INVOICE_CLOSE_CHUNK_SIZE
    report = CloseReport()
    subscriptions = Subscription.objects.filter(start__lte=now).order_by("pk")
    total = subscriptions.count()
    if job_run is not None:
        job_run_progress(job_run=job_run, done=0, total=total)
    last_pk = 0
    while True:
        chunk = list(
            subscriptions.filter(pk__gt=last_pk)
            .select_related("plan", "customer")
            .prefetch_related("customer__attributions")[:chunk_size]
        )
        if not chunk:
            break
        last_pk = chunk[-1].pk
        done: dict[int, set[int]] = {}
        for subscription_id, cycle in CycleClose.objects.filter(
            subscription__in=chunk, state__in=DONE_STATES
        ).values_list("subscription_id", "cycle"):
            done.setdefault(subscription_id, set()).add(cycle)
        due = [
            (subscription, _due_cycles(subscription, now, done.get(subscription.pk, set()))) for subscription in chunk
        ]
        # claim the chunk's due cycles at once (a concurrent run's claims are left alone)
        CycleClose.objects.bulk_create(
            [
                CycleClose(subscription=subscription, cycle=cycle.index, boundary=cycle.boundary)
                for subscription, cycles in due
                for cycle in cycles
            ],
            ignore_conflicts=True,
        )
        context = BillingContext()
        context.prepare([(subscription, cycles[0]) for subscription, cycles in due if len(cycles) == 1], now=now)
        for subscription, cycles in due:
            report.subscriptions += 1
            for cycle in cycles:
                try:
                    close_cycle(
                        subscription=subscription,
                        cycle=cycle,
                        now=now,
                        report=report,
                        context=context if len(cycles) == 1 else None,
                        claimed=True,
                    )
                except Exception as exc:  # one bad subscription must not stop the others; the rerun retries it
                    logger.exception("closing cycle %s of subscription %s failed", cycle.index, subscription.pk)
                    report.errors.append(f"subscription {subscription.pk} cycle {cycle.index}: {exc}")
        if job_run is not None:
            job_run_progress(job_run=job_run, done=report.subscriptions, total=total, message=report.summary())
    report.issued += issue_reviewed_drafts(now=now)
    return report


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
                invoice_issue(invoice=close.invoice, label="beat", now=now)
                issued += 1
            close.state = CycleClose.State.ISSUED
            close.save(update_fields=["state", "updated_at"])
    return issued


@transaction.atomic
def invoice_reissue(*, invoice: Invoice, actor=None) -> Invoice:
    """A corrected draft for the cycle of a voided invoice (recomputed from current usage)."""
    invoice = (
        Invoice.objects.select_for_update()
        .select_related("subscription__plan", "subscription__customer")
        .get(pk=invoice.pk)
    )
    if invoice.status != Invoice.Status.VOID:
        raise ValueError(f"invoice {invoice} is {invoice.status}: only a voided invoice can be reissued")
    if (
        Invoice.objects.filter(subscription=invoice.subscription, cycle=invoice.cycle)
        .exclude(status=Invoice.Status.VOID)
        .exists()
    ):
        raise ValueError(f"cycle {invoice.cycle} of this subscription already has a valid invoice")
    subscription = invoice.subscription
    cycle = next(
        (
            c
            for c in subscription_cycles(subscription, until=max(timezone.now(), invoice.period_end))
            if c.index == invoice.cycle
        ),
        None,
    )
    if cycle is None:
        raise ValueError("the cycle of this invoice no longer exists (the subscription changed)")
    lines = cycle_lines(subscription, cycle, now=timezone.now())
    new = store_draft(subscription, cycle, lines, replaces=invoice)
    new.total = new.subtotal = new.lines.aggregate(total=Sum("amount"))["total"] or 0
    invoice_log(new, "drafted", actor=actor, detail=f"reissue of {invoice}")
    CycleClose.objects.filter(subscription=subscription, cycle=invoice.cycle).update(invoice=new)
    return new
