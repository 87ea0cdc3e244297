"""Customers and what bills them, through the real services."""

from __future__ import annotations

import datetime as dt

from customers.models import Customer
from customers.services.customers import attribution_add, customer_create
from tests.builders.moments import utc

__all__ = ["SINCE", "customer", "kong_air"]

NAMES = {"kong-air": "Kong Air"}
SINCE = utc(2026, 1, 1)


def customer(key: str = "kong-air", name: str | None = None, *, currency: str = "USD", **fields) -> Customer:
    """A customer (no usage attributed unless ``subjects=[...]``); the name defaults to "Kong Air" for kong-air and
    to the key in title case otherwise."""
    return customer_create(key=key, name=name or NAMES.get(key, key.title()), currency=currency, **fields)


def kong_air(key: str = "kong-air", name: str | None = None, *, since: dt.datetime | None = SINCE,
             **fields) -> Customer:
    """A customer billed for its own gateway subject (the subject is the key) from ``since`` (2026-01-01)."""
    air = customer(key, name, **fields)
    attribution_add(customer=air, subject=key, start=since)
    return air
