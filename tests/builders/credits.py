"""Prepaid credits, through the real services."""

from __future__ import annotations

import datetime as dt

from credits.models import CreditGrant
from credits.services.grants import grant_create
from customers.models import Customer

__all__ = ["grant"]


def grant(customer: Customer, amount: int, *, effective_at: dt.datetime, **fields) -> CreditGrant:
    """A grant of ``amount`` minor units, available from ``effective_at``."""
    fields.setdefault("now", effective_at)
    return grant_create(customer=customer, amount=amount, effective_at=effective_at, **fields)
