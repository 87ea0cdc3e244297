"""What customers adds to metering's event views: the customer of each event, or why there is none."""

from __future__ import annotations

from django.db.models import Q

from .models import Customer, SubjectAttribution


def customer_of_events(events: list) -> dict[int, dict[str, str]]:
    """The events-list enricher of the customers layer (one query per page of events)."""
    subjects = {event.subject for event in events}
    attributions: dict[str, list[SubjectAttribution]] = {}
    for attribution in SubjectAttribution.objects.filter(subject__in=subjects).select_related("customer"):
        attributions.setdefault(attribution.subject, []).append(attribution)
    result: dict[int, dict[str, str]] = {}
    for event in events:
        match = next(
            (
                a
                for a in attributions.get(event.subject, [])
                if a.start <= event.time and (a.end is None or event.time < a.end)
            ),
            None,
        )
        if match is None:
            result[event.pk] = {"validationError": f"no customer found for event subject: {event.subject}"}
        else:
            result[event.pk] = {"customerId": match.customer.key}
    return result


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
