"""Reconciliation: for every subscription, rate card and closed period, what it rates to now against what is
billed for it (non-void invoices less re-rating credit notes), with the difference and why.

The re-rating rule says they are equal after a close. A difference is explained when the next close will bill
it (usage that arrived after the last close that rated the period, an invoice or credit note voided since) or
when it never will (the period ended before the lookback); any other difference is a defect, and
``billing_reconcile`` exits 1 on it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Max, Q
from django.utils import timezone

from catalog.charges import charge_rate_card, dimensional_price, is_dimensional
from catalog.dimensional import UsageGroup, effective_segments
from customers.models import Subscription
from customers.selectors import UsageRequest, features_usage, subject_periods
from metering.models import Event

from ..models import CreditNote, CycleClose, Invoice, InvoiceLine
from ..services.cycles import lookback_cutoff
from ..services.lines import BillingContext, billed_items, done_cycles, is_usage_priced, subscription_slots

OUTSIDE_LOOKBACK = "outside the lookback"
LATE_USAGE = "late usage awaiting the next close"
VOIDED = "voided since the last close, awaiting a reissue or the next close"
UNEXPLAINED = "unexplained"


@dataclass(frozen=True)
class ReconcileRow:
    customer: str
    subscription_id: int
    plan: str
    rate_card: str
    period_start: dt.datetime
    period_end: dt.datetime
    currency: str
    quantity: Decimal | None
    rated: int
    billed: int
    reason: str = ""
    unpriced: tuple[str, ...] = ()  # dimensional prices: usage no row prices, e.g. "no price for model=gpt-5: 42"

    @property
    def difference(self) -> int:
        return self.rated - self.billed

    @property
    def explained(self) -> bool:
        return self.difference == 0 or self.reason != UNEXPLAINED


@dataclass(frozen=True)
class LastClose:
    rated_as_of: dt.datetime | None  # the time its lines were computed for (events ingested after it are late)
    written_at: dt.datetime | None  # when it was stored (a void after it is not yet billed again)


def _last_close(subscription: Subscription) -> LastClose:
    """The latest close of the subscription (or of the one that replaced it)."""
    ids = [subscription.pk]
    successor = getattr(subscription, "next", None)
    if successor is not None:
        ids.append(successor.pk)
    closes = CycleClose.objects.filter(subscription_id__in=ids, closed_at__isnull=False)
    found = closes.aggregate(rated=Max("closed_at"), written=Max("updated_at"))
    return LastClose(found["rated"], found["written"])


def _why(subscription: Subscription, slot, *, now: dt.datetime, last: LastClose) -> str:
    if slot.period.end <= lookback_cutoff(now):
        return OUTSIDE_LOOKBACK
    since = last.written_at or slot.period.start
    key = Q(subscription=subscription, rate_card_key=slot.rate_card.key, period_start=slot.period.start)
    voided = InvoiceLine.objects.filter(key, invoice__status=Invoice.Status.VOID, invoice__voided_at__gt=since)
    voided_notes = CreditNote.objects.filter(status=CreditNote.Status.VOID, voided_at__gt=since,
                                             lines__subscription=subscription,
                                             lines__rate_card_key=slot.rate_card.key,
                                             lines__period_start=slot.period.start)
    if voided.exists() or voided_notes.exists():
        return VOIDED
    feature = slot.rate_card.feature
    if is_usage_priced(slot.rate_card) and feature is not None and feature.meter_id is not None:
        start = max(slot.period.start, subscription.start)
        end = slot.period.end if subscription.cancel_at is None else min(slot.period.end, subscription.cancel_at)
        windows = Q()
        for subject, a, b in subject_periods(subscription.customer, start, end):
            windows |= Q(subject=subject, time__gte=a, time__lt=b)
        late_after = last.rated_as_of or slot.period.start
        if windows and Event.objects.filter(windows, type=feature.meter.event_type,
                                            ingested_at__gt=late_after).exists():
            return LATE_USAGE
    return UNEXPLAINED


def reconcile(*, now: dt.datetime | None = None, customer_key: str | None = None, since: dt.datetime | None = None,
              chunk_size: int = 500) -> Iterator[ReconcileRow]:
    """Every closed (subscription, rate card, period) ending after ``since``, customer by customer."""
    now = now or timezone.now()
    subscriptions = Subscription.objects.filter(start__lte=now).select_related(
        "plan", "customer", "previous__plan", "next").prefetch_related("customer__attributions").order_by("pk")
    if customer_key:
        subscriptions = subscriptions.filter(customer__key=customer_key)
    context = BillingContext()
    last_pk = 0
    while True:
        chunk = list(subscriptions.filter(pk__gt=last_pk)[:chunk_size])
        if not chunk:
            return
        last_pk = chunk[-1].pk
        done = done_cycles(chunk + [s.next for s in chunk if getattr(s, "next", None) is not None])
        billed, _ = billed_items(chunk, starting_after=None)
        slots = [slot for subscription in chunk
                 for slot in subscription_slots(subscription, until=now, context=context)
                 if slot.owner in done and (since is None or slot.period.end > since)]
        requests = [UsageRequest(slot.subscription, slot.rate_card.usage_feature, slot.period.start, slot.period.end)
                    for slot in slots if is_usage_priced(slot.rate_card) and not is_dimensional(slot.rate_card)]
        requests += [UsageRequest(slot.subscription, slot.rate_card.usage_feature, a, b,
                                  dimensional_price(slot.rate_card).dimensions)
                     for slot in slots if is_dimensional(slot.rate_card)
                     for a, b in effective_segments(dimensional_price(slot.rate_card), slot.period.start,
                                                    slot.period.end)]
        usage = features_usage(requests)
        last_close: dict[int, LastClose] = {}
        for slot in slots:
            subscription, rate_card, period = slot.subscription, slot.rate_card, slot.period
            currency = subscription.plan.currency
            quantity = None
            groups = None
            if is_dimensional(rate_card):
                table = dimensional_price(rate_card)
                groups = [UsageGroup(a, b, tuple(zip(table.dimensions, values, strict=True)), q)
                          for a, b in effective_segments(table, period.start, period.end)
                          for values, q in usage[(subscription.pk, rate_card.usage_feature.pk, a, b,
                                                  table.dimensions)].items()]
                quantity = sum((group.quantity for group in groups), Decimal(0))
            elif is_usage_priced(rate_card):
                quantity = usage[(subscription.pk, rate_card.usage_feature.pk, period.start, period.end, ())]
            charge = charge_rate_card(rate_card, quantity=quantity or Decimal(0), currency=currency,
                                      proration=period.fraction, usage_groups=groups)
            rated = charge.total
            entry = billed.get((subscription.pk, rate_card.key, period.start))
            row = ReconcileRow(subscription.customer.key, subscription.pk,
                               f"{subscription.plan.key} v{subscription.plan.version}", rate_card.key, period.start,
                               period.end, currency, quantity, rated, entry.amount if entry else 0,
                               unpriced=tuple(f"{u.label}: {u.quantity}" for u in charge.unpriced))
            if row.difference:
                if subscription.pk not in last_close:
                    last_close[subscription.pk] = _last_close(subscription)
                row = ReconcileRow(**{**row.__dict__, "reason": _why(subscription, slot, now=now,
                                                                      last=last_close[subscription.pk])})
            yield row
