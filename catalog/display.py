"""Human-readable prices for finance staff (admin, invoice descriptions).

:func:`price_summary` is the one place where a rate card's price becomes the sentence a person reads
(``USD 0.00002 per token``, ``USD 49.00 per month (in advance)``, ``USD 5.00 per 1,000 requests (…)``): the plan
page, the rate card page and the rate card form's live preview all show it.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from common.forms import plain_number

from .models import Plan, RateCard
from .money import UnknownCurrency, minor_unit_exponent

__all__ = ["CADENCE_WORDS", "money_text", "plain_number", "price_summary", "unit_label", "unit_name"]

PriceType = RateCard.PriceType
Cadence = Plan.Cadence
CADENCE_WORDS: dict[str, str] = {Cadence.DAILY: "day", Cadence.WEEKLY: "week", Cadence.MONTHLY: "month",
                 Cadence.QUARTERLY: "quarter", Cadence.YEARLY: "year"}
_UNSET: Any = object()


def money_text(amount: Decimal | None, currency: str) -> str:
    """``USD 0.00002``, ``USD 49.00``, ``JPY 5``, ``USD 1,234.5678``: the code, then the amount with every
    significant decimal and at least the currency's minor-unit decimals (unknown code: as given)."""
    if amount is None:
        return f"{currency} ?"
    text = plain_number(amount)
    try:
        exponent = minor_unit_exponent(currency)
    except UnknownCurrency:
        exponent = 0
    whole, _, fraction = text.partition(".")
    fraction = fraction.ljust(exponent, "0")
    return f"{currency} {whole}{'.' + fraction if fraction else ''}"


def unit_label(rate_card) -> str:
    """What the rate card's feature counts, in the plural: ``tokens`` (a SUM of ``$.tokens``), ``requests`` /
    ``events`` (a COUNT of request / other events), ``units`` without a meter."""
    feature = rate_card.feature if rate_card.feature_id else None
    meter = feature.meter if feature is not None and feature.meter_id else None
    if meter is None:
        return "units"
    if meter.aggregation == "COUNT":
        return "requests" if "request" in meter.event_type else "events"
    name = (meter.value_property or "").rsplit(".", 1)[-1].strip("[]\"'") or "units"
    return name.replace("_", " ")


def unit_name(plural: str, count: Decimal | int = 1) -> str:
    """``tokens`` → ``token`` for a count of one (``ms`` and ``status``-like words stay as they are)."""
    if count != 1:
        return plural
    head, space, last = plural.rpartition(" ")
    if len(last) > 3 and last.endswith("s") and not last.endswith("ss"):
        last = last[:-1]
    return head + space + last


def _tiers_text(kind: str, tiers: list, money, unit: str) -> str:
    one = unit_name(unit)
    if not tiers:
        return f"{kind} (no tiers yet)"
    parts: list[str] = []
    lower: Decimal | None = None
    for i, tier in enumerate(tiers):
        up_to, unit_amount, flat = tier.up_to, tier.unit_amount, tier.flat_amount
        price = money(unit_amount)
        if kind == PriceType.GRADUATED:
            if up_to is None and i == 0:
                part = f"{price} per {one}"
            elif up_to is None:
                part = f"then {price} per {one} above {plain_number(lower)}" if lower is not None else f"then {price}"
            elif i == 0:
                part = f"first {plain_number(up_to)} {unit_name(unit, up_to)} at {price}"
            else:
                part = f"then up to {plain_number(up_to)} at {price}"
            if flat:
                part += f" + {money(flat)} once reached"
        else:
            if up_to is None:
                part = f"above {plain_number(lower)} at {price}" if lower is not None else f"any total at {price}"
            else:
                part = f"up to {plain_number(up_to)} at {price}"
            if flat:
                part += f" + {money(flat)}"
        parts.append(part)
        lower = up_to if up_to is not None else lower
    if kind == PriceType.GRADUATED:
        return "graduated: " + ", ".join(parts)
    return f"volume (every {one} at the rate of the total): " + ", ".join(parts)


def price_summary(rate_card, currency: str, *, cadence: str | None = _UNSET, tiers: Iterable | None = None,
                  unit: str | None = None) -> str:
    """The rate card's price as a person reads it, e.g. ``USD 0.00002 per token``, ``USD 49.00 per month (in
    advance)``, ``USD 5.00 per 1,000 requests (a started package counts in full)``, ``graduated: first 1,000
    tokens at USD 0.01, then USD 0.005 per token above 1,000``, with free quantity and minimum/maximum spend.

    ``rate_card`` may be unsaved (the form's live preview): then pass ``tiers`` (objects with ``up_to``,
    ``unit_amount``, ``flat_amount``) and ``cadence``; by default they come from the saved rate card and its plan.
    ``unit`` defaults to :func:`unit_label` of the rate card's feature.
    """
    kind = rate_card.price_type
    if not kind:
        return "no price"
    if cadence is _UNSET:
        cadence = rate_card.plan.billing_cadence if rate_card.plan_id else None
    period = CADENCE_WORDS.get(cadence or "", "period")
    unit = unit or unit_label(rate_card)
    one = unit_name(unit)

    def money(value: Decimal | None) -> str:
        return money_text(value, currency)

    extras: list[str] = []
    if kind == PriceType.FLAT:
        text = f"{money(rate_card.amount)} per {period}"
        extras.append("in advance" if rate_card.payment_term == RateCard.PaymentTerm.IN_ADVANCE else "in arrears")
    elif kind == PriceType.UNIT:
        text = f"{money(rate_card.unit_amount)} per {one}"
    elif kind == PriceType.PACKAGE:
        size = rate_card.quantity_per_package
        per = f"{plain_number(size)} {unit_name(unit, size)}" if size is not None else f"? {unit}"
        text = f"{money(rate_card.amount)} per {per}"
        extras.append("a started package counts in full")
    elif kind in (PriceType.GRADUATED, PriceType.VOLUME):
        if tiers is None:
            tiers = rate_card.tiers.all() if rate_card.pk else []
        text = _tiers_text(kind, list(tiers), money, unit)
    elif kind == PriceType.DIMENSIONAL:
        rows = list(rate_card.price_rows.all()) if rate_card.pk else []
        named = sum(1 for row in rows if not row.is_default)
        default = any(row.is_default for row in rows)
        scheduled = sum(1 for row in rows if row.effective_from is not None)
        keyed = ", ".join(rate_card.dimensions or []) or "?"
        text = (f"price table by {keyed}: {named} row(s)" + (" and a default" if default else ", no default "
                                                             "(unmatched usage is unpriced)")
                + (f", {scheduled} scheduled" if scheduled else ""))
    else:
        return f"unknown price type {kind!r}"
    if rate_card.free_quantity:
        free = rate_card.free_quantity
        extras.append(f"first {plain_number(free)} {unit_name(unit, free)} free")
    if rate_card.minimum_spend is not None:
        extras.append(f"minimum {money(rate_card.minimum_spend)} per {period}")
    if rate_card.maximum_spend is not None:
        extras.append(f"maximum {money(rate_card.maximum_spend)} per {period}")
    return text + (f" ({', '.join(extras)})" if extras else "")
