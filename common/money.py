"""Money as people read it on screens: ``format_money(7200, "USD")`` → ``$72.00``, ``¥679``, ``KWD 6.786``.

Amounts are integer minor units (as stored); the currency's exponent and the symbol, grouping and pattern come
from Babel/CLDR for the locale (``en_US`` by default). An unknown code is shown as ``<amount> <code>`` with two
decimals rather than failing a page.
"""

from __future__ import annotations

from decimal import Decimal

from babel.core import UnknownLocaleError
from babel.numbers import format_currency, get_currency_precision, is_currency


def format_money(amount_minor: int, currency: str, locale: str = "en_US") -> str:
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise TypeError(f"amount_minor must be an int, not {type(amount_minor).__name__}")
    known = isinstance(currency, str) and is_currency(currency)
    exponent = get_currency_precision(currency) if known else 2
    amount = Decimal(amount_minor).scaleb(-exponent)
    if not known:
        return f"{amount:,.{exponent}f} {currency}"
    try:
        text = format_currency(amount, currency, locale=locale, currency_digits=True)
    except (UnknownLocaleError, ValueError):
        text = format_currency(amount, currency, locale="en_US", currency_digits=True)
    # A currency without a symbol of its own reads "KWD 6.786", not "KWD6.786".
    for prefix in (currency, "-" + currency):
        if text.startswith(prefix) and text[len(prefix):][:1].isdigit():
            return prefix + "\u00a0" + text[len(prefix):]
    return text
