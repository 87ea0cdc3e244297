"""How invoice and credit-note lines describe themselves (pure functions)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from functools import lru_cache

from catalog.display import plain_number, unit_label
from catalog.models import RateCard
from catalog.money import format_money


def period_label(start: dt.datetime, end: dt.datetime) -> str:
    """``Nov 1 – Dec 1`` (end exclusive, as on Stripe invoices); years shown when they differ."""

    def day(value: dt.datetime, with_year: bool) -> str:
        text = f"{value:%b} {value.day}"
        if value.hour or value.minute:
            text += f" {value:%H:%M}"
        return text + (f", {value.year}" if with_year else "")

    different_years = start.year != end.year
    return f"{day(start, different_years)} – {day(end, different_years)}"


def usage_name(rate_card: RateCard) -> str:
    return rate_card.feature.key if rate_card.feature is not None else rate_card.display_name


def usage_description(rate_card: RateCard, quantity: Decimal, currency: str, start: dt.datetime,
                      end: dt.datetime) -> str:
    units = f"{plain_number(quantity)} {unit_label(rate_card)}"
    unit_amount, package, amount = rate_card.unit_amount, rate_card.quantity_per_package, rate_card.amount
    if rate_card.price_type == "unit" and unit_amount is not None:
        units += f" × {format_money(unit_amount, currency)}"
    elif rate_card.price_type == "package" and package is not None and amount is not None:
        units += f" in packages of {plain_number(package)} × {format_money(amount, currency)}"
    else:
        units += f" ({rate_card.price_type})"
    return f"{usage_name(rate_card)} — {units} ({period_label(start, end)})"


def flat_fee_description(rate_card: RateCard, fraction: Decimal, start: dt.datetime, end: dt.datetime) -> str:
    text = f"{rate_card.display_name} ({period_label(start, end)})"
    if fraction != 1:
        text += f" — prorated {fraction * 100:.2f}% of the period"
    return text


def minimum_spend_description(rate_card: RateCard, start: dt.datetime, end: dt.datetime) -> str:
    return f"{rate_card.display_name} — minimum spend top-up ({period_label(start, end)})"


def maximum_spend_description(rate_card: RateCard, start: dt.datetime, end: dt.datetime) -> str:
    return f"{rate_card.display_name} — maximum spend cap ({period_label(start, end)})"


def late_usage_description(rate_card: RateCard, added: Decimal, start: dt.datetime, end: dt.datetime) -> str:
    return (f"{usage_name(rate_card)} — late usage: {plain_number(added)} {unit_label(rate_card)} "
            f"({period_label(start, end)})")


def usage_correction_description(rate_card: RateCard, start: dt.datetime, end: dt.datetime) -> str:
    return f"{usage_name(rate_card)} — usage rated lower than billed ({period_label(start, end)})"


def fee_adjustment_description(rate_card: RateCard, start: dt.datetime, end: dt.datetime) -> str:
    return f"{rate_card.display_name} — adjustment ({period_label(start, end)})"


def unused_fee_description(rate_card: RateCard, unused_from: dt.datetime, unused_to: dt.datetime) -> str:
    return f"Unused {rate_card.display_name} ({period_label(unused_from, unused_to)})"


TOKEN_TYPE_LABELS = {"request": "input", "response": "output", "cache_read": "cache read",
                     "cache_write": "cache write", "reasoning": "reasoning"}


def dimensions_label(dimensions: dict[str, str] | None) -> str:
    """``gpt-4o · input`` for a row matching {model: gpt-4o, type: request}; ``other`` for the default row."""
    if dimensions is None:
        return "other"
    return " · ".join(TOKEN_TYPE_LABELS.get(value, value) if name == "type" else value
                      for name, value in dimensions.items()) or "any"


@lru_cache(maxsize=4096)
def _unit_price_text(unit_price: Decimal, currency: str) -> str:
    """A row's unit price as shown (the same few prices repeat on every invoice of a close: format them once)."""
    return format_money(unit_price, currency)


def part_usage_description(rate_card: RateCard, dimensions: dict[str, str] | None, quantity: Decimal,
                           unit_price: Decimal | None, currency: str, start: dt.datetime, end: dt.datetime,
                           *, late: bool = False) -> str:
    """A dimensional rate card's row line: ``LLM tokens — gpt-4o · input: 1,000 tokens × $0.0000025 (Nov 1 –
    Dec 1)``; ``start``/``end`` are the stretch of the period the row version was in effect."""
    units = f"{plain_number(quantity)} {unit_label(rate_card)}"
    if unit_price is not None:
        units += f" × {_unit_price_text(unit_price, currency)}"
    what = "late usage: " if late else ""
    return f"{rate_card.display_name} — {dimensions_label(dimensions)}: {what}{units} ({period_label(start, end)})"


def spend_limit_adjustment_description(rate_card: RateCard, start: dt.datetime, end: dt.datetime) -> str:
    return f"{rate_card.display_name} — minimum/maximum spend adjustment ({period_label(start, end)})"
