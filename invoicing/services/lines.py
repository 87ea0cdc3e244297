"""The re-rating rule: what a cycle bills. One code path for the preview, the close, late usage and reissues.

For each subscription, priced rate card and billing period (an *item*), the amount billed across all non-void
invoices, less the re-rating credit notes against them, must equal the period's **rated** amount: all its usage
known now, priced as a whole (tiers, free quantity, minimum and maximum spend over the whole period; in-advance
and in-arrears flat fees prorated to the part of the period the subscription covers). A cycle bills, for every
item it is due for, ``rated − already billed``:

- its own items (usage and in-arrears fees of period ``k − 1``, in-advance fees of period ``k``): the full
  priced lines the first time;
- every other item of the subscription (and of the subscriptions it replaced by plan changes) whose period is
  due (in-arrears: ended at least the grace period ago; in-advance: started) and ended within the lookback
  (``INVOICE_LATE_USAGE_LOOKBACK_DAYS``, measured from the period's end): a ``late_usage`` line when more is
  due, a ``credit`` line when less is (an in-advance fee of a period cut short, usage rated lower), an
  adjustment of a fee, each labelled with its own period; or, never billed before, its full priced lines.

A void removes that invoice's lines from "already billed", so the next close (or a reissue) bills what is then
missing. Lines are rounded once (the pricing engine), and totals are sums of lines.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from django.db.models import Case, Count, F, Max, Q, Value, When
from django.db.models.functions import Cast

from catalog.charges import charge_rate_card, dimensional_price, is_dimensional
from catalog.dimensional import DEFAULT_PART, UnpricedUsage, UsageGroup, segment_usage_groups
from catalog.models import Feature, Plan, RateCard
from catalog.pricing import PriceLine
from catalog.rules import USAGE_PRICES, cadence_delta
from common.fields import PreciseDecimalField
from customers.models import Subscription
from customers.periods import Period
from customers.selectors import (
    GroupValues,
    UsageRequest,
    feature_usage,
    feature_usage_grouped,
    features_usage,
)

from ..models import CreditNote, CreditNoteLine, CycleClose, Invoice, InvoiceLine
from . import descriptions
from .cycles import Cycle, lookback_cutoff, replaced_at, subscription_chain, subscription_periods

BILLED_STATUSES = (Invoice.Status.DRAFT, Invoice.Status.ISSUED, Invoice.Status.PAID, Invoice.Status.UNCOLLECTIBLE)
KIND_BY_ENGINE = {
    "flat_fee": InvoiceLine.Kind.FLAT_FEE,
    "usage": InvoiceLine.Kind.USAGE,
    "minimum_spend": InvoiceLine.Kind.MINIMUM_SPEND,
    "discount": InvoiceLine.Kind.DISCOUNT,
}
ItemKey = tuple[int, str, dt.datetime]  # (subscription id, rate card key, period start)
# What changes what a customer's periods count as billed: its newest invoice and credit note, and how many of each
# are void (a status change to paid or uncollectible does not count).
Fingerprint = tuple[int, int, int, int]
CREDITED_FEE, CREDITED_USAGE = "credited_fee", "credited_usage"  # credit note lines, read with invoice lines


@dataclass
class DraftLine:
    kind: str
    subscription: Subscription
    rate_card: RateCard
    description: str
    period_start: dt.datetime
    period_end: dt.datetime
    quantity: Decimal
    unit_price: Decimal | None
    amount: int
    tiers: list[dict[str, Any]] = field(default_factory=list)
    rated_quantity: Decimal | None = None
    part: str = ""  # dimensional prices: the row version billed ("" for the rate card as a whole)
    dimensions: dict[str, str] | None = None  # dimensional prices: the row's match

    @property
    def item_key(self) -> ItemKey:
        return (self.subscription.pk, self.rate_card.key, self.period_start)


@dataclass
class Billed:
    """What non-void invoices (less re-rating credit notes) billed for one item."""

    amount: int = 0
    quantity: Decimal = Decimal(0)  # fee fractions billed (flat fees), for the description of an adjustment
    usage_quantity: Decimal = Decimal(0)  # usage billed so far (usage-priced), for the description of a delta
    lines: int = 0
    by_invoice: dict[int, int] = field(default_factory=dict)  # invoice id → its net amount for the item
    parts: dict[str, Billed] = field(default_factory=dict)  # the same per price part (dimensional prices)


@dataclass(frozen=True)
class Item:
    subscription: Subscription
    rate_card: RateCard
    period: Period
    own: bool
    usage_end: dt.datetime  # usage counts in [period.start, usage_end) (a preview of a running period stops now)

    @property
    def key(self) -> ItemKey:
        return (self.subscription.pk, self.rate_card.key, self.period.start)


def is_usage_priced(rate_card: RateCard) -> bool:
    return rate_card.price_type in USAGE_PRICES


def is_in_advance(rate_card: RateCard) -> bool:
    return rate_card.price_type == "flat" and rate_card.payment_term == RateCard.PaymentTerm.IN_ADVANCE


class BillingContext:
    """What :func:`cycle_lines` reads, cached or batched for a whole chunk of a close run.

    Without preparation it reads everything directly (previews, reissues). A close prepares a chunk: the plans'
    rate cards once per plan version (published versions never change) and the usage of every item in one query
    per meter (found by a first pass that only records what it would ask). What was billed is read per cycle,
    under the customer's lock, so concurrent closes never bill from a stale picture; when another close billed
    this customer after the usage was read, the cycle reads its usage again.
    """

    def __init__(self) -> None:
        self._rate_cards: dict[int, list[RateCard]] = {}
        self._usage: dict[tuple, Any] = {}
        self._recording: list[UsageRequest] | None = None
        self.usage_read_at: dt.datetime | None = None
        self.fresh_usage = False
        # (subscription id, cycle) pairs known to be closed; a batch keeps it up to date as it closes cycles
        # (a stale answer only leaves an item to the cycle it belongs to).
        self.done: set[tuple[int, int]] | None = None
        # What the chunk's subscriptions had billed when it was read, and each customer's billing fingerprint
        # then: a cycle uses it only while its customer's fingerprint, read under the customer's lock, still matches.
        self._billed: dict[int, dict[ItemKey, Billed]] = {}
        self._billed_since: dt.datetime | None = None
        self._fingerprints: dict[int, Fingerprint] = {}

    def prefetched_billed(self, chain: list[Subscription], *, starting_after: dt.datetime,
                          fingerprint: Fingerprint | None) -> dict[ItemKey, Billed] | None:
        """What the chain had billed, from the batch read, if nothing changed for its customer since."""
        if (fingerprint is None or self._billed_since is None or starting_after < self._billed_since
                or any(member.pk not in self._billed for member in chain)
                or self._fingerprints.get(chain[0].customer_id) != fingerprint):
            return None
        return {key: entry for member in chain for key, entry in self._billed[member.pk].items()}

    def rate_cards(self, plan: Plan) -> list[RateCard]:
        if plan.pk not in self._rate_cards or plan.status == Plan.Status.DRAFT:
            self._rate_cards[plan.pk] = list(
                plan.rate_cards.select_related("feature", "feature__meter").prefetch_related("tiers", "price_rows"))
        return self._rate_cards[plan.pk]

    def usage(self, subscription: Subscription, feature: Feature, start: dt.datetime, end: dt.datetime) -> Decimal:
        request = UsageRequest(subscription, feature, start, end)
        if self._recording is not None:
            self._recording.append(request)
            return Decimal(0)
        if not self.fresh_usage and request.key in self._usage:
            return self._usage[request.key]
        return feature_usage(subscription=subscription, feature=feature, start=start, end=end)

    def usage_groups(self, subscription: Subscription, feature: Feature, dimensions: tuple[str, ...],
                     start: dt.datetime, end: dt.datetime) -> dict[GroupValues, Decimal]:
        request = UsageRequest(subscription, feature, start, end, dimensions)
        if self._recording is not None:
            self._recording.append(request)
            return {}
        if not self.fresh_usage and request.key in self._usage:
            return self._usage[request.key]
        return feature_usage_grouped(subscription=subscription, feature=feature, dimensions=dimensions,
                                     start=start, end=end)

    def prepare(self, work: list[tuple[Subscription, Cycle]], *, now: dt.datetime, read_at: dt.datetime) -> None:
        """Batch the usage reads of these cycles, and read which cycles of their subscriptions are closed."""
        if not work:
            return
        members = {member.pk: member for subscription, _ in work for member in subscription_chain(subscription)}
        self.done = set(done_cycles(list(members.values())))
        self._fingerprints = billing_fingerprints({subscription.customer_id for subscription, _ in work})
        self._billed_since = min(_billed_since(subscription_chain(subscription), cycle, now)
                                 for subscription, cycle in work)
        billed, _ = billed_items(list(members.values()), starting_after=self._billed_since)
        self._billed = {pk: {} for pk in members}
        for key, entry in billed.items():
            self._billed[key[0]][key] = entry
        self._recording = []
        try:
            for subscription, cycle in work:
                try:
                    for item in cycle_items(subscription, cycle, now=now, done=None, context=self):
                        if is_dimensional(item.rate_card):
                            dimensional_usage(self, item)
                        elif is_usage_priced(item.rate_card):
                            self.usage(item.subscription, item.rate_card.usage_feature, item.period.start,
                                       item.usage_end)
                except Exception:  # noqa: BLE001, S112 - the real close of this cycle reports it
                    continue
            requests = self._recording
        finally:
            self._recording = None
        self.usage_read_at = read_at
        self._usage.update(features_usage(requests))


def dimensional_usage(context: BillingContext, item: Item) -> list[UsageGroup]:
    """The item's usage split by its rate card's dimensions, one read per effective segment of its table."""
    if item.period.end <= item.period.start:
        return []
    return dimensional_usage_between(context, item.subscription, item.rate_card, item.period.start, item.usage_end)


def dimensional_usage_between(context: BillingContext, subscription: Subscription, rate_card: RateCard,
                              start: dt.datetime, end: dt.datetime) -> list[UsageGroup]:
    """A dimensional rate card's usage by a subscription in ``[start, end)``, split by the table's dimensions, one
    read per effective segment of the table (what :func:`charge_rate_card` prices, rows in effect per segment)."""
    if end <= start:
        return []
    table = dimensional_price(rate_card)
    return segment_usage_groups(table, start, end, lambda a, b: context.usage_groups(
        subscription, rate_card.usage_feature, table.dimensions, a, b))


@dataclass(frozen=True)
class Slot:
    """A priced rate card in one period of a subscription, and the cycle that bills it first: an in-advance fee
    of period ``i`` belongs to cycle ``i``, usage and in-arrears fees of period ``i`` to cycle ``i + 1`` (for a
    subscription a plan change replaced, cycles at or after the change belong to its successor's first cycle)."""

    subscription: Subscription
    rate_card: RateCard
    period: Period
    owner: tuple[int, int]  # (subscription id, cycle index)


def subscription_slots(subscription: Subscription, *, until: dt.datetime, context: BillingContext,
                       extra_period: Period | None = None) -> list[Slot]:
    """The slots of the subscription's periods that begin before ``until`` (plus ``extra_period``)."""
    periods = subscription_periods(subscription, until=until)
    if extra_period is not None and (not periods or periods[-1].start < extra_period.start):
        periods.append(extra_period)
    cutover = replaced_at(subscription)
    successor_id = subscription.next.pk if cutover is not None else None
    slots = []
    for index, period in enumerate(periods):
        for rate_card in context.rate_cards(subscription.plan):
            if not rate_card.price_type:
                continue
            cycle = index if is_in_advance(rate_card) else index + 1
            boundary = periods[cycle - 1].end if cycle > 0 else periods[0].start
            carried = cutover is not None and boundary >= cutover
            owner = (successor_id, 0) if carried and successor_id is not None else (subscription.pk, cycle)
            slots.append(Slot(subscription, rate_card, period, owner))
    return slots


def cycle_items(
    subscription: Subscription,
    cycle: Cycle,
    *,
    now: dt.datetime,
    done: frozenset[tuple[int, int]] | set[tuple[int, int]] | None,
    usage_until: dt.datetime | None = None,
    context: BillingContext,
    also: frozenset[ItemKey] = frozenset(),
    billed_keys: frozenset[ItemKey] = frozenset(),
) -> list[Item]:
    """Every item this cycle of the subscription bills or re-rates: its own slots, always; other slots (of this
    subscription and of those it replaced) once the cycle they belong to is done (``done``: (subscription id,
    cycle) pairs; None counts every earlier cycle as done, to record what a batch may read), and only within the
    lookback unless listed in ``also`` (the items of an invoice being reissued). Billed items whose period no
    longer exists (a subscription canceled at the instant its period began) rate to nothing."""
    cutoff = lookback_cutoff(now)
    me = (subscription.pk, cycle.index)
    items: list[Item] = []
    for position, member in enumerate(subscription_chain(subscription)):
        until = (cycle.boundary if position == 0 else now) + dt.timedelta(microseconds=1)
        slots = subscription_slots(member, until=until, context=context,
                                   extra_period=cycle.next if position == 0 else None)
        billed_starts = {start for subscription_id, _, start in billed_keys if subscription_id == member.pk}
        if billed_starts:
            existing = {period.start for period in subscription_periods(
                member, until=max(billed_starts) + dt.timedelta(microseconds=1))}
            rate_cards = {rate_card.key: rate_card for rate_card in context.rate_cards(member.plan)}
            for subscription_id, card_key, start in sorted(billed_keys):
                if subscription_id != member.pk or start in existing or card_key not in rate_cards:
                    continue
                # whatever the lookback: a period that vanished must give back what it billed
                items.append(Item(member, rate_cards[card_key], Period(-1, start, start, start, start), False, start))
        for slot in slots:
            own = slot.owner == me
            key = (member.pk, slot.rate_card.key, slot.period.start)
            if not own:
                if slot.owner[0] == subscription.pk and slot.owner[1] >= cycle.index:
                    continue  # a later cycle's
                if done is not None and slot.owner not in done:
                    continue  # the cycle it belongs to has not closed yet: that close bills it
                if slot.period.end <= cutoff and key not in also:
                    continue
            period = slot.period
            usage_end = period.end if usage_until is None or not own else min(period.end, usage_until)
            items.append(Item(member, slot.rate_card, period, own, usage_end))
    return items


def done_cycles(subscriptions: list[Subscription]) -> frozenset[tuple[int, int]]:
    return frozenset(CycleClose.objects.filter(subscription__in=subscriptions, state__in=CycleClose.DONE_STATES)
                     .values_list("subscription_id", "cycle"))


def _billed_since(chain: list[Subscription], cycle: Cycle, now: dt.datetime) -> dt.datetime:
    """Periods starting after this may end within the lookback (or be the cycle's own): their lines are read.
    By period start, since every line of a period shares it (its end shrinks when a subscription ends early)."""
    cutoff = lookback_cutoff(now)
    if cycle.previous is not None:
        cutoff = min(cutoff, cycle.previous.start)
    return min(cutoff - cadence_delta(member.plan.billing_cadence) for member in chain) - dt.timedelta(days=1)


def billing_fingerprints(customer_ids: set[int]) -> dict[int, Fingerprint]:
    invoices = {row[0]: row[1:] for row in Invoice.objects.filter(customer_id__in=customer_ids).values("customer_id")
                .annotate(newest=Max("id"), void=Count("id", filter=Q(status=Invoice.Status.VOID)))
                .values_list("customer_id", "newest", "void")}
    notes = {row[0]: row[1:] for row in CreditNote.objects.filter(customer_id__in=customer_ids).values("customer_id")
             .annotate(newest=Max("id"), void=Count("id", filter=Q(status=CreditNote.Status.VOID)))
             .values_list("customer_id", "newest", "void")}
    return {pk: (*invoices.get(pk, (0, 0)), *notes.get(pk, (0, 0))) for pk in customer_ids}


def billed_items(subscriptions: list[Subscription], *, starting_after: dt.datetime | None,
                 ) -> tuple[dict[ItemKey, Billed], dt.datetime | None]:
    """What was billed for the items of these subscriptions whose periods start after ``starting_after`` (None:
    all), and when the newest of those billings was written."""
    ids = [s.pk for s in subscriptions]
    billed: dict[ItemKey, Billed] = defaultdict(Billed)
    newest: dt.datetime | None = None
    lines = InvoiceLine.objects.filter(subscription_id__in=ids, invoice__status__in=BILLED_STATUSES).exclude(
        kind=InvoiceLine.Kind.CREDITS_APPLIED)  # prepaid credits pay what was billed; they do not unbill it
    credits = CreditNoteLine.objects.filter(subscription_id__in=ids, kind=CreditNoteLine.Kind.RERATING,
                                            credit_note__status=CreditNote.Status.ISSUED)
    if starting_after is not None:
        lines = lines.filter(period_start__gt=starting_after)
        credits = credits.filter(period_start__gt=starting_after)
    columns = ("subscription_id", "rate_card_key", "period_start", "row_kind", "amount", "quantity", "rated",
               "billed_by", "written_at", "price_part")
    lines = lines.annotate(row_kind=F("kind"), rated=F("rated_quantity"), billed_by=F("invoice_id"),
                           written_at=F("invoice__created_at"))
    credits = credits.annotate(
        row_kind=Case(When(rate_card__price_type="flat", then=Value(CREDITED_FEE)), default=Value(CREDITED_USAGE)),
        rated=Cast(Value(None), PreciseDecimalField()), billed_by=F("credit_note__invoice_id"),
        written_at=F("credit_note__created_at"))
    rows = lines.order_by().values_list(*columns).union(credits.order_by().values_list(*columns), all=True)
    for subscription_id, rate_card_key, period_start, kind, amount, quantity, rated, invoice_id, created, part in rows:
        item_entry = billed[(subscription_id, rate_card_key, period_start)]
        newest = created if newest is None or created > newest else newest
        for entry in (item_entry, item_entry.parts.setdefault(part or "", Billed())):
            _count_billed(entry, kind, amount, quantity, rated, invoice_id)
    return dict(billed), newest


def _count_billed(entry: Billed, kind: str, amount: int, quantity: Decimal, rated: Decimal | None,
                  invoice_id: int) -> None:
    if kind in (CREDITED_FEE, CREDITED_USAGE):  # a re-rating credit note's line: it unbills
        entry.amount -= amount
        entry.by_invoice[invoice_id] = entry.by_invoice.get(invoice_id, 0) - amount
        if kind == CREDITED_FEE:
            entry.quantity -= quantity
        else:
            entry.usage_quantity -= quantity
        return
    entry.amount += amount
    entry.lines += 1
    entry.by_invoice[invoice_id] = entry.by_invoice.get(invoice_id, 0) + amount
    if kind == InvoiceLine.Kind.FLAT_FEE:
        entry.quantity += quantity
    elif kind == InvoiceLine.Kind.CREDIT and rated is None:
        entry.quantity -= quantity
    elif kind == InvoiceLine.Kind.USAGE:
        entry.usage_quantity += rated if rated is not None else quantity
    elif kind == InvoiceLine.Kind.LATE_USAGE:
        entry.usage_quantity += quantity
    elif kind == InvoiceLine.Kind.CREDIT:
        entry.usage_quantity -= quantity


def _tiers_json(line: PriceLine) -> list[dict[str, Any]]:
    return [
        {
            "tier": t.index + 1,
            "from": format(t.from_quantity, "f"),
            "up_to": None if t.up_to is None else format(t.up_to, "f"),
            "quantity": format(t.quantity, "f"),
            "unit_amount": format(t.unit_amount, "f"),
            "flat_amount": format(t.flat_amount, "f"),
            "amount": format(t.exact_amount, "f"),
        }
        for t in line.tiers
    ]


def _priced_lines(item: Item, charge_lines: tuple[PriceLine, ...], currency: str,
                  usage: Decimal | None) -> list[DraftLine]:
    rate_card, period = item.rate_card, item.period
    lines = []
    for line in charge_lines:
        kind = KIND_BY_ENGINE[line.kind]
        if line.part:
            dimensions = part_dimensions(line.part)
            start, end = line.effective or (period.start, period.end)
            text = descriptions.part_usage_description(rate_card, dimensions, line.quantity, line.unit_price,
                                                       currency, start, end)
            lines.append(DraftLine(kind, item.subscription, rate_card, text, period.start, period.end,
                                   line.quantity, line.unit_price, line.amount, _tiers_json(line),
                                   line.rated_quantity, part=line.part, dimensions=dimensions))
            continue
        if kind == InvoiceLine.Kind.USAGE:
            text = descriptions.usage_description(rate_card, line.quantity, currency, period.start, period.end)
        elif kind == InvoiceLine.Kind.FLAT_FEE:
            text = descriptions.flat_fee_description(rate_card, period.fraction, period.start, period.end)
        elif kind == InvoiceLine.Kind.MINIMUM_SPEND:
            text = descriptions.minimum_spend_description(rate_card, period.start, period.end)
        else:
            text = descriptions.maximum_spend_description(rate_card, period.start, period.end)
        lines.append(DraftLine(kind, item.subscription, rate_card, text, period.start, period.end, line.quantity,
                               line.unit_price, line.amount, _tiers_json(line),
                               usage if kind == InvoiceLine.Kind.USAGE else None))
    return lines


def _delta_line(item: Item, delta: int, billed: Billed, rated_fraction: Decimal, usage: Decimal | None,
                currency: str) -> DraftLine:
    """One line bringing what was billed for the item to its rated amount."""
    rate_card, period = item.rate_card, item.period
    if usage is not None:  # usage-priced
        before = billed.usage_quantity
        added = max(usage - before, Decimal(0))
        unit_price = rate_card.unit_amount if rate_card.price_type == "unit" else None
        if delta > 0 and item.own:  # its own period, partly billed before (a reissue after a void)
            return DraftLine(
                InvoiceLine.Kind.USAGE, item.subscription, rate_card,
                descriptions.usage_description(rate_card, added, currency, period.start, period.end),
                period.start, period.end, added, unit_price, delta, rated_quantity=added)
        if delta > 0:
            return DraftLine(
                InvoiceLine.Kind.LATE_USAGE, item.subscription, rate_card,
                descriptions.late_usage_description(rate_card, added, period.start, period.end),
                period.start, period.end, added, unit_price, delta, rated_quantity=usage)
        return DraftLine(
            InvoiceLine.Kind.CREDIT, item.subscription, rate_card,
            descriptions.usage_correction_description(rate_card, period.start, period.end),
            period.start, period.end, max(before - usage, Decimal(0)), None, delta, rated_quantity=usage)
    difference = abs(billed.quantity - rated_fraction)
    if delta > 0:
        return DraftLine(
            InvoiceLine.Kind.FLAT_FEE, item.subscription, rate_card,
            descriptions.fee_adjustment_description(rate_card, period.start, period.end),
            period.start, period.end, difference, rate_card.amount, delta)
    return DraftLine(
        InvoiceLine.Kind.CREDIT, item.subscription, rate_card,
        descriptions.unused_fee_description(rate_card, period.end, period.full_end),
        period.start, period.end, difference, rate_card.amount, delta)


def part_dimensions(part: str) -> dict[str, str] | None:
    """A price part's match (``model=gpt-4o,type=request@2026-03-01T00:00:00Z`` → {model: gpt-4o, type: request});
    None for the default row."""
    identity = part.split("@", 1)[0]
    if identity == DEFAULT_PART:
        return None
    return dict(pair.split("=", 1) for pair in identity.split(",") if "=" in pair)


def _part_deltas(item: Item, charge_lines: tuple[PriceLine, ...], before: Billed, currency: str) -> list[DraftLine]:
    """A dimensional item billed before: per part (row version, or "" for the minimum/maximum spend), a line
    bringing what was billed to what is rated now. The parts' deltas sum to the item's."""
    rate_card, period = item.rate_card, item.period
    rated: dict[str, tuple[int, Decimal, PriceLine | None]] = {}
    for line in charge_lines:
        amount, usage, usage_line = rated.get(line.part, (0, Decimal(0), None))
        if line.part:
            usage, usage_line = usage + (line.rated_quantity or Decimal(0)), line
        rated[line.part] = (amount + line.amount, usage, usage_line)
    parts = list(rated) + sorted(part for part in before.parts if part not in rated)
    lines = []
    for part in parts:
        amount, usage, usage_line = rated.get(part, (0, Decimal(0), None))
        billed = before.parts.get(part, Billed())
        delta = amount - billed.amount
        if not delta:
            continue
        if not part:
            kind = InvoiceLine.Kind.MINIMUM_SPEND if delta > 0 else InvoiceLine.Kind.CREDIT
            text = descriptions.spend_limit_adjustment_description(rate_card, period.start, period.end)
            lines.append(DraftLine(kind, item.subscription, rate_card, text, period.start, period.end,
                                   Decimal(1) if delta > 0 else Decimal(0), None, delta))
            continue
        dimensions = part_dimensions(part)
        unit_price = usage_line.unit_price if usage_line is not None else None
        added = max(usage - billed.usage_quantity, Decimal(0))
        if delta > 0:
            late = not item.own
            text = descriptions.part_usage_description(rate_card, dimensions, added, unit_price, currency,
                                                       period.start, period.end, late=late)
            lines.append(DraftLine(InvoiceLine.Kind.LATE_USAGE if late else InvoiceLine.Kind.USAGE,
                                   item.subscription, rate_card, text, period.start, period.end, added, unit_price,
                                   delta, rated_quantity=usage if late else added, part=part,
                                   dimensions=dimensions))
        else:
            text = (f"{descriptions.usage_correction_description(rate_card, period.start, period.end)} — "
                    f"{descriptions.dimensions_label(dimensions)}")
            lines.append(DraftLine(InvoiceLine.Kind.CREDIT, item.subscription, rate_card, text, period.start,
                                   period.end, max(billed.usage_quantity - usage, Decimal(0)), None, delta,
                                   rated_quantity=usage, part=part, dimensions=dimensions))
    return lines


@dataclass(frozen=True)
class Unpriced:
    """Usage of an item that no row of its dimensional price (and no default) prices: not billed, shown."""

    subscription: Subscription
    rate_card: RateCard
    period: Period
    usage: UnpricedUsage


@dataclass
class CycleBill:
    """What one cycle bills: its lines, and what was billed before for the items it looked at."""

    lines: list[DraftLine]
    billed: dict[ItemKey, Billed]
    newest_billing: dt.datetime | None
    unpriced: list[Unpriced] = field(default_factory=list)


def cycle_bill(
    subscription: Subscription,
    cycle: Cycle,
    *,
    now: dt.datetime,
    usage_until: dt.datetime | None = None,
    context: BillingContext | None = None,
    also: frozenset[ItemKey] = frozenset(),
    fingerprint: Fingerprint | None = None,
) -> CycleBill:
    """The lines this cycle bills (``usage_until`` cuts the running period short, for a preview).
    ``fingerprint``: the customer's billing fingerprint read under its lock (a batch may then use what it read)."""
    context = context or BillingContext()
    currency = subscription.plan.currency
    chain = subscription_chain(subscription)
    since = None if also else _billed_since(chain, cycle, now)
    prefetched = None if since is None else context.prefetched_billed(chain, starting_after=since,
                                                                      fingerprint=fingerprint)
    if prefetched is not None:
        billed, newest = prefetched, None  # unchanged since the batch read its usage too
    else:
        billed, newest = billed_items(chain, starting_after=since)
    done = context.done if context.done is not None else done_cycles(chain)
    if context.usage_read_at is not None and newest is not None and newest >= context.usage_read_at:
        context.fresh_usage = True  # another close billed this customer after the batch read its usage
    unpriced: list[Unpriced] = []
    try:
        lines: list[DraftLine] = []
        for item in cycle_items(subscription, cycle, now=now, done=done, usage_until=usage_until, context=context,
                                also=also, billed_keys=frozenset(billed)):
            rate_card, period = item.rate_card, item.period
            exists = period.end > period.start
            if is_dimensional(rate_card):
                charge = charge_rate_card(rate_card, quantity=Decimal(0), currency=currency,
                                          proration=period.fraction if exists else Decimal(0),
                                          usage_groups=dimensional_usage(context, item))
                unpriced += [Unpriced(item.subscription, rate_card, period, u) for u in charge.unpriced]
                before = billed.get(item.key)
                if before is None or before.lines == 0:
                    if item.own or charge.total != 0:
                        lines += _priced_lines(item, charge.lines, currency, None)
                else:
                    lines += _part_deltas(item, charge.lines, before, currency)
                continue
            usage = None
            if is_usage_priced(rate_card):
                usage = (context.usage(item.subscription, rate_card.usage_feature, period.start, item.usage_end)
                         if exists else Decimal(0))
            charge = charge_rate_card(rate_card, quantity=usage or Decimal(0), currency=currency,
                                      proration=period.fraction if exists else Decimal(0))
            before = billed.get(item.key)
            if before is None or before.lines == 0:
                if item.own or charge.total != 0:
                    lines += _priced_lines(item, charge.lines, currency, usage)
                continue
            delta = charge.total - before.amount
            if delta:
                lines.append(_delta_line(item, delta, before, period.fraction if exists else Decimal(0), usage,
                                         currency))
    finally:
        context.fresh_usage = False
    return CycleBill(lines, billed, newest, unpriced)


def cycle_lines(subscription: Subscription, cycle: Cycle, *, now: dt.datetime,
                usage_until: dt.datetime | None = None, context: BillingContext | None = None) -> list[DraftLine]:
    return cycle_bill(subscription, cycle, now=now, usage_until=usage_until, context=context).lines


def split_credits(lines: list[DraftLine]) -> tuple[list[DraftLine], list[DraftLine]]:
    """(invoice lines, lines for credit notes): credits stay on the invoice while it nets to ≥ 0. Otherwise each
    item's credits first offset that item's own charges in this close (one row of a price table re-rated lower
    while another row of it bills late usage), and only what the item nets below zero goes to credit notes
    against the invoices that billed it, so no invoice total is negative and no credit note credits an item more
    than was billed for it. A credit line split this way keeps its description on both sides."""
    if sum(line.amount for line in lines) >= 0:
        return lines, []
    charged: dict[ItemKey, int] = defaultdict(int)
    for line in lines:
        if line.kind != InvoiceLine.Kind.CREDIT:
            charged[line.item_key] += line.amount
    offset = {key: max(amount, 0) for key, amount in charged.items()}
    kept: list[DraftLine] = []
    noted: list[DraftLine] = []
    for line in lines:
        if line.kind != InvoiceLine.Kind.CREDIT:
            kept.append(line)
            continue
        room = offset.get(line.item_key, 0)
        on_invoice = min(room, -line.amount)
        offset[line.item_key] = room - on_invoice
        if on_invoice == -line.amount:
            kept.append(line)
        elif on_invoice == 0:
            noted.append(line)
        else:
            kept_part, noted_part = split_line(line, -on_invoice)
            kept.append(kept_part)
            noted.append(noted_part)
    return kept, noted


QUANTITY_STEP = Decimal(1).scaleb(-PreciseDecimalField().decimal_places)  # the stored scale of a line's quantity


def split_line(line: DraftLine, amount: int) -> tuple[DraftLine, DraftLine]:
    """``line`` as two lines, the first of ``amount`` (same sign), its quantity shared in proportion."""
    quantity = (line.quantity * amount / line.amount).quantize(QUANTITY_STEP) if line.amount else Decimal(0)
    return (replace(line, amount=amount, quantity=quantity),
            replace(line, amount=line.amount - amount, quantity=line.quantity - quantity))
