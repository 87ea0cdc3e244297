"""The dimensional price engine (pure functions): validation, effective segments, row versions, whole-table free
quantity and spend limits, unpriced usage, one rounding per line."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal as D
from typing import Any

import pytest

from catalog.dimensional import (
    DimensionalPrice,
    DimensionRow,
    UsageGroup,
    effective_segments,
    price_dimensional,
    rows_in_effect,
    validate_dimensional,
)
from catalog.pricing import FlatPrice, PricingError, UnitPrice

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
MID = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)
T1 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
GPT_IN = (("model", "gpt-4o"), ("type", "request"))


def table(*rows: DimensionRow) -> DimensionalPrice:
    return DimensionalPrice(("model", "type"), rows)


def group(quantity, model="gpt-4o", kind="request", start=T0, end=T1) -> UsageGroup:
    return UsageGroup(start, end, (("model", model), ("type", kind)), D(quantity))


def test_validation_names_each_problem():
    bad = DimensionalPrice(("model", "model"), (
        DimensionRow((("colour", "red"),), UnitPrice(D(1))),
        DimensionRow((("model", ""),), FlatPrice(D(1))),
        DimensionRow((("model", "x"),), UnitPrice(D(-1))),
        DimensionRow((("model", "x"),), UnitPrice(D(1)), is_default=True),
        DimensionRow((("model", "y"),), UnitPrice(D(1)), effective_from=dt.datetime(2026, 1, 1)),  # noqa: DTZ001
    ))
    problems = validate_dimensional(bad)
    assert "dimensions must be listed once each" in problems
    assert any('"colour" is not one of the dimensions' in p for p in problems)
    assert any("non-empty string" in p for p in problems)
    assert any("must be a usage price" in p for p in problems)
    assert any("unit_amount must not be negative" in p for p in problems)
    assert any("the default must not have a match" in p for p in problems)
    assert any("aware UTC" in p for p in problems)
    with pytest.raises(PricingError):
        price_dimensional(price=bad, usage=[], currency="USD")


def test_segments_cut_at_effective_dates_inside_the_period_only():
    prices = table(DimensionRow(GPT_IN, UnitPrice(D(1))), DimensionRow(GPT_IN, UnitPrice(D(2)), MID),
                   DimensionRow(GPT_IN, UnitPrice(D(3)), T1))
    assert effective_segments(prices, T0, T1) == [(T0, MID), (MID, T1)]
    assert [r.price for _, r in rows_in_effect(prices, T0)] == [UnitPrice(D(1))]
    assert [r.price for _, r in rows_in_effect(prices, MID)] == [UnitPrice(D(2))]
    assert [r.part for _, r in rows_in_effect(prices, T1)] == ["model=gpt-4o,type=request@2026-12-01T00:00:00Z"]


def test_a_row_scheduled_later_does_not_exist_before():
    prices = table(DimensionRow((("model", "o3"),), UnitPrice(D(1)), MID))
    charge = price_dimensional(price=prices, usage=[group(10, "o3", start=T0, end=MID),
                                                    group(5, "o3", start=MID, end=T1)], currency="USD")
    assert [(line.part, line.quantity, line.amount) for line in charge.lines] == [
        ("model=o3@2026-11-16T00:00:00Z", D(5), 500)]
    assert [(u.label, u.quantity) for u in charge.unpriced] == [("no price for model=o3, type=request", D(10))]


def test_each_row_line_is_rounded_once_and_the_total_is_their_sum():
    prices = table(DimensionRow(GPT_IN, UnitPrice(D("0.000003"))),
                   DimensionRow((("model", "gpt-4o"),), UnitPrice(D("0.000003"))))
    charge = price_dimensional(price=prices, usage=[group(1_500), group(1_500, kind="response")], currency="USD")
    assert [line.amount for line in charge.lines] == [0, 0]  # 0.0045 each rounds to 0.00, never summed first
    assert charge.total == 0


def test_free_quantity_is_spread_in_row_order_and_limits_prorate():
    prices = table(DimensionRow(GPT_IN, UnitPrice(D("0.01"))), DimensionRow((("model", "gpt-4o"),), UnitPrice(
        D("0.02"))))
    charge = price_dimensional(price=prices, usage=[group(100, kind="response"), group(30)], currency="USD",
                               free_quantity=D(50), minimum_spend=D("10"), proration=D("0.5"))
    by_part = {line.part: line for line in charge.lines}
    assert (by_part["model=gpt-4o,type=request"].quantity, by_part["model=gpt-4o,type=request"].amount) == (D(0), 0)
    assert (by_part["model=gpt-4o"].quantity, by_part["model=gpt-4o"].amount) == (D(80), 160)
    assert by_part[""].kind == "minimum_spend" and by_part[""].amount == 500 - 160


def test_negative_or_float_usage_is_refused():
    prices = table(DimensionRow(GPT_IN, UnitPrice(D(1))))
    quantities: tuple[Any, ...] = (D(-1), 1.5)
    for quantity in quantities:
        with pytest.raises(PricingError):
            price_dimensional(price=prices, usage=[UsageGroup(T0, T1, GPT_IN, quantity)], currency="USD")
