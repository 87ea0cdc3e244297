"""Charging a stored rate card: the one place where a rate card, a quantity and a proration become priced lines.

Invoices (usage, fees, re-rating), the admin's *What would this cost?* box and plan-change proration all call
:func:`charge_rate_card`, so they can never disagree. Pure reads: no writes, no usage queries.
"""

from __future__ import annotations

from decimal import Decimal

from .models import RateCard
from .pricing import Price, PricingError, RateCardCharge, price_rate_card
from .rules import engine_price


def rate_card_price(rate_card: RateCard) -> Price | None:
    """The pricing engine's price of a stored rate card (tiers from the prefetch cache when present)."""
    tiers = [(t.up_to, t.unit_amount, t.flat_amount) for t in rate_card.tiers.all()]
    return engine_price(
        rate_card.price_type,
        amount=rate_card.amount,
        unit_amount=rate_card.unit_amount,
        quantity_per_package=rate_card.quantity_per_package,
        tiers=tiers,
    )


def charge_rate_card(
    rate_card: RateCard, *, quantity: Decimal, currency: str, proration: Decimal = Decimal(1)
) -> RateCardCharge:
    """The rate card's lines for ``quantity`` in one period covering ``proration`` of its full length: free
    quantity, tiers, minimum and maximum spend applied as the pricing engine defines them.

    Raises ``PricingError`` (a ``ValueError``) for a rate card without a price or with an invalid one."""
    price = rate_card_price(rate_card)
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
