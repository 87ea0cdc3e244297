"""Which currencies exist and how many decimals their minor unit has: Babel's CLDR data, never a hand table.

The one rule for currency exponents (USD 2, JPY 0, KWD 3). :mod:`catalog.money` (amounts, rounding) and
:mod:`common.formatting` (what a customer reads) both use it. Standard library and Babel only.
"""

from __future__ import annotations

from functools import lru_cache

from babel.numbers import get_currency_precision, is_currency

__all__ = ["UnknownCurrency", "is_known_currency", "minor_unit_exponent"]


class UnknownCurrency(ValueError):
    """Raised for a currency code that is not an ISO 4217 code known to Babel."""


def is_known_currency(code: object) -> bool:
    """Whether ``code`` is an upper-case ISO 4217 currency code known to Babel (``"USD"``, ``"JPY"``, ``"KWD"``)."""
    return isinstance(code, str) and len(code) == 3 and code.isupper() and _babel_knows(code)


@lru_cache(maxsize=512)
def _babel_knows(code: str) -> bool:
    """Babel lists its currencies on every call: asked once per code (every line of every invoice asks)."""
    return is_currency(code)


@lru_cache(maxsize=512)
def _exponent(code: str) -> int:
    return get_currency_precision(code)


def minor_unit_exponent(code: str) -> int:
    """Number of decimals of the currency's minor unit, from Babel/CLDR: USD 2, JPY 0, KWD 3.

    Raises ``UnknownCurrency`` for a code Babel does not know (Babel itself would silently answer 2).
    """
    if not is_known_currency(code):
        raise UnknownCurrency(f"unknown currency code {code!r} (expected an upper-case ISO 4217 code such as 'USD')")
    return _exponent(code)
