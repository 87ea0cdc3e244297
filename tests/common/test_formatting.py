"""What customers read on invoices: money, quantities, dates, periods and addresses per locale (common/formatting)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from catalog.money import minor_unit_exponent as catalog_exponent
from common import formatting as fmt
from common.currency import UnknownCurrency, minor_unit_exponent
from common.formatting import UnknownLocale, country_codes, normalize_locale

NBSP = "\u00a0"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


def test_one_exponent_rule_shared_with_the_catalog():
    assert catalog_exponent is minor_unit_exponent
    assert [minor_unit_exponent(c) for c in ("USD", "JPY", "KWD")] == [2, 0, 3]


@pytest.mark.parametrize(("minor", "currency", "locale", "text"), [
    (1700, "USD", "en_US", "$17.00"),
    (679, "JPY", "en_US", "¥679"),
    (6786, "KWD", "en_US", f"KWD{NBSP}6.786"),
    (-5, "USD", "en_US", "-$0.05"),
    (0, "USD", "en_US", "$0.00"),
    (123456789, "USD", "en_US", "$1,234,567.89"),
    (1700, "EUR", "de_DE", f"17,00{NBSP}€"),
    (1700, "CHF", "de_CH", f"CHF{NBSP}17.00"),
])
def test_amounts_have_their_currency_and_its_decimals(minor, currency, locale, text):
    assert fmt.format_amount(minor, currency, locale) == text


def test_unit_prices_keep_every_significant_decimal():
    assert fmt.format_unit_price(Decimal("0.000010000000000"), "USD") == "$0.00001"
    assert fmt.format_unit_price(Decimal("2.5"), "USD") == "$2.50"
    assert fmt.format_unit_price(Decimal("5"), "JPY") == "¥5"
    assert fmt.format_unit_price(Decimal("1E+3"), "USD") == "$1,000.00"
    assert fmt.format_unit_price(Decimal("0.0000000000005"), "USD") == "$0.000000000001"  # half up past 12 decimals


def test_unknown_currency_is_refused():
    with pytest.raises(UnknownCurrency):
        fmt.format_amount(1, "XYZ")
    with pytest.raises(UnknownCurrency):
        fmt.format_unit_price(Decimal(1), "usd")


def test_quantities_are_grouped_without_exponents():
    assert fmt.format_quantity(Decimal("1700000.000000000000")) == "1,700,000"
    assert fmt.format_quantity(Decimal("0.50")) == "0.5"
    assert fmt.format_quantity(Decimal("1E+3"), "de_DE") == "1.000"
    assert f"{fmt.format_quantity(Decimal(1_700_000))} tokens × {fmt.format_unit_price(Decimal('0.00001'), 'USD')}" == \
        "1,700,000 tokens × $0.00001"


def test_periods_are_inclusive_and_dates_have_no_time():
    assert fmt.format_period(utc(2026, 11, 1), utc(2026, 12, 1)) == "Nov 1 – Nov 30, 2026"
    assert fmt.format_period(utc(2026, 12, 15), utc(2027, 1, 15)) == "Dec 15, 2026 – Jan 14, 2027"
    assert fmt.format_period(utc(2026, 11, 1), utc(2026, 11, 2)) == "Nov 1, 2026"
    assert fmt.format_period(utc(2026, 11, 1), utc(2026, 12, 1, 12)) == "Nov 1 – Dec 1, 2026"  # ends at noon
    assert fmt.format_period(utc(2026, 11, 1), utc(2026, 12, 1), "de_DE") == "1. Nov. – 30. Nov. 2026"
    assert fmt.format_date(utc(2026, 12, 31, 23, 59)) == "Dec 31, 2026"
    assert fmt.format_date(dt.datetime(2027, 1, 1, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == "Dec 31, 2026"
    assert fmt.format_date(None) == ""


@pytest.mark.parametrize(("country", "fields", "lines"), [
    ("US", {"city": "San Francisco", "region": "CA", "postal_code": "94105"},
     ["1 Market St", "San Francisco, CA 94105", "United States"]),
    ("DE", {"city": "Berlin", "postal_code": "10115"}, ["1 Market St", "10115 Berlin", "Germany"]),
    ("FR", {"city": "Paris", "postal_code": "75001"}, ["1 Market St", "75001 Paris", "France"]),
    ("NL", {"city": "Amsterdam", "postal_code": "1012 JS"}, ["1 Market St", "1012 JS Amsterdam", "Netherlands"]),
    ("GB", {"city": "London", "postal_code": "SW1A 1AA"}, ["1 Market St", "London", "SW1A 1AA", "United Kingdom"]),
    ("JP", {"city": "Chiyoda-ku", "region": "Tokyo", "postal_code": "100-0001"},
     ["1 Market St", "Chiyoda-ku, Tokyo", "100-0001", "Japan"]),
    ("CH", {"city": "Zürich", "postal_code": "8001"}, ["1 Market St", "CH-8001 Zürich", "Switzerland"]),
    ("us", {"city": "Austin"}, ["1 Market St", "Austin", "United States"]),  # missing parts leave no separators
    ("", {"city": "Somewhere", "postal_code": "123"}, ["1 Market St", "123 Somewhere"]),
    ("ZZ", {"city": "X"}, ["1 Market St", "X", "ZZ"]),
    ("../", {"city": "X"}, ["1 Market St", "X", "../"]),
])
def test_addresses_follow_the_country(country, fields, lines):
    assert fmt.format_address(street=["1 Market St", ""], country=country, **fields) == lines


def test_country_names_are_in_the_locale():
    assert fmt.format_address(street=["Invalidenstr. 1"], city="Berlin", postal_code="10115", country="DE",
                          locale="de_DE") == ["Invalidenstr. 1", "10115 Berlin", "Deutschland"]
    assert {"US", "DE", "JP", "GB"} <= country_codes() and "ZZ" not in country_codes()


@pytest.mark.parametrize(("code", "normal"), [("en_US", "en_US"), ("de-DE", "de_DE"), ("ja", "ja"),
                                               (" fr_FR ", "fr_FR")])
def test_locales_are_normalised(code, normal):
    assert normalize_locale(code) == normal


@pytest.mark.parametrize("code", ["", "xx_YY", "../etc/passwd", "en_US\x00", "e", "en_US_POSIX_TOO_LONG_1234", None,
                                  42, "dé_DE"])
def test_bad_locales_are_refused(code):
    with pytest.raises(UnknownLocale):
        normalize_locale(code)
