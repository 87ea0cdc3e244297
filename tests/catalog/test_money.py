"""Tests of catalog.money: currency codes, minor units, rounding once half-up, formatting. No database."""

import decimal
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalog.money import (
    UnknownCurrency,
    format_major,
    format_money,
    is_known_currency,
    minor_unit_exponent,
    to_major,
    to_minor,
)

D = Decimal


@pytest.mark.parametrize(
    ("code", "known"),
    [
        ("USD", True),
        ("EUR", True),
        ("JPY", True),
        ("KWD", True),
        ("usd", False),  # codes are upper-case
        ("ZZZ", False),
        ("US", False),
        ("USDX", False),
        ("", False),
        (None, False),
        (840, False),
    ],
)
def test_is_known_currency(code, known):
    assert is_known_currency(code) is known


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("KWD", 3), ("BHD", 3), ("CLF", 4)],
)
def test_minor_unit_exponent_comes_from_babel(code, exponent):
    assert minor_unit_exponent(code) == exponent


@pytest.mark.parametrize("code", ["ZZZ", "usd", "", None])
def test_unknown_currency_raises_a_value_error(code):
    with pytest.raises(UnknownCurrency):
        minor_unit_exponent(code)
    with pytest.raises(ValueError, match="unknown currency"):
        to_minor(D("1"), code)
    with pytest.raises(UnknownCurrency):
        to_major(1, code)
    with pytest.raises(UnknownCurrency):
        format_money(D("1"), code)


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        (D("12.34"), "USD", 1234),
        (D("12.345"), "USD", 1235),  # exact half: up
        (D("12.3449999"), "USD", 1234),
        (D("0.005"), "USD", 1),
        (D("0.004999"), "USD", 0),
        (D("-0.005"), "USD", -1),  # half-up is away from zero for negatives too
        (D("-12.345"), "USD", -1235),
        (D("-0.0049"), "USD", 0),
        (D("0.000003"), "USD", 0),
        (D("3000000.000000"), "USD", 300000000),
        (D("2.5"), "JPY", 3),
        (D("1.5"), "JPY", 2),
        (D("0.5"), "JPY", 1),
        (D("0.49"), "JPY", 0),
        (D("-2.5"), "JPY", -3),
        (D("1234"), "JPY", 1234),
        (D("1.2345"), "KWD", 1235),
        (D("0.0005"), "KWD", 1),
        (D("0.0004"), "KWD", 0),
        (D("-1.0005"), "KWD", -1001),
        (D("1E+3"), "USD", 100000),
        (7, "USD", 700),
    ],
)
def test_to_minor_rounds_once_half_up(amount, currency, minor):
    assert to_minor(amount, currency) == minor


def test_to_minor_ignores_the_callers_decimal_context():
    with decimal.localcontext(decimal.Context(prec=5, rounding=decimal.ROUND_DOWN)):
        assert to_minor(D("123456789.125"), "USD") == 12345678913


@pytest.mark.parametrize("amount", [1.5, "1.5", True])
def test_to_minor_refuses_floats_and_strings(amount):
    with pytest.raises(TypeError):
        to_minor(amount, "USD")


@pytest.mark.parametrize("amount", [D("NaN"), D("Infinity"), D("-Infinity")])
def test_to_minor_refuses_non_finite(amount):
    with pytest.raises(ValueError, match="finite"):
        to_minor(amount, "USD")


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [
        (1234, "USD", "12.34"),
        (5, "USD", "0.05"),
        (-5, "USD", "-0.05"),
        (0, "USD", "0.00"),
        (5, "JPY", "5"),
        (1234, "KWD", "1.234"),
        (1, "KWD", "0.001"),
        (10**20, "USD", "1000000000000000000.00"),
    ],
)
def test_to_major_is_exact_and_quantized_to_the_exponent(minor, currency, text):
    major = to_major(minor, currency)
    assert major == D(text)
    assert str(major) == text  # same exponent, not just the same value
    assert format_major(minor, currency) == text


@pytest.mark.parametrize("minor", [1.0, D("1"), "1", False])
def test_to_major_refuses_non_int(minor):
    with pytest.raises(TypeError):
        to_major(minor, "USD")


@pytest.mark.parametrize(
    ("amount", "currency", "kwargs", "text"),
    [
        (D("0.000003"), "USD", {}, "$0.000003"),
        (D("0.000000000001"), "USD", {}, "$0.000000000001"),
        (D("1234.5"), "USD", {}, "$1,234.50"),
        (D("1234.50"), "USD", {}, "$1,234.50"),
        (D("3000000.000000"), "USD", {}, "$3,000,000.00"),
        (D("1E+3"), "EUR", {}, "€1,000.00"),
        (D("5"), "JPY", {}, "¥5"),
        (D("1234567"), "JPY", {}, "¥1,234,567"),
        (D("0.5"), "JPY", {}, "¥0.5"),  # a unit price keeps its significant decimals
        (D("1.2345"), "KWD", {}, "KWD1.2345"),
        (D("-1.5"), "USD", {}, "-$1.50"),
        (D("-0.000"), "USD", {}, "$0.00"),
        (D("0.0000000000005"), "USD", {}, "$0.000000000001"),  # beyond 12 decimals: half-up
        (D("0.125"), "USD", {"max_decimals": 2}, "$0.13"),  # half-up, where Babel alone gives $0.12
        (D("0.125"), "USD", {"max_decimals": 0}, "$0.13"),  # never fewer than the exponent
        (D("0.123456"), "USD", {"max_decimals": 4}, "$0.1235"),
        (7, "USD", {}, "$7.00"),
    ],
)
def test_format_money(amount, currency, kwargs, text):
    assert format_money(amount, currency, **kwargs) == text


def test_format_money_refuses_floats_and_bad_max_decimals():
    with pytest.raises(TypeError):
        format_money(0.1, "USD")  # type: ignore[arg-type]  # the wrong type, on purpose
    with pytest.raises(ValueError, match="max_decimals"):
        format_money(D("1"), "USD", max_decimals=-1)


@given(
    minor=st.integers(min_value=-(10**18), max_value=10**18),
    currency=st.sampled_from(["USD", "JPY", "KWD", "EUR", "CLF"]),
)
def test_to_minor_and_to_major_round_trip_integers(minor, currency):
    major = to_major(minor, currency)
    assert to_minor(major, currency) == minor
    assert major.scaleb(minor_unit_exponent(currency)) == minor
    assert D(format_major(minor, currency)) == major


@given(amount=st.decimals(min_value=-(10**9), max_value=10**9, places=6), currency=st.sampled_from(["USD", "JPY"]))
def test_to_minor_is_within_half_a_minor_unit(amount, currency):
    exponent = minor_unit_exponent(currency)
    error = to_major(to_minor(amount, currency), currency) - amount
    half = D(1).scaleb(-exponent) / 2
    assert -half < error <= half if amount >= 0 else -half <= error < half
