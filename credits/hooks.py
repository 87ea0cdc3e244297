"""Registries higher layers fill at app-ready time, so credits asks them without importing them.

``invoicing`` sits above ``credits``: only it can bill a purchase. It registers ``buy(customer, amount, *,
available_immediately, priority, expires_at, description, actor, label) -> CreditGrant`` here: a grant of source
``purchased`` made through the API or the admin is then a top-up (the grant and its own invoice with a "Credit
top-up" line; the credits available when the invoice is paid, or at once)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Purchase = Callable[..., Any]
_purchase: list[Purchase] = []


def register_purchase(buy: Purchase) -> None:
    _purchase[:] = [buy]


def purchase_handler() -> Purchase | None:
    return _purchase[0] if _purchase else None
