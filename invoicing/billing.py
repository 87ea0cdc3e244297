"""What a cycle bills: the lines of one subscription's cycle, computed from the catalog, usage and what was
billed before. Read-only; the close service stores the result, the preview shows it.

Rules (also in the README):

- Cycle ``k`` closes at boundary ``k``: the subscription's start for k = 0, else the end of period ``k − 1``.
- Usage and in-arrears fees of period ``k − 1``; in-advance flat fees of period ``k`` (prorated by exact time
  when the period is partial); minimum/maximum spend per rate card per period, prorated like flat fees.
- A credit for the unused part of an in-advance fee whose period was cut short after it was billed
  (cancel now, or a plan change now).
- Late usage: for earlier periods (up to ``INVOICE_LATE_USAGE_LOOKBACK_DAYS``) that a non-void invoice
  billed, usage that arrived since is billed as its own line for its own period, priced as the rate card's
  total with it minus without it (so tiers, free quantity and spend limits stay right).
- Each line is rounded once to the currency's minor unit (ROUND_HALF_UP); totals are sums of lines.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings

from catalog.charges import charge_rate_card
from catalog.display import plain_number
from catalog.models import RateCard
from catalog.money import format_money
from catalog.pricing import PriceLine
from catalog.rules import USAGE_PRICES
from customers.models import Subscription
from customers.periods import Period, periods_between
from customers.selectors import UsageRequest, feature_usage, features_usage

from .models import Invoice, InvoiceLine

KIND_BY_ENGINE = {
    "flat_fee": InvoiceLine.Kind.FLAT_FEE,
    "usage": InvoiceLine.Kind.USAGE,
    "minimum_spend": InvoiceLine.Kind.MINIMUM_SPEND,
    "discount": InvoiceLine.Kind.DISCOUNT,
}
BILLED_STATUSES = (Invoice.Status.DRAFT, Invoice.Status.ISSUED, Invoice.Status.PAID, Invoice.Status.UNCOLLECTIBLE)


@dataclass
class DraftLine:
    kind: str
    rate_card: RateCard
    description: str
    period_start: dt.datetime
    period_end: dt.datetime
    quantity: Decimal
    unit_price: Decimal | None
    amount: int
    tiers: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Cycle:
    index: int
    boundary: dt.datetime
    previous: Period | None  # billed in arrears
    next: Period | None  # billed in advance

    def due_at(self, grace: dt.timedelta) -> dt.datetime:
        return self.boundary + grace if self.previous is not None else self.boundary

    @property
    def invoice_period(self) -> Period:
        period = self.previous or self.next
        assert period is not None
        return period


def grace_period() -> dt.timedelta:
    return dt.timedelta(seconds=settings.INVOICE_GRACE_PERIOD_SECONDS)


def subscription_cycles(subscription: Subscription, *, until: dt.datetime) -> list[Cycle]:
    """Every cycle whose boundary is at or before ``until``, in order."""
    periods = periods_between(
        subscription.billing_anchor,
        subscription.plan.billing_cadence,
        subscription.start,
        subscription.cancel_at,
        until=until + dt.timedelta(microseconds=1),
    )
    if not periods:
        return []
    cycles = [Cycle(0, periods[0].start, None, periods[0])]
    for index, period in enumerate(periods, start=1):
        if period.end > until:
            break
        following = periods[index] if index < len(periods) else None  # starts at the boundary, so listed
        cycles.append(Cycle(index, period.end, period, following))
    return cycles


def cycle_at(subscription: Subscription, at: dt.datetime) -> Cycle | None:
    """The cycle that will close the period running at ``at`` (for previews)."""
    periods = periods_between(
        subscription.billing_anchor,
        subscription.plan.billing_cadence,
        subscription.start,
        subscription.cancel_at,
        until=at + dt.timedelta(microseconds=1),
    )
    if not periods or periods[-1].end <= at:
        return None
    current = periods[-1]
    after = periods_between(
        subscription.billing_anchor,
        subscription.plan.billing_cadence,
        subscription.start,
        subscription.cancel_at,
        until=current.end + dt.timedelta(microseconds=1),
    )
    following = after[-1] if after and after[-1].start == current.end else None
    return Cycle(len(periods), current.end, current, following)


# --- descriptions ---------------------------------------------------------------------------------------------


def period_label(start: dt.datetime, end: dt.datetime) -> str:
    """``Nov 1 – Dec 1`` (end exclusive, as on Stripe invoices); years shown when they differ."""

    def day(value: dt.datetime, with_year: bool) -> str:
        text = f"{value:%b} {value.day}"
        if value.hour or value.minute:
            text += f" {value:%H:%M}"
        return text + (f", {value.year}" if with_year else "")

    different_years = start.year != end.year
    return f"{day(start, different_years)} – {day(end, different_years)}"


def unit_label(rate_card: RateCard) -> str:
    meter = rate_card.feature.meter if rate_card.feature_id and rate_card.feature.meter_id else None
    if meter is None:
        return "units"
    if meter.aggregation == "COUNT":
        return "requests" if "request" in meter.event_type else "events"
    name = (meter.value_property or "").rsplit(".", 1)[-1].strip("[]\"'") or "units"
    return name.replace("_", " ")


def _usage_description(rate_card: RateCard, quantity: Decimal, currency: str, period: tuple) -> str:
    name = rate_card.feature.key if rate_card.feature_id else rate_card.display_name
    units = f"{plain_number(quantity)} {unit_label(rate_card)}"
    if rate_card.price_type == "unit":
        units += f" × {format_money(rate_card.unit_amount, currency)}"
    elif rate_card.price_type == "package":
        package = plain_number(rate_card.quantity_per_package)
        units += f" in packages of {package} × {format_money(rate_card.amount, currency)}"
    else:
        units += f" ({rate_card.price_type})"
    return f"{name} — {units} ({period_label(*period)})"


def _lines_from_charge(
    rate_card: RateCard,
    charge_lines: tuple[PriceLine, ...],
    currency: str,
    period: tuple[dt.datetime, dt.datetime],
    fraction: Decimal,
) -> list[DraftLine]:
    lines = []
    for line in charge_lines:
        kind = KIND_BY_ENGINE[line.kind]
        if kind == InvoiceLine.Kind.USAGE:
            description = _usage_description(rate_card, line.quantity, currency, period)
        elif kind == InvoiceLine.Kind.FLAT_FEE:
            description = f"{rate_card.display_name} ({period_label(*period)})"
            if fraction != 1:
                description += f" — prorated {fraction * 100:.2f}% of the period"
        elif kind == InvoiceLine.Kind.MINIMUM_SPEND:
            description = f"{rate_card.display_name} — minimum spend top-up ({period_label(*period)})"
        else:
            description = f"{rate_card.display_name} — maximum spend cap ({period_label(*period)})"
        tiers = [
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
        lines.append(
            DraftLine(
                kind, rate_card, description, period[0], period[1], line.quantity, line.unit_price, line.amount, tiers
            )
        )
    return lines


def _charge(rate_card: RateCard, quantity: Decimal, currency: str, fraction: Decimal):
    return charge_rate_card(rate_card, quantity=quantity, currency=currency, proration=fraction)


# --- the lines of a cycle ---------------------------------------------------------------------------------------


def _billed(subscription: Subscription, since: dt.datetime, lines=None) -> tuple[dict, dict, set]:
    """What non-void invoices of this subscription billed for periods starting at or after ``since``:
    usage quantities and in-advance fractions per (rate card key, period start), and the billed periods."""
    usage: dict[tuple[str, dt.datetime], Decimal] = defaultdict(Decimal)
    advance: dict[tuple[str, dt.datetime], Decimal] = {}
    periods: set[dt.datetime] = set()
    if lines is None:
        lines = InvoiceLine.objects.filter(
            invoice__subscription=subscription, invoice__status__in=BILLED_STATUSES, period_start__gte=since
        ).only("kind", "rate_card_key", "period_start", "quantity")
    for line in lines:
        if line.period_start < since:
            continue
        key = (line.rate_card_key, line.period_start)
        if line.kind in (InvoiceLine.Kind.USAGE, InvoiceLine.Kind.LATE_USAGE):
            usage[key] += line.quantity
            periods.add(line.period_start)
        elif line.kind == InvoiceLine.Kind.FLAT_FEE:
            advance[key] = line.quantity
        elif line.kind == InvoiceLine.Kind.CREDIT:
            advance[key] = advance.get(key, Decimal(0)) - line.quantity
    return usage, advance, periods


class BillingContext:
    """What :func:`cycle_lines` reads, cached or batched for a whole chunk of a close run.

    Without preparation it reads everything directly (previews, reissues). A close prepares a chunk: the plans'
    rate cards once per plan version (published versions never change), the billed lines of the chunk's
    subscriptions in one query, and the usage of every (subscription, feature, period) in one query per meter
    (found by a first pass over :func:`cycle_lines` that only records what it would ask).
    """

    def __init__(self) -> None:
        self._rate_cards: dict[int, list[RateCard]] = {}
        self._billed_lines: dict[int, list[InvoiceLine]] = {}
        self._usage: dict[tuple, Decimal] = {}
        self._recording: list[UsageRequest] | None = None

    def rate_cards(self, plan) -> list[RateCard]:
        if plan.pk not in self._rate_cards or plan.status == "draft":
            self._rate_cards[plan.pk] = list(
                plan.rate_cards.select_related("feature", "feature__meter").prefetch_related("tiers"))
        return self._rate_cards[plan.pk]

    def billed(self, subscription: Subscription, since: dt.datetime) -> tuple[dict, dict, set]:
        return _billed(subscription, since, self._billed_lines.get(subscription.pk))

    def usage(self, subscription: Subscription, feature, start: dt.datetime, end: dt.datetime) -> Decimal:
        request = UsageRequest(subscription, feature, start, end)
        if self._recording is not None:
            self._recording.append(request)
            return Decimal(0)
        if request.key in self._usage:
            return self._usage[request.key]
        return feature_usage(subscription=subscription, feature=feature, start=start, end=end)

    def prepare(self, work: list[tuple[Subscription, Cycle]], *, now: dt.datetime) -> None:
        """Batch the reads of these cycles (one cycle per subscription: later cycles of the same subscription
        must see the lines the earlier ones store, so they are read directly)."""
        if not work:
            return
        ids = [subscription.pk for subscription, _ in work]
        lines: dict[int, list[InvoiceLine]] = {pk: [] for pk in ids}
        for line in InvoiceLine.objects.filter(invoice__subscription_id__in=ids, invoice__status__in=BILLED_STATUSES,
                                               period_start__gte=_billed_since(now, None)).only(
                "kind", "rate_card_key", "period_start", "quantity", "invoice__subscription_id").select_related(
                "invoice"):
            lines[line.invoice.subscription_id].append(line)
        self._billed_lines.update(lines)
        self._recording = []
        try:
            for subscription, cycle in work:
                try:
                    cycle_lines(subscription, cycle, now=now, context=self)
                except Exception:  # noqa: BLE001, S112 - the real close of this cycle reports it
                    continue
            requests = self._recording
        finally:
            self._recording = None
        self._usage.update(features_usage(requests))


def _billed_since(now: dt.datetime, cycle: Cycle | None) -> dt.datetime:
    """Lines that matter: late usage within the lookback, and the in-advance fee of the period just ended."""
    lookback = now - dt.timedelta(days=settings.INVOICE_LATE_USAGE_LOOKBACK_DAYS)
    if cycle is not None and cycle.previous is not None:
        return min(lookback, cycle.previous.full_start)
    return lookback - dt.timedelta(days=400) if cycle is None else lookback


def cycle_lines(
    subscription: Subscription,
    cycle: Cycle,
    *,
    usage_until: dt.datetime | None = None,
    now: dt.datetime,
    context: BillingContext | None = None,
) -> list[DraftLine]:
    """The lines cycle ``cycle`` bills. ``usage_until`` cuts usage short (a preview of a running period)."""
    context = context or BillingContext()
    plan = subscription.plan
    currency = plan.currency
    priced = [rc for rc in context.rate_cards(plan) if rc.price_type]
    lookback = now - dt.timedelta(days=settings.INVOICE_LATE_USAGE_LOOKBACK_DAYS)
    billed_usage, billed_advance, billed_periods = context.billed(subscription, _billed_since(now, cycle))
    lines: list[DraftLine] = []

    previous = cycle.previous
    if previous is not None:
        usage_end = previous.end if usage_until is None else min(previous.end, usage_until)
        for rate_card in priced:
            if rate_card.price_type in USAGE_PRICES:
                quantity = context.usage(subscription, rate_card.feature, previous.start, usage_end)
                charge = _charge(rate_card, quantity, currency, previous.fraction)
                lines += _lines_from_charge(
                    rate_card, charge.lines, currency, (previous.start, previous.end), previous.fraction
                )
            elif rate_card.payment_term == RateCard.PaymentTerm.IN_ARREARS:
                charge = _charge(rate_card, Decimal(0), currency, previous.fraction)
                lines += _lines_from_charge(
                    rate_card, charge.lines, currency, (previous.start, previous.end), previous.fraction
                )
            else:  # in advance: credit what was billed for time the subscription did not run
                charged = billed_advance.get((rate_card.key, previous.start))
                if charged is not None and charged > previous.fraction:
                    unused = charged - previous.fraction
                    amount = _charge(rate_card, Decimal(0), currency, unused).total
                    if amount:
                        lines.append(
                            DraftLine(
                                InvoiceLine.Kind.CREDIT,
                                rate_card,
                                f"Unused {rate_card.display_name} ({period_label(previous.end, previous.full_end)})",
                                previous.start,
                                previous.end,
                                unused,
                                rate_card.amount,
                                -amount,
                            )
                        )

    following = cycle.next
    if following is not None:
        for rate_card in priced:
            if rate_card.price_type == "flat" and rate_card.payment_term == RateCard.PaymentTerm.IN_ADVANCE:
                charge = _charge(rate_card, Decimal(0), currency, following.fraction)
                lines += _lines_from_charge(
                    rate_card, charge.lines, currency, (following.start, following.end), following.fraction
                )

    # Late usage of earlier periods that an invoice already billed.
    if previous is not None:
        earlier = [
            p
            for p in periods_between(
                subscription.billing_anchor,
                plan.billing_cadence,
                subscription.start,
                subscription.cancel_at,
                until=previous.start,
            )
            if p.end > lookback and p.start in billed_periods
        ]
        for period in earlier:
            for rate_card in priced:
                if rate_card.price_type not in USAGE_PRICES:
                    continue
                billed = billed_usage.get((rate_card.key, period.start))
                if billed is None:
                    continue
                quantity = context.usage(subscription, rate_card.feature, period.start, period.end)
                if quantity <= billed:
                    continue
                delta = (
                    _charge(rate_card, quantity, currency, period.fraction).total
                    - _charge(rate_card, billed, currency, period.fraction).total
                )
                name = rate_card.feature.key
                lines.append(
                    DraftLine(
                        InvoiceLine.Kind.LATE_USAGE,
                        rate_card,
                        f"{name} — late usage: {plain_number(quantity - billed)} {unit_label(rate_card)} "
                        f"({period_label(period.start, period.end)})",
                        period.start,
                        period.end,
                        quantity - billed,
                        rate_card.unit_amount if rate_card.price_type == "unit" else None,
                        delta,
                    )
                )
    return lines
