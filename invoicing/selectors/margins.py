"""Margins of dimensional (per model) prices: revenue (billed, and previewed for the running period) against what the
usage cost us (the cost table filled by ``llm_prices import``), per customer × model × period.

- **Billed revenue**: the non-void invoice lines of dimensional rate cards whose period starts in ``[start, end)``,
  less their re-rating credit notes; a line's model is its row's ``model`` (``(any model)`` for rows that do not
  name one, e.g. the default, and for the minimum/maximum spend of the whole table).
- **Previewed revenue**: what the preview of each customer's running period (at ``now``) would add.
- **Cost**: the usage of those periods by model, token type (and provider when the meter has it) × the cost table's
  per-token cost (USD). The token type is the events' ``type`` (``request`` / ``response``), except on a companion
  meter of ``llm_tokens``, whose tokens are all of one type (``cache_read``, ``cache_write``; reasoning tokens cost
  the ``response`` rate). A usage group without a cost (a model nobody imported) leaves the cost of its row
  incomplete: ``cost_missing`` names the models.
- **Margin** = revenue − cost (minor units, the cost rounded once); **margin %** = margin / revenue.

Costs are in USD: a rate card in another currency gets no cost (shown as missing).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from catalog.charges import dimensional_price
from catalog.dimensional import resolve_row, rows_in_effect
from catalog.models import ModelCost, RateCard
from catalog.money import to_minor
from customers.models import Customer, Subscription
from customers.selectors import UsageRequest, active_subscriptions, features_usage
from metering.meter_rules import cost_token_type

from ..models import CreditNote, CreditNoteLine, InvoiceLine
from ..services.credits import CreditsLine
from ..services.lines import BILLED_STATUSES, part_dimensions
from .previews import invoice_preview

ANY_MODEL = "(any model)"
GROUPS = ("customer", "model")
COST_DIMENSIONS = ("model", "type", "provider")


@dataclass
class MarginRow:
    customer: str | None  # None when grouped by model
    model: str | None  # None when grouped by customer
    period_start: dt.datetime
    period_end: dt.datetime
    currency: str
    revenue_billed: int = 0  # minor units
    revenue_previewed: int = 0
    cost: Decimal = Decimal(0)  # major units (USD), exact
    cost_missing: set[str] = field(default_factory=set)  # models (or model/type) without a known cost

    @property
    def revenue(self) -> int:
        return self.revenue_billed + self.revenue_previewed

    @property
    def cost_minor(self) -> int:
        return to_minor(self.cost, self.currency)

    @property
    def margin(self) -> int:
        return self.revenue - self.cost_minor

    @property
    def margin_percent(self) -> Decimal | None:
        if not self.revenue:
            return None
        return (Decimal(self.margin) * 100 / Decimal(self.revenue)).quantize(Decimal("0.01"))


@dataclass(frozen=True)
class _Item:
    subscription: Subscription
    rate_card: RateCard
    period_start: dt.datetime
    period_end: dt.datetime
    usage_end: dt.datetime


def _model(dimensions: dict[str, str] | None) -> str:
    return (dimensions or {}).get("model") or ANY_MODEL


def _cost_table() -> tuple[dict[tuple[str, str, str], Decimal], dict[tuple[str, str], set[Decimal]]]:
    exact: dict[tuple[str, str, str], Decimal] = {}
    by_model: dict[tuple[str, str], set[Decimal]] = defaultdict(set)
    for row in ModelCost.objects.filter(currency="USD"):
        exact[(row.provider, row.model, row.token_type)] = row.cost_per_token
        by_model[(row.model, row.token_type)].add(row.cost_per_token)
    return exact, by_model


def margin_report(*, start: dt.datetime, end: dt.datetime, now: dt.datetime, group_by: str | None = None,
                  customer_key: str | None = None) -> list[MarginRow]:
    """Rows per customer × model × period (``group_by`` ``customer`` or ``model`` sums over the other), sorted by
    period, customer, model."""
    if group_by not in (None, *GROUPS):
        raise ValueError(f"groupBy must be one of {', '.join(GROUPS)}")
    rows: dict[tuple, MarginRow] = {}
    items: dict[tuple, _Item] = {}

    def row_for(customer: str, model: str, item: _Item, currency: str) -> MarginRow:
        key = (customer, model, item.period_start, item.period_end, currency)
        if key not in rows:
            rows[key] = MarginRow(customer, model, item.period_start, item.period_end, currency)
        return rows[key]

    lines = (InvoiceLine.objects.filter(invoice__status__in=BILLED_STATUSES, rate_card__price_type="dimensional",
                                        period_start__gte=start, period_start__lt=end)
             .select_related("invoice__customer", "subscription__customer", "subscription__plan",
                             "rate_card__feature__meter").prefetch_related("rate_card__price_rows"))
    credits = (CreditNoteLine.objects.filter(credit_note__status=CreditNote.Status.ISSUED,
                                             kind=CreditNoteLine.Kind.RERATING, rate_card__price_type="dimensional",
                                             period_start__gte=start, period_start__lt=end)
               .select_related("credit_note__customer", "subscription__customer", "subscription__plan",
                               "rate_card__feature__meter").prefetch_related("rate_card__price_rows"))
    if customer_key:
        lines = lines.filter(invoice__customer__key=customer_key)
        credits = credits.filter(credit_note__customer__key=customer_key)
    for line in lines:
        if line.subscription is None or line.rate_card is None:  # dimensional lines always have both
            continue
        item = _Item(line.subscription, line.rate_card, line.period_start, line.period_end,
                     min(line.period_end, now))
        items.setdefault((line.subscription_id, line.rate_card_id, line.period_start), item)
        row_for(line.invoice.customer.key, _model(line.dimensions), item, line.invoice.currency).revenue_billed \
            += line.amount
    for note_line in credits:
        if note_line.subscription is None or note_line.rate_card is None or note_line.period_start is None \
                or note_line.period_end is None:
            continue
        item = _Item(note_line.subscription, note_line.rate_card, note_line.period_start, note_line.period_end,
                     min(note_line.period_end, now))
        items.setdefault((note_line.subscription_id, note_line.rate_card_id, note_line.period_start), item)
        row_for(note_line.credit_note.customer.key, _model(part_dimensions(note_line.price_part)
                                                            if note_line.price_part else None),
                item, note_line.credit_note.currency).revenue_billed -= note_line.amount

    if start <= now < end:  # the running periods, as the preview would bill them
        customers = Customer.objects.filter(subscriptions__plan__rate_cards__price_type="dimensional").distinct()
        if customer_key:
            customers = customers.filter(key=customer_key)
        for customer in customers:
            if not active_subscriptions(customer, now).filter(
                    plan__rate_cards__price_type="dimensional").exists():
                continue
            preview = invoice_preview(customer=customer, at=now)
            for draft in preview.lines:
                if (isinstance(draft, CreditsLine) or draft.rate_card.price_type != RateCard.PriceType.DIMENSIONAL
                        or draft.period_start >= end):
                    continue
                item = _Item(draft.subscription, draft.rate_card, draft.period_start, draft.period_end,
                             min(draft.period_end, now))
                items.setdefault((draft.subscription.pk, draft.rate_card.pk, draft.period_start), item)
                row_for(customer.key, _model(draft.dimensions), item, preview.currency).revenue_previewed \
                    += draft.amount

    _add_costs(rows, items)
    if group_by is not None:
        rows = _grouped(rows, group_by)
    return sorted(rows.values(), key=lambda r: (r.period_start, r.customer or "", r.model or "", r.currency))


def _add_costs(rows: dict[tuple, MarginRow], items: dict[tuple, _Item]) -> None:
    """Usage by model, type (and provider) of each item × the cost table, added to the row of its customer and
    of the model its table row names (one usage statement per meter for all items)."""
    requests: list[tuple[_Item, UsageRequest]] = []
    for item in items.values():
        meter = item.rate_card.feature.meter if item.rate_card.feature is not None else None
        if meter is None or item.usage_end <= item.period_start:
            continue
        dimensions = tuple(name for name in COST_DIMENSIONS if name in (meter.group_by or {}))
        if "model" not in dimensions:
            continue
        requests.append((item, UsageRequest(item.subscription, item.rate_card.usage_feature, item.period_start,
                                            item.usage_end, dimensions)))
    usage = features_usage([request for _, request in requests])
    exact, by_model = _cost_table()
    for item, request in requests:
        customer, currency = item.subscription.customer.key, item.subscription.plan.currency
        meter = item.rate_card.feature.meter if item.rate_card.feature is not None else None
        meter_token_type = cost_token_type(meter.value_property) if meter is not None else None
        table = dimensional_price(item.rate_card)
        in_effect = rows_in_effect(table, item.period_start)
        for values, quantity in usage[request.key].items():
            group = dict(zip(request.dimensions, values, strict=True))
            model, provider = group.get("model"), group.get("provider")
            token_type = meter_token_type or group.get("type")  # a cache-read meter's tokens are all cache reads
            matched = resolve_row(in_effect, {name: group.get(name) for name in table.dimensions})
            shown = (_model(dict(matched.match)) if matched is not None
                     else f"{model or '?'} (unpriced)")
            key = (customer, shown, item.period_start, item.period_end, currency)
            row = rows.get(key)
            if row is None:
                row = rows[key] = MarginRow(customer, shown, item.period_start, item.period_end, currency)
            cost = None
            if currency == "USD" and model is not None and token_type is not None:
                cost = exact.get((provider or "", model, token_type))
                if cost is None:
                    candidates = by_model.get((model, token_type), set())
                    cost = next(iter(candidates)) if len(candidates) == 1 else None
            if cost is None:
                row.cost_missing.add(f"{model or '?'}/{token_type or '?'}")
            else:
                row.cost += quantity * cost


def _grouped(rows: dict[tuple, MarginRow], group_by: str) -> dict[tuple, MarginRow]:
    grouped: dict[tuple, MarginRow] = {}
    for row in rows.values():
        customer = row.customer if group_by == "customer" else None
        model = row.model if group_by == "model" else None
        key = (customer, model, row.period_start, row.period_end, row.currency)
        target = grouped.get(key)
        if target is None:
            target = grouped[key] = MarginRow(customer, model, row.period_start, row.period_end, row.currency)
        target.revenue_billed += row.revenue_billed
        target.revenue_previewed += row.revenue_previewed
        target.cost += row.cost
        target.cost_missing |= row.cost_missing
    return grouped
