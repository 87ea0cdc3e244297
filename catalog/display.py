"""Human-readable prices for finance staff (admin, invoice descriptions)."""

from __future__ import annotations

from decimal import Decimal

from .money import format_money


def plain_number(value: Decimal) -> str:
    """``1000000`` → ``1,000,000``; ``0.5`` → ``0.5`` (no trailing zeros, no exponent)."""
    text = format(value.normalize(), "f")
    whole, _, fraction = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    whole = f"{int(whole.lstrip('-') or '0'):,}"
    return sign + whole + (f".{fraction}" if fraction else "")


def price_summary(rate_card, currency: str) -> str:
    kind = rate_card.price_type
    money = lambda v: format_money(v, currency) if v is not None else "?"  # noqa: E731
    if not kind:
        return "no price"
    if kind == "flat":
        return f"{money(rate_card.amount)} per period"
    if kind == "unit":
        text = f"{money(rate_card.unit_amount)} per unit"
    elif kind == "package":
        per = plain_number(rate_card.quantity_per_package) if rate_card.quantity_per_package else "?"
        text = f"{money(rate_card.amount)} per started package of {per}"
    else:
        tiers = list(rate_card.tiers.all())
        parts, lower = [], Decimal(0)
        for tier in tiers:
            span = (
                f"{plain_number(lower)}–{plain_number(tier.up_to)}"
                if tier.up_to is not None
                else f"above {plain_number(lower)}"
            )
            part = f"{span}: {money(tier.unit_amount)}/unit"
            if tier.flat_amount:
                part += f" + {money(tier.flat_amount)}"
            parts.append(part)
            lower = tier.up_to if tier.up_to is not None else lower
        text = f"{kind} — " + "; ".join(parts) if parts else f"{kind} (no tiers yet)"
    extras = []
    if rate_card.free_quantity:
        extras.append(f"first {plain_number(rate_card.free_quantity)} free")
    if rate_card.minimum_spend is not None:
        extras.append(f"minimum {money(rate_card.minimum_spend)}")
    if rate_card.maximum_spend is not None:
        extras.append(f"maximum {money(rate_card.maximum_spend)}")
    return text + (f" ({', '.join(extras)})" if extras else "")
