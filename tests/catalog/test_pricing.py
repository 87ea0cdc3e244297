"""Tests of catalog.pricing: every price model, tier bounds, free quantity, spends, proration, rounding.

Pure functions on Decimal: no database. Expected amounts are computed by hand in the comments.
"""

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from catalog.money import UnknownCurrency, to_minor
from catalog.pricing import (
    FlatPrice,
    GraduatedPrice,
    PackagePrice,
    PriceLine,
    PricingError,
    RateCardCharge,
    Tier,
    TierCharge,
    UnitPrice,
    VolumePrice,
    charge_for_quantity,
    price_rate_card,
    validate_price,
)

D = Decimal

# (0, 1000] at 0.10; (1000, 5000] at 0.08 + 5 flat; (5000, ∞) at 0.05 + 10 flat.
TIERS = (
    Tier(up_to=D(1000), unit_amount=D("0.10")),
    Tier(up_to=D(5000), unit_amount=D("0.08"), flat_amount=D(5)),
    Tier(up_to=None, unit_amount=D("0.05"), flat_amount=D(10)),
)
GRADUATED = GraduatedPrice(TIERS)
VOLUME = VolumePrice(TIERS)


def usd(**kwargs) -> RateCardCharge:
    return price_rate_card(currency="USD", **kwargs)


# ------------------------------------------------------------------------------------------------- graduated


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("0", "0"),
        ("1", "0.10"),
        ("999", "99.90"),
        ("1000", "100.00"),  # 1000 is inside the first tier (up_to inclusive)
        ("1000.5", "105.04"),  # 100 + 0.5 × 0.08 + 5
        ("1001", "105.08"),  # 100 + 1 × 0.08 + 5
        ("4999", "424.92"),  # 100 + 3999 × 0.08 + 5
        ("5000", "425.00"),  # 100 + 4000 × 0.08 + 5
        ("5001", "435.05"),  # 425 + 1 × 0.05 + 10
        ("1000000", "50185.00"),  # 425 + 995000 × 0.05 + 10
    ],
)
def test_graduated_at_and_around_tier_bounds(quantity, expected):
    exact, _ = charge_for_quantity(GRADUATED, D(quantity))
    assert exact == D(expected)
    charge = usd(price=GRADUATED, quantity=D(quantity))
    assert charge.total == to_minor(D(expected), "USD") == charge.lines[0].amount


def test_graduated_tier_breakdown():
    exact, tiers = charge_for_quantity(GRADUATED, D(5001))
    assert exact == D("435.05")
    assert tiers == (
        TierCharge(0, D(0), D(1000), D(1000), D("0.10"), D(0), D("100.00")),
        TierCharge(1, D(1000), D(5000), D(4000), D("0.08"), D(5), D("325.00")),
        TierCharge(2, D(5000), None, D(1), D("0.05"), D(10), D("10.05")),
    )


def test_graduated_breakdown_leaves_out_tiers_with_no_quantity():
    _, tiers = charge_for_quantity(GRADUATED, D(1000))
    assert tiers == (TierCharge(0, D(0), D(1000), D(1000), D("0.10"), D(0), D("100.00")),)


def test_graduated_line_has_no_unit_price():
    (line,) = usd(price=GRADUATED, quantity=D(1001)).lines
    assert line == PriceLine(
        kind="usage",
        quantity=D(1001),
        unit_price=None,
        exact_amount=D("105.08"),
        amount=10508,
        tiers=(
            TierCharge(0, D(0), D(1000), D(1000), D("0.10"), D(0), D("100.00")),
            TierCharge(1, D(1000), D(5000), D(1), D("0.08"), D(5), D("5.08")),
        ),
        free_quantity_applied=D(0),
    )


def test_graduated_flat_amount_of_the_first_tier_only_with_positive_quantity():
    price = GraduatedPrice((Tier(D(10), D(1), D(3)), Tier(None, D(2))))
    assert charge_for_quantity(price, D(0)) == (D(0), ())
    assert charge_for_quantity(price, D("0.001"))[0] == D("3.001")
    assert charge_for_quantity(price, D(11))[0] == D(15)  # 10 + 3 + 1 × 2


# ---------------------------------------------------------------------------------------------------- volume


@pytest.mark.parametrize(
    ("quantity", "expected", "tier_index"),
    [
        ("1", "0.10", 0),
        ("999", "99.90", 0),
        ("1000", "100.00", 0),
        ("1000.5", "85.04", 1),  # 1000.5 × 0.08 + 5
        ("1001", "85.08", 1),  # 1001 × 0.08 + 5
        ("4999", "404.92", 1),  # 4999 × 0.08 + 5
        ("5000", "405.00", 1),
        ("5001", "260.05", 2),  # 5001 × 0.05 + 10
        ("1000000", "50010.00", 2),  # 1000000 × 0.05 + 10
    ],
)
def test_volume_at_and_around_tier_bounds(quantity, expected, tier_index):
    exact, tiers = charge_for_quantity(VOLUME, D(quantity))
    assert exact == D(expected)
    (tier_charge,) = tiers
    tier = TIERS[tier_index]
    from_quantity = D(0) if tier_index == 0 else TIERS[tier_index - 1].up_to
    assert from_quantity is not None
    assert tier_charge == TierCharge(
        index=tier_index,
        from_quantity=from_quantity,
        up_to=tier.up_to,
        quantity=D(quantity),
        unit_amount=tier.unit_amount,
        flat_amount=tier.flat_amount,
        exact_amount=D(expected),
    )
    assert usd(price=VOLUME, quantity=D(quantity)).total == to_minor(D(expected), "USD")


def test_volume_with_only_an_open_tier():
    price = VolumePrice((Tier(None, D("0.5"), D(1)),))
    assert charge_for_quantity(price, D(3))[0] == D("2.5")


# ---------------------------------------------------------------------------------------------- unit and flat


@pytest.mark.parametrize(
    ("unit_amount", "quantity", "exact", "minor"),
    [
        ("0.000003", "1000000000000", "3000000", 300000000),  # 10^12 tokens: 3,000,000.00 USD exactly
        ("0.000000000001", "1000000000000000", "1000", 100000),  # 10^15 × 10^-12
        ("0.000003", "333", "0.000999", 0),
        ("0.000003", "1667", "0.005001", 1),
        ("0.000001", "5000", "0.005", 1),  # exact half cent: up
        ("0.000001", "4999", "0.004999", 0),
        ("2.50", "0.5", "1.250", 125),
        ("19.99", "3", "59.97", 5997),
    ],
)
def test_unit_price(unit_amount, quantity, exact, minor):
    (line,) = usd(price=UnitPrice(D(unit_amount)), quantity=D(quantity)).lines
    assert line.kind == "usage"
    assert line.exact_amount == D(exact)
    assert line.amount == minor
    assert line.unit_price == D(unit_amount)
    assert line.quantity == D(quantity)
    assert line.tiers == ()


def test_ten_to_the_twelve_tokens_is_exact():
    charge = usd(price=UnitPrice(D("0.000003")), quantity=D(10**12))
    assert charge == RateCardCharge(
        lines=(PriceLine("usage", D(10**12), D("0.000003"), D("3000000.000000"), 300000000, (), D(0)),),
        total=300000000,
    )


def test_flat_price_ignores_quantity_and_free_quantity():
    charge = usd(price=FlatPrice(D("49.00")), quantity=D(12345), free_quantity=D(100))
    assert charge.lines == (PriceLine("flat_fee", D(1), D("49.00"), D("49.00"), 4900, (), D(0)),)
    assert charge.total == 4900
    assert charge_for_quantity(FlatPrice(D("49.00")), D(0)) == (D("49.00"), ())
    assert charge_for_quantity(FlatPrice(D("49.00")), D(7)) == (D("49.00"), ())


# ---------------------------------------------------------------------------------------------------- package


@pytest.mark.parametrize(
    ("quantity", "packages"),
    [
        ("0", 0),
        ("0.0001", 1),
        ("1", 1),
        ("99.9999", 1),
        ("100", 1),  # exact multiple: no extra package
        ("100.0001", 2),
        ("101", 2),
        ("200", 2),
        ("250.5", 3),
        ("1000000", 10000),
    ],
)
def test_package_price_charges_per_started_package(quantity, packages):
    price = PackagePrice(amount=D("5.00"), quantity_per_package=D(100))
    (line,) = usd(price=price, quantity=D(quantity)).lines
    assert line.exact_amount == D("5.00") * packages
    assert line.amount == 500 * packages
    assert line.unit_price == D("5.00")
    assert line.quantity == D(quantity)


def test_package_with_fractional_package_size():
    price = PackagePrice(amount=D("0.30"), quantity_per_package=D("0.5"))
    assert charge_for_quantity(price, D("1.2"))[0] == D("0.90")  # ceil(2.4) = 3 packages
    assert charge_for_quantity(price, D("1.5"))[0] == D("0.90")  # exactly 3 packages
    assert charge_for_quantity(price, D("1.50001"))[0] == D("1.20")


# ---------------------------------------------------------------------------------------------- zero quantity


@pytest.mark.parametrize(
    "price",
    [
        UnitPrice(D("0.10")),
        GRADUATED,
        VOLUME,
        GraduatedPrice((Tier(D(10), D(1), D(3)), Tier(None, D(2), D(4)))),
        VolumePrice((Tier(D(10), D(1), D(3)), Tier(None, D(2), D(4)))),
        PackagePrice(D(5), D(100)),
    ],
)
def test_zero_quantity_charges_nothing(price):
    assert charge_for_quantity(price, D(0)) == (D(0), ())
    charge = usd(price=price, quantity=D(0))
    assert charge.total == 0
    (line,) = charge.lines
    assert line.kind == "usage"
    assert line.amount == 0
    assert line.exact_amount == 0
    assert line.tiers == ()


# ---------------------------------------------------------------------------------------------- free quantity


def test_free_quantity_moves_the_graduated_split():
    without = usd(price=GRADUATED, quantity=D(6000))
    assert without.total == 48500  # 100 + 320 + 5 + 1000 × 0.05 + 10 = 485.00

    charge = usd(price=GRADUATED, quantity=D(6000), free_quantity=D(1000))
    (line,) = charge.lines
    assert line.quantity == D(5000)
    assert line.free_quantity_applied == D(1000)
    assert line.exact_amount == D("425.00")  # billable 5000: the last tier is not reached any more
    assert charge.total == 42500
    assert [t.quantity for t in line.tiers] == [D(1000), D(4000)]


def test_free_quantity_larger_than_quantity():
    (line,) = usd(price=GRADUATED, quantity=D(500), free_quantity=D(1000)).lines
    assert line.quantity == D(0)
    assert line.free_quantity_applied == D(500)
    assert line.amount == 0
    assert line.tiers == ()


def test_free_quantity_applies_before_volume_and_unit():
    assert usd(price=VOLUME, quantity=D(1500), free_quantity=D(1000)).total == 5000  # 500 × 0.10
    (line,) = usd(price=UnitPrice(D("0.000003")), quantity=D(10**6), free_quantity=D("100000.5")).lines
    assert line.exact_amount == D("2.6999985")  # 899999.5 × 0.000003
    assert line.amount == 270


# ---------------------------------------------------------------------------------------------- min/max spend


def test_minimum_spend_tops_up():
    charge = usd(price=UnitPrice(D("0.01")), quantity=D(150), minimum_spend=D("5.00"))
    main, top_up = charge.lines
    assert main.amount == 150
    assert top_up == PriceLine("minimum_spend", D(1), None, D("3.50"), 350)
    assert charge.total == 500


def test_minimum_spend_not_needed():
    charge = usd(price=UnitPrice(D("0.01")), quantity=D(500), minimum_spend=D("5.00"))
    assert len(charge.lines) == 1
    assert charge.total == 500


def test_minimum_spend_tops_up_the_rounded_amount_without_rounding_twice():
    # main line 0.005001 → 1 cent; minimum 0.015 → 2 cents (half-up); the top-up is exactly 1 cent.
    charge = usd(price=UnitPrice(D("0.000003")), quantity=D(1667), minimum_spend=D("0.015"))
    assert [line.amount for line in charge.lines] == [1, 1]
    assert charge.lines[1].exact_amount == D("0.01")
    assert charge.total == 2


def test_minimum_spend_with_zero_usage():
    charge = usd(price=GRADUATED, quantity=D(0), minimum_spend=D(20))
    assert [(line.kind, line.amount) for line in charge.lines] == [("usage", 0), ("minimum_spend", 2000)]
    assert charge.total == 2000


def test_maximum_spend_discounts():
    charge = usd(price=UnitPrice(D("0.01")), quantity=D(100000), maximum_spend=D(250))
    main, discount = charge.lines
    assert main.amount == 100000
    assert discount == PriceLine("discount", D(1), None, D("-750.00"), -75000)
    assert charge.total == 25000


def test_maximum_spend_not_reached():
    charge = usd(price=UnitPrice(D("0.01")), quantity=D(100), maximum_spend=D(250))
    assert len(charge.lines) == 1
    assert charge.total == 100


@pytest.mark.parametrize(
    ("quantity", "kinds", "total"),
    [
        ("150", ["usage", "minimum_spend"], 500),
        ("10000", ["usage"], 10000),
        ("100000", ["usage", "discount"], 25000),
    ],
)
def test_minimum_and_maximum_spend_together(quantity, kinds, total):
    charge = usd(price=UnitPrice(D("0.01")), quantity=D(quantity), minimum_spend=D(5), maximum_spend=D(250))
    assert [line.kind for line in charge.lines] == kinds
    assert charge.total == total == sum(line.amount for line in charge.lines)


def test_minimum_equal_to_maximum_is_a_fixed_charge():
    for quantity in (D(0), D(100), D(10**6)):
        charge = usd(price=UnitPrice(D("0.01")), quantity=quantity, minimum_spend=D(50), maximum_spend=D(50))
        assert charge.total == 5000


def test_minimum_above_maximum_is_an_error():
    with pytest.raises(PricingError, match="minimum_spend"):
        usd(price=UnitPrice(D("0.01")), quantity=D(1), minimum_spend=D(300), maximum_spend=D(250))


def test_spends_are_prorated():
    # minimum 100 × 16/31 = 51.6129… → 5161; maximum 200 × 16/31 = 103.2258… → 10323
    proration = D(16) / D(31)
    low = usd(price=UnitPrice(D("0.01")), quantity=D(100), minimum_spend=D(100), proration=proration)
    assert low.lines[1].amount == 5161 - 100
    assert low.total == 5161
    high = usd(price=UnitPrice(D("0.01")), quantity=D(100000), maximum_spend=D(200), proration=proration)
    assert high.lines[1].amount == 10323 - 100000
    assert high.total == 10323


# ---------------------------------------------------------------------------------------------------- proration


def test_prorated_flat_fee():
    proration = D(16) / D(31)  # 0.5161290322580645161290322581
    (line,) = usd(price=FlatPrice(D("49.00")), quantity=D(0), proration=proration).lines
    assert line.kind == "flat_fee"
    assert line.quantity == proration
    assert line.unit_price == D("49.00")
    # 49 × 0.5161290322580645161290322581, exact (31 digits: more than the default context's 28)
    assert line.exact_amount == D("25.2903225806451612903225806469")
    assert line.amount == 2529


@pytest.mark.parametrize(
    ("amount", "proration", "minor"),
    [
        ("0.25", "0.5", 13),  # 0.125 → half-up
        ("49.00", "0", 0),
        ("49.00", "1", 4900),
        ("10.00", "0.5", 500),
        ("0.01", "0.5", 1),  # 0.005 → 1 cent
    ],
)
def test_flat_fee_proration_rounds_half_up(amount, proration, minor):
    charge = usd(price=FlatPrice(D(amount)), quantity=D(0), proration=D(proration))
    assert charge.total == minor


def test_proration_does_not_scale_usage():
    charge = usd(price=GRADUATED, quantity=D(1001), proration=D("0.5"))
    assert charge.total == 10508


@pytest.mark.parametrize("proration", [D("-0.1"), D("1.0001"), D(2)])
def test_proration_outside_zero_one_is_an_error(proration):
    with pytest.raises(PricingError, match="proration"):
        usd(price=FlatPrice(D(10)), quantity=D(0), proration=proration)


# ------------------------------------------------------------------------------------------- other currencies


@pytest.mark.parametrize(
    ("currency", "unit_amount", "quantity", "minor"),
    [
        ("JPY", "0.5", "5", 3),  # 2.5 yen → 3
        ("JPY", "0.5", "3", 2),  # 1.5 → 2
        ("JPY", "0.5", "1", 1),  # 0.5 → 1
        ("JPY", "0.49", "1", 0),
        ("JPY", "120", "7", 840),
        ("KWD", "0.0001", "12345", 1235),  # 1.2345 KWD → 1.235 (1235 fils)
        ("KWD", "0.0005", "1", 1),  # 0.0005 → 0.001
        ("KWD", "0.0001", "4", 0),
        ("KWD", "1.25", "3", 3750),
    ],
)
def test_rounding_in_currencies_without_two_decimals(currency, unit_amount, quantity, minor):
    charge = price_rate_card(price=UnitPrice(D(unit_amount)), quantity=D(quantity), currency=currency)
    assert charge.total == minor


def test_minimum_spend_in_jpy():
    charge = price_rate_card(
        price=UnitPrice(D("0.5")), quantity=D(5), currency="JPY", minimum_spend=D(1000), proration=D("0.5005")
    )
    # usage 2.5 → 3 yen; minimum 1000 × 0.5005 = 500.5 → 501 yen; top-up 498 yen
    assert [line.amount for line in charge.lines] == [3, 498]
    assert charge.lines[1].exact_amount == D(498)
    assert charge.total == 501


def test_unknown_currency():
    with pytest.raises(UnknownCurrency):
        price_rate_card(price=UnitPrice(D(1)), quantity=D(1), currency="XYZ")


# --------------------------------------------------------------------------------------------- late-usage delta


def test_late_usage_delta_is_price_with_minus_price_without():
    with_late, _ = charge_for_quantity(GRADUATED, D(1100))
    without_late, _ = charge_for_quantity(GRADUATED, D(900))
    assert with_late == D("113.00")  # 100 + 100 × 0.08 + 5
    assert without_late == D("90.00")
    assert with_late - without_late == D("23.00")


# ------------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("price", "problems"),
    [
        (FlatPrice(D(-1)), ["flat amount must not be negative (got -1)"]),
        (UnitPrice(D("-0.000001")), ["unit_amount must not be negative (got -0.000001)"]),
        (UnitPrice(0.1), ["unit_amount must be a Decimal, not float"]),  # type: ignore[arg-type]  # the wrong type, on purpose
        (UnitPrice(D("NaN")), ["unit_amount must be a finite number (got NaN)"]),
        (GraduatedPrice(()), ["tiers must not be empty"]),
        (VolumePrice(()), ["tiers must not be empty"]),
        (GraduatedPrice([Tier(None)]), []),  # type: ignore[arg-type]  # a list is accepted as well as a tuple
        (GraduatedPrice(None), ["tiers must be a tuple of Tier, not NoneType"]),  # type: ignore[arg-type]  # the wrong type, on purpose
        (GraduatedPrice(("x",)), ["tier 1 must be a Tier, not str"]),  # type: ignore[arg-type]  # the wrong type, on purpose
        (
            GraduatedPrice((Tier(D(1000)), Tier(D(1000)), Tier(None))),
            ["tiers must be strictly ascending: tier 2 up_to 1000 is not greater than tier 1 up_to 1000"],
        ),
        (
            VolumePrice((Tier(D(5000)), Tier(D(1000)), Tier(None))),
            ["tiers must be strictly ascending: tier 2 up_to 1000 is not greater than tier 1 up_to 5000"],
        ),
        (GraduatedPrice((Tier(D(0)), Tier(None))), ["tier 1 up_to must be greater than 0 (got 0)"]),
        (GraduatedPrice((Tier(D(-5)), Tier(None))), ["tier 1 up_to must be greater than 0 (got -5)"]),
        (
            GraduatedPrice((Tier(None), Tier(D(1000)), Tier(None))),
            ["tier 1 has no up_to: only the last tier may be open-ended (up_to=None)"],
        ),
        (
            VolumePrice((Tier(D(1000)), Tier(D(5000)))),
            ["the last tier (tier 2) must be open-ended (up_to=None), got up_to=5000"],
        ),
        (
            GraduatedPrice((Tier(D(10), D(-1)), Tier(None, D(1), D(-2)))),
            ["tier 1 unit_amount must not be negative (got -1)", "tier 2 flat_amount must not be negative (got -2)"],
        ),
        (GraduatedPrice((Tier(1.5), Tier(None))), ["tier 1 up_to must be a Decimal, not float"]),  # type: ignore[arg-type]  # the wrong type, on purpose
        (PackagePrice(D(-5), D(100)), ["package amount must not be negative (got -5)"]),
        (PackagePrice(D(5), D(0)), ["quantity_per_package must be greater than 0 (got 0)"]),
        (PackagePrice(D(5), D(-1)), ["quantity_per_package must be greater than 0 (got -1)"]),
        ("not a price", ["unsupported price type str"]),
    ],
)
def test_validate_price_problems(price, problems):
    assert validate_price(price) == problems
    if problems:
        with pytest.raises(PricingError) as excinfo:
            charge_for_quantity(price, D(1))
        assert list(excinfo.value.problems) == problems
        assert str(excinfo.value) == "; ".join(problems)
        with pytest.raises(PricingError) as excinfo:
            usd(price=price, quantity=D(1))
        assert list(excinfo.value.problems) == problems


@pytest.mark.parametrize(
    "price",
    [FlatPrice(D(0)), UnitPrice(D("0.000000000001")), GRADUATED, VOLUME, PackagePrice(D(0), D("0.001")),
     FlatPrice(3)],  # type: ignore[arg-type]  # an int amount is accepted at run time too
)
def test_valid_prices_have_no_problems(price):
    assert validate_price(price) == []


def test_pricing_error_is_a_value_error():
    assert issubclass(PricingError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"quantity": D(-1)}, "quantity must not be negative (got -1)"),
        ({"quantity": D("-0.0001")}, "quantity must not be negative (got -0.0001)"),
        ({"quantity": 1.5}, "quantity must be a Decimal, not float"),
        ({"quantity": D(1), "free_quantity": D(-1)}, "free_quantity must not be negative (got -1)"),
        ({"quantity": D(1), "minimum_spend": D(-1)}, "minimum_spend must not be negative (got -1)"),
        ({"quantity": D(1), "maximum_spend": D(-1)}, "maximum_spend must not be negative (got -1)"),
    ],
)
def test_invalid_inputs(kwargs, message):
    with pytest.raises(PricingError) as excinfo:
        usd(price=UnitPrice(D(1)), **kwargs)
    assert message in excinfo.value.problems


def test_negative_quantity_in_charge_for_quantity():
    with pytest.raises(PricingError, match="quantity must not be negative"):
        charge_for_quantity(GRADUATED, D(-1))


def test_amounts_beyond_the_engines_precision_fail_loudly():
    huge = UnitPrice(D("0.1234567890123456789012345678901"))
    with pytest.raises(PricingError, match="exactly"):
        charge_for_quantity(huge, D("1234567890123456789012345678901.7"))


# ---------------------------------------------------------------------------------------------------- properties

amounts = st.decimals(min_value=0, max_value=100, places=6)
quantities = st.decimals(min_value=0, max_value=10**7, places=3)


@st.composite
def tier_tuples(draw):
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=10**6), max_size=4)))
    ups = [D(b) / 10 for b in bounds] + [None]
    return tuple(Tier(up, draw(amounts), draw(amounts)) for up in ups)


@given(tiers=tier_tuples(), a=quantities, b=quantities)
def test_graduated_never_decreases_as_quantity_grows(tiers, a, b):
    low, high = sorted((a, b))
    price = GraduatedPrice(tiers)
    low_amount, low_tiers = charge_for_quantity(price, low)
    high_amount, _ = charge_for_quantity(price, high)
    assert low_amount <= high_amount
    assert low_amount == sum((t.exact_amount for t in low_tiers), D(0))
    assert sum((t.quantity for t in low_tiers), D(0)) == low


@given(tiers=tier_tuples(), quantity=quantities)
def test_volume_prices_all_units_at_the_containing_tier(tiers, quantity):
    assume(quantity > 0)
    lower = D(0)
    for tier in tiers:  # the tier whose (lower, up_to] contains the quantity
        if tier.up_to is None or lower < quantity <= tier.up_to:
            break
        lower = tier.up_to
    amount, (tier_charge,) = charge_for_quantity(VolumePrice(tiers), quantity)
    assert amount == quantity * tier.unit_amount + tier.flat_amount
    assert tier_charge.up_to == tier.up_to
    assert tier_charge.from_quantity == lower


@given(unit_amount=st.decimals(min_value=0, max_value=10, places=12), a=quantities, b=quantities)
def test_unit_price_is_linear(unit_amount, a, b):
    price = UnitPrice(unit_amount)
    assert charge_for_quantity(price, a)[0] == a * unit_amount
    assert charge_for_quantity(price, a + b)[0] == charge_for_quantity(price, a)[0] + charge_for_quantity(price, b)[0]


@given(
    quantity=quantities,
    free=quantities,
    minimum=st.none() | st.decimals(min_value=0, max_value=1000, places=2),
    extra=st.none() | st.decimals(min_value=0, max_value=1000, places=2),
)
def test_total_is_the_sum_of_rounded_lines_and_respects_spends(quantity, free, minimum, extra):
    maximum = None if extra is None else (minimum or D(0)) + extra
    charge = usd(price=GRADUATED, quantity=quantity, free_quantity=free, minimum_spend=minimum, maximum_spend=maximum)
    assert charge.total == sum(line.amount for line in charge.lines)
    main = charge.lines[0]
    assert main.amount == to_minor(main.exact_amount, "USD")
    assert main.quantity == max(quantity - free, D(0))
    if minimum is not None:
        assert charge.total >= to_minor(minimum, "USD")
    if maximum is not None:
        assert charge.total <= to_minor(maximum, "USD")
    if minimum is None and maximum is None:
        assert len(charge.lines) == 1
