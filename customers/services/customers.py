"""Customers and the subjects ("Include usage from") whose usage they pay for."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from catalog.rules import clean_currency, currency_problem, key_problem

from ..models import Customer
from .attributions import (  # noqa: F401 -- the attribution services, also importable from here
    AttributionError,
    attribution_add,
    attribution_end,
    attribution_update,
    consumer_include,
)

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
        errors["collection_method"] = f"collection method must be {' or '.join(Customer.CollectionMethod.values)}"
    elif method == Customer.CollectionMethod.SEND_INVOICE and not fields.get("days_until_due"):
        errors["days_until_due"] = f"{Customer.CollectionMethod.SEND_INVOICE.value} needs days until due (e.g. 30)"
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
