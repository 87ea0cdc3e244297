"""Money as people read it on screens: ``format_money(7200, "USD")`` → ``$72.00``, ``¥679``, ``KWD 6.786``.

Amounts are integer minor units (as stored); the currency's exponent and the symbol, grouping and pattern come
from Babel/CLDR for the locale (``en_US`` by default). An unknown code is shown as ``<amount> <code>`` with two
decimals rather than failing a page.
"""

from __future__ import annotations

from decimal import Decimal

from .currency import UnknownCurrency
from .formatting import DEFAULT_LOCALE, UnknownLocale, format_amount, normalize_locale


def format_money(amount_minor: int, currency: str, locale: str = "en_US") -> str:
    """:func:`common.formatting.format_amount` (the one money format), tolerant of a currency code it does not
    know, which reads ``<amount> <code>``: a dashboard page never fails on one odd row."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise TypeError(f"amount_minor must be an int, not {type(amount_minor).__name__}")
    try:
        locale = normalize_locale(locale)
    except UnknownLocale:
        locale = DEFAULT_LOCALE
    try:
        return format_amount(amount_minor, currency, locale)
    except UnknownCurrency:
        return f"{Decimal(amount_minor).scaleb(-2):,.2f} {currency}"
