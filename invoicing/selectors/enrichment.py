"""What invoicing adds to the event explorer and the events list: the invoice that billed each event.

An event is billed by the usage line of its period's invoice when it arrived before that invoice was issued,
otherwise (a late event) by the late-usage line of a later invoice for the same period. Events not billed yet
get nothing.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q

from customers.models import SubjectAttribution

from ..models import Invoice, InvoiceLine

BILLING_KINDS = (InvoiceLine.Kind.USAGE, InvoiceLine.Kind.LATE_USAGE)


def invoices_of_events(events: list[Any]) -> dict[int, dict[str, str | None]]:
    if not events:
        return {}
    subjects = {event.subject for event in events}
    owners: dict[str, list[SubjectAttribution]] = {}
    for attribution in SubjectAttribution.objects.filter(subject__in=subjects):
        owners.setdefault(attribution.subject, []).append(attribution)
    customer_of: dict[int, int] = {}
    for event in events:
        match = next((a for a in owners.get(event.subject, []) if a.covers(event.time)), None)
        if match is not None:
            customer_of[event.pk] = match.customer_id
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
