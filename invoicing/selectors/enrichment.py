"""What invoicing adds to the event explorer and the events list: the invoice that billed each event, and for
usage no row of a dimensional price covers, why it is not billed (``no price for model=gpt-5, type=request``).

An event is billed by the usage line of its period's invoice when it arrived before that invoice was issued,
otherwise (a late event) by the late-usage line of a later invoice for the same period. Events not billed yet
get nothing.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Prefetch, Q

from catalog.charges import dimensional_price
from catalog.dimensional import UnpricedUsage, resolve_row, rows_in_effect
from catalog.models import RateCard
from customers.models import Subscription
from customers.selectors import customer_ids_of_events
from metering.jsonpath import group_value
from metering.meter_rules import adds_nothing, meter_definition

from ..models import Invoice, InvoiceLine

BILLING_KINDS = (InvoiceLine.Kind.USAGE, InvoiceLine.Kind.LATE_USAGE)


def invoices_of_events(events: list[Any]) -> dict[int, dict[str, str | None]]:
    if not events:
        return {}
    customer_of = customer_ids_of_events(events)
    if not customer_of:
        return {}
    times = [event.time for event in events if event.pk in customer_of]
    lines = list(
        InvoiceLine.objects.filter(invoice__customer_id__in=set(customer_of.values()), kind__in=BILLING_KINDS,
                                   period_start__lte=max(times), period_end__gt=min(times))
        .exclude(invoice__status__in=(Invoice.Status.VOID, Invoice.Status.DRAFT))
        .filter(Q(feature__meter__isnull=False))
        .select_related("invoice", "feature__meter")
        .order_by("invoice__issued_at", "id")
    )
    result: dict[int, dict[str, str | None]] = {}
    for event in events:
        customer_id = customer_of.get(event.pk)
        if customer_id is None:
            continue
        covering = [line for line in lines if line.invoice.customer_id == customer_id
                    and line.period_start <= event.time < line.period_end
                    and line.feature is not None and line.feature.meter is not None
                    and line.feature.meter.event_type == event.type]
        original = next((line for line in covering if line.kind == InvoiceLine.Kind.USAGE), None)
        if original is not None and event.ingested_at < original.invoice.issued_at:
            result[event.pk] = {"billedOn": original.invoice.number}
            continue
        late = next((line for line in covering if line.kind == InvoiceLine.Kind.LATE_USAGE
                     and line.invoice.issued_at >= event.ingested_at), None)
        if late is not None:
            result[event.pk] = {"billedOn": f"{late.invoice.number} (late usage)"}
    return result


def unpriced_events(events: list[Any]) -> dict[int, dict[str, str]]:
    """The events no row of their customer's dimensional price prices: ``no price for model=gpt-5, type=request``
    (rate card and plan named). One query for attributions, one for subscriptions with their dimensional rate
    cards and rows, per page of events."""
    if not events:
        return {}
    customer_of = customer_ids_of_events(events)
    if not customer_of:
        return {}
    cards = RateCard.objects.filter(price_type=RateCard.PriceType.DIMENSIONAL).select_related(
        "feature__meter").prefetch_related("price_rows")
    subscriptions: dict[int, list[Subscription]] = {}
    for subscription in (Subscription.objects.filter(customer_id__in=set(customer_of.values()),
                                                     plan__rate_cards__price_type=RateCard.PriceType.DIMENSIONAL)
                         .select_related("plan").prefetch_related(Prefetch("plan__rate_cards", queryset=cards))
                         .distinct()):
        subscriptions.setdefault(subscription.customer_id, []).append(subscription)
    result: dict[int, dict[str, str]] = {}
    for event in events:
        for subscription in subscriptions.get(customer_of.get(event.pk, -1), []):
            if not (subscription.start <= event.time and (subscription.cancel_at is None
                                                          or event.time < subscription.cancel_at)):
                continue
            problem = next((p for card in subscription.plan.rate_cards.all() if (p := _unpriced(card, event))), None)
            if problem:
                result[event.pk] = {"validationError": problem}
                break
    return result


def _unpriced(rate_card: RateCard, event: Any) -> str | None:
    feature = rate_card.feature
    meter = feature.meter if feature is not None else None
    if feature is None or meter is None or meter.event_type != event.type:
        return None
    definition = meter_definition(meter)
    if adds_nothing(definition, event.data):  # e.g. no cache_read_tokens: no usage, so no price is missing
        return None
    values = {name: group_value(path, event.data) for name, path in definition.group_by.items()}
    if any(values.get(name) != str(value) for name, value in (feature.meter_group_by_filters or {}).items()):
        return None
    table = dimensional_price(rate_card)
    keyed = tuple((name, values.get(name)) for name in table.dimensions)
    if resolve_row(rows_in_effect(table, event.time), dict(keyed)) is not None:
        return None
    return f"{UnpricedUsage(keyed, Decimal(0)).label} (rate card {rate_card.key} of plan {rate_card.plan.key})"
