"""What customers adds to metering's event views: the customer of each event, or why there is none."""

from __future__ import annotations

import datetime as dt

from django.db.models import Q

from .models import Customer, SubjectAttribution
from .selectors import attributions_of_subjects


def customer_of_events(events: list) -> dict[int, dict[str, str]]:
    """The events-list enricher of the customers layer (one query per page of events): the customer whose
    mapping covers the event; for a subject that some customer includes, but not at the event's time, which
    customer includes it and when (``subject kong-air is included by Kong Air from 2026-11-20``)."""
    attributions = attributions_of_subjects({event.subject for event in events}, with_customer=True)
    result: dict[int, dict[str, str]] = {}
    for event in events:
        mappings = attributions.get(event.subject, [])
        match = next((a for a in mappings if a.covers(event.time)), None)
        if match is not None:
            result[event.pk] = {"customerId": match.customer.key}
        elif mappings:
            nearest = min(mappings, key=lambda a: _distance(a, event.time))
            result[event.pk] = {"validationError": f"subject {event.subject} is included by {nearest.customer.name} "
                                                   f"{nearest.window_text}"}
        else:
            result[event.pk] = {"validationError": f"no customer found for event subject: {event.subject}"}
    return result


def _distance(attribution: SubjectAttribution, instant: dt.datetime) -> dt.timedelta:
    """How far ``instant`` lies outside the mapping's window (the nearest window explains the event best)."""
    if attribution.start is not None and instant < attribution.start:
        return attribution.start - instant
    if attribution.end is not None and instant >= attribution.end:
        return instant - attribution.end
    return dt.timedelta(0)


def subjects_of_customers(ids_or_keys: list[str]) -> dict[str, list[str]]:
    """For the meter query's filterCustomerId: every subject each customer has included."""
    numeric = [int(v) for v in ids_or_keys if v.isascii() and v.isdigit()]
    customers = Customer.objects.filter(Q(key__in=ids_or_keys) | Q(pk__in=numeric))
    subjects: dict[int, list[str]] = {}
    for customer_id, subject in SubjectAttribution.objects.filter(customer__in=customers).values_list(
        "customer_id", "subject"
    ):
        subjects.setdefault(customer_id, []).append(subject)
    result = {}
    for customer in customers:
        for name in (customer.key, str(customer.pk)):
            if name in ids_or_keys:
                result[name] = sorted(set(subjects.get(customer.pk, [])))
    return result
