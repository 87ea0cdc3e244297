"""Charging a stored rate card: the one place where a rate card, a quantity and a proration become priced lines.

Invoices (usage, fees, re-rating), the admin's *What would this cost?* box and plan-change proration all call
:func:`charge_rate_card`, so they can never disagree. Pure reads: no writes, no usage queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from .dimensional import DimensionalPrice, DimensionRow, UsageGroup, price_dimensional
from .models import PriceRow, RateCard
from .pricing import Price, PricingError, RateCardCharge, price_rate_card
from .rules import engine_price, row_tiers


def is_dimensional(rate_card: RateCard) -> bool:
    return rate_card.price_type == RateCard.PriceType.DIMENSIONAL


def price_row_price(row: PriceRow) -> Price:
    """The pricing engine's price of one row of a dimensional table."""
    price = engine_price(row.price_type, amount=row.amount, unit_amount=row.unit_amount,
                         quantity_per_package=row.quantity_per_package, tiers=row_tiers(row.tiers))
    if price is None:
        raise PricingError("a price row needs a price type")
    return price


def dimensional_price(rate_card: RateCard) -> DimensionalPrice:
    """The table of a dimensional rate card (rows from the prefetch cache when present), cached on the instance:
    published rate cards never change, and a close reuses one instance per plan version."""
    cached = getattr(rate_card, "_dimensional_price", None)
    if cached is not None:
        return cached
    rows = tuple(
        DimensionRow(tuple(sorted((str(k), str(v)) for k, v in (row.match or {}).items())), price_row_price(row),
                     row.effective_from, row.is_default)
        for row in rate_card.price_rows.all()
    )
    table = DimensionalPrice(tuple(rate_card.dimensions or ()), rows)
    rate_card._dimensional_price = table  # type: ignore[attr-defined]
    return table


def rate_card_price(rate_card: RateCard) -> Price | DimensionalPrice | None:
    """The pricing engine's price of a stored rate card (tiers from the prefetch cache when present)."""
    if is_dimensional(rate_card):
        return dimensional_price(rate_card)
    tiers = [(t.up_to, t.unit_amount, t.flat_amount) for t in rate_card.tiers.all()]
    return engine_price(
        rate_card.price_type,
        amount=rate_card.amount,
        unit_amount=rate_card.unit_amount,
        quantity_per_package=rate_card.quantity_per_package,
        tiers=tiers,
    )


def charge_rate_card(
    rate_card: RateCard, *, quantity: Decimal, currency: str, proration: Decimal = Decimal(1),
    usage_groups: Sequence[UsageGroup] | None = None,
) -> RateCardCharge:
    """The rate card's lines for ``quantity`` in one period covering ``proration`` of its full length: free
    quantity, tiers, minimum and maximum spend applied as the pricing engine defines them.

    A dimensional rate card prices ``usage_groups`` (its usage split by dimension values and effective segment,
    see :mod:`catalog.dimensional`) instead of ``quantity``.

    Raises ``PricingError`` (a ``ValueError``) for a rate card without a price or with an invalid one."""
    price = rate_card_price(rate_card)
    if isinstance(price, DimensionalPrice):
        return price_dimensional(
            price=price, usage=usage_groups or (), currency=currency,
            free_quantity=rate_card.free_quantity or Decimal(0), minimum_spend=rate_card.minimum_spend,
            maximum_spend=rate_card.maximum_spend, proration=proration)
    if price is None:
        raise PricingError(f"rate card {rate_card.key} has no price")
    return price_rate_card(
        price=price,
        quantity=quantity,
        currency=currency,
        free_quantity=rate_card.free_quantity or Decimal(0),
        minimum_spend=rate_card.minimum_spend,
        maximum_spend=rate_card.maximum_spend,
        proration=proration,
    )
