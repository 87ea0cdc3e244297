"""Customers and the subjects ("Include usage from") whose usage they pay for."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.utils import timezone

from catalog.rules import clean_currency, currency_problem, key_problem

from ..models import Customer, KongConsumer, SubjectAttribution

CUSTOMER_FIELDS = (
    "name",
    "email",
    "currency",
    "address_line1",
    "address_line2",
    "city",
    "state",
    "postal_code",
    "country",
    "tax_id",
    "collection_method",
    "days_until_due",
    "metadata",
    "stripe_customer_id",
)


class CustomerError(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def customer_problems(fields: dict[str, Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    if "key" in fields:
        problem = key_problem(fields["key"], "customer key")
        if problem:
            errors["key"] = problem
    if not str(fields.get("name") or "").strip():
        errors["name"] = "name is required"
    problem = currency_problem(fields.get("currency"))
    if problem:
        errors["currency"] = problem
    if fields.get("email"):
        try:
            validate_email(fields["email"])
        except ValidationError:
            errors["email"] = f"{fields['email']!r} is not an email address"
    country = fields.get("country") or ""
    if country and (len(country) != 2 or not country.isalpha() or not country.isupper()):
        errors["country"] = "country must be an ISO 3166-1 alpha-2 code such as US or DE"
    method = fields.get("collection_method") or Customer.CollectionMethod.CHARGE_AUTOMATICALLY
    if method not in Customer.CollectionMethod.values:
        errors["collection_method"] = "collection method must be charge_automatically or send_invoice"
    elif method == Customer.CollectionMethod.SEND_INVOICE and not fields.get("days_until_due"):
        errors["days_until_due"] = "send_invoice needs days until due (e.g. 30)"
    if fields.get("metadata") is not None and not isinstance(fields.get("metadata"), dict):
        errors["metadata"] = "metadata must be an object"
    return errors


@transaction.atomic
def customer_create(
    *, key: str, name: str, currency: str, subjects: list[str] | None = None, **fields: Any
) -> Customer:
    unknown = set(fields) - set(CUSTOMER_FIELDS)
    if unknown:
        raise CustomerError(dict.fromkeys(sorted(unknown), "unknown field"))
    values = {"key": key, "name": name, "currency": clean_currency(currency), **fields}
    errors = customer_problems(values)
    if "key" not in errors and Customer.objects.filter(key=key).exists():
        errors["key"] = f"a customer with key {key!r} already exists"
    if errors:
        raise CustomerError(errors)
    values["metadata"] = values.get("metadata") or {}
    customer = Customer.objects.create(**values)
    for subject in subjects or []:
        attribution_add(customer=customer, subject=subject)
    return customer


@transaction.atomic
def customer_update(*, customer: Customer, **fields: Any) -> Customer:
    unknown = set(fields) - set(CUSTOMER_FIELDS)
    if unknown:
        raise CustomerError(dict.fromkeys(sorted(unknown), "unknown field"))
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    if "currency" in fields:
        fields["currency"] = clean_currency(fields["currency"])  # "usd" is stored as "USD"
    values = {**{f: getattr(customer, f) for f in CUSTOMER_FIELDS}, **fields}
    errors = customer_problems(values)
    if "currency" in fields and fields["currency"] != customer.currency and customer.subscriptions.exists():
        errors["currency"] = "the currency of a customer with subscriptions cannot change"
    if errors:
        raise CustomerError(errors)
    for name, value in fields.items():
        setattr(customer, name, value if name != "metadata" else (value or {}))
    customer.save()
    return customer


class AttributionError(ValueError):
    pass


def attribution_current(subject: str) -> SubjectAttribution | None:
    return SubjectAttribution.objects.select_related("customer").filter(subject=subject, end__isnull=True).first()


@transaction.atomic
def attribution_add(
    *,
    customer: Customer,
    subject: str,
    start: dt.datetime | None = None,
    kong_consumer: KongConsumer | None = None,
    reassign: bool = False,
) -> SubjectAttribution:
    """Include the usage of ``subject`` from ``start`` (default now). A subject belongs to one customer at a
    time: with ``reassign`` the current mapping of another customer ends exactly at ``start``, so usage before
    it stays with (and is billed to) the previous customer."""
    subject = (subject or "").strip()
    if not subject or len(subject) > 255:
        raise AttributionError("a subject is a non-empty string of at most 255 characters")
    start = start or timezone.now()
    current = SubjectAttribution.objects.select_for_update().filter(subject=subject, end__isnull=True).first()
    if current is not None:
        if current.customer_id == customer.pk:
            return current
        if not reassign:
            raise AttributionError(
                f"subject {subject!r} already belongs to {current.customer}; "
                "reassign it to move it (usage before the move stays with them)"
            )
        if start <= current.start:
            raise AttributionError(
                f"subject {subject!r} belongs to {current.customer} since "
                f"{current.start.isoformat()}; it can move only after that"
            )
        current.end = start
        current.save(update_fields=["end"])
    overlapping = SubjectAttribution.objects.filter(subject=subject, end__gt=start, start__lt=start)
    if overlapping.exists():
        raise AttributionError(f"subject {subject!r} was attributed to another customer after {start.isoformat()}")
    try:
        with transaction.atomic():
            return SubjectAttribution.objects.create(
                customer=customer, subject=subject, start=start, kong_consumer=kong_consumer
            )
    except IntegrityError as exc:  # a concurrent add won the race for this subject
        raise AttributionError(f"subject {subject!r} was just attributed to another customer") from exc


@transaction.atomic
def attribution_end(*, attribution: SubjectAttribution, end: dt.datetime | None = None) -> SubjectAttribution:
    attribution = SubjectAttribution.objects.select_for_update().get(pk=attribution.pk)
    end = end or timezone.now()
    if attribution.end is not None:
        return attribution
    if end <= attribution.start:
        raise AttributionError("the end of an attribution must be after its start")
    attribution.end = end
    attribution.save(update_fields=["end"])
    return attribution


@transaction.atomic
def consumer_include(
    *, customer: Customer, consumer: KongConsumer, start: dt.datetime | None = None, reassign: bool = False
) -> list[SubjectAttribution]:
    """Include a Kong consumer: both ``consumer:<id>`` and its username attribute to the customer."""
    start = start or timezone.now()
    return [
        attribution_add(customer=customer, subject=subject, start=start, kong_consumer=consumer, reassign=reassign)
        for subject in consumer.subjects
    ]
