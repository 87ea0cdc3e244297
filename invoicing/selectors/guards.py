"""Guards invoicing registers in lower layers: changes those layers must refuse because of issued invoices.

Moving the start or the end of a subject's mapping changes which usage belongs to the customer in the part of
time between the old and the new bound. When an issued invoice (not a draft, not void) of the customer billed
usage for a period that meets that part, the change would move usage already billed: it is refused, naming the
invoice. (Void the invoice first, or leave the mapping and add a new one.)
"""

from __future__ import annotations

import datetime as dt

from django.db.models import Q

from customers.hooks import register_attribution_change_guard
from customers.models import SubjectAttribution, format_instant

from ..models import Invoice, InvoiceLine

USAGE_KINDS = (InvoiceLine.Kind.USAGE, InvoiceLine.Kind.LATE_USAGE, InvoiceLine.Kind.MINIMUM_SPEND,
               InvoiceLine.Kind.DISCOUNT)


Range = tuple[dt.datetime | None, dt.datetime | None]  # (a, b), None unbounded


def _between_starts(old: dt.datetime | None, new: dt.datetime | None) -> Range | None:
    """The time between two starts (a missing start is the beginning of time)."""
    if old == new:
        return None
    if old is None or new is None:
        return (None, old or new)
    return (min(old, new), max(old, new))


def _between_ends(old: dt.datetime | None, new: dt.datetime | None) -> Range | None:
    """The time between two ends (a missing end is open)."""
    if old == new:
        return None
    if old is None or new is None:
        return (old or new, None)
    return (min(old, new), max(old, new))


def attribution_change_guard(
    attribution: SubjectAttribution, new_start: dt.datetime | None, new_end: dt.datetime | None
) -> str | None:
    """The first issued invoice of the customer with a usage line in the time the change moves, as a reason."""
    parts = [part for part in (_between_starts(attribution.start, new_start), _between_ends(attribution.end, new_end))
             if part is not None]
    if not parts:
        return None
    meets = Q(pk__in=[])
    for a, b in parts:
        condition = Q()
        if a is not None:
            condition &= Q(period_end__gt=a)
        if b is not None:
            condition &= Q(period_start__lt=b)
        meets |= condition
    line = (
        InvoiceLine.objects.filter(meets, invoice__customer_id=attribution.customer_id, kind__in=USAGE_KINDS)
        .exclude(invoice__status__in=(Invoice.Status.VOID, Invoice.Status.DRAFT))
        .select_related("invoice")
        .order_by("invoice__issued_at", "invoice_id", "id")
        .first()
    )
    if line is None:
        return None
    return (f"invoice {line.invoice} ({line.invoice.get_status_display().lower()}) billed usage of "
            f"{format_instant(line.period_start)} – {format_instant(line.period_end)} that this change would move; "
            "void that invoice first, or keep these dates")


def register_guards() -> None:
    register_attribution_change_guard(attribution_change_guard)
