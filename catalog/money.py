"""Currency helpers: ISO 4217 codes, minor units and formatting, all on ``Decimal``.

Rules:

* Stored amounts are integers in the currency's *minor unit* (cents for USD, yen for JPY, fils for KWD).
* The number of decimals of the minor unit (the *exponent*) comes from Babel's CLDR data
  (``common.currency.minor_unit_exponent``), never from a hand-written table: USD 2, JPY 0, KWD 3.
* Converting a major-unit ``Decimal`` to minor units rounds exactly once, with ``ROUND_HALF_UP``
  (ties go away from zero, so ``-0.005 USD`` becomes ``-1`` cent).
* Currency codes are upper-case ISO 4217 codes as Babel knows them (``"USD"``; ``"usd"`` is unknown). What a
  person types is read with ``normalize_currency`` (``" usd "`` → ``"USD"``) before it is stored, so stored codes
  are always upper-case.
* Floats are refused everywhere: pass ``Decimal`` (or ``int``) amounts.

This module imports only the standard library, Babel and ``common.currency``, so it is usable outside Django.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_UP, Decimal

from babel.numbers import format_currency

from common.currency import UnknownCurrency, is_known_currency, minor_unit_exponent

__all__ = [
    "UnknownCurrency",
    "format_major",
    "format_money",
    "is_known_currency",
    "minor_unit_exponent",
    "normalize_currency",
    "to_major",
    "to_minor",
]

# Enough digits for 10**15 units priced with 15 decimals, with room to spare.
_PRECISION = 60
_LOCALE = "en_US"


def _context() -> decimal.Context:
    """A private context so callers' contexts (precision, traps) do not change our results."""
    return decimal.Context(prec=_PRECISION, rounding=ROUND_HALF_UP, traps=[decimal.InvalidOperation])


def normalize_currency(code: object) -> str | None:
    """The ISO 4217 code a person meant, upper-cased: ``"usd"`` and ``" Usd "`` → ``"USD"``.

    ``None`` for anything that is not a known code once surrounding spaces are dropped and it is upper-cased:
    ``"XYZ"``, ``"us"``, ``"US D"``, a NUL, non-ASCII letters (``"uſd"`` would upper-case to ``"USD"``), a
    non-string. Stored codes pass unchanged.
    """
    if not isinstance(code, str):
        return None
    candidate = code.strip()
    if len(candidate) != 3 or not candidate.isascii() or not candidate.isalpha():
        return None
    candidate = candidate.upper()
    return candidate if is_known_currency(candidate) else None


def _as_decimal(amount: object, what: str) -> Decimal:
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise TypeError(f"{what} must be a Decimal or an int, not {type(amount).__name__}")
    value = Decimal(amount)
    if not value.is_finite():
        raise ValueError(f"{what} must be finite, got {value}")
    return value


def to_minor(amount: Decimal, currency: str) -> int:
    """Round a major-unit amount ONCE, ``ROUND_HALF_UP``, to an integer number of minor units.

    ``to_minor(Decimal("12.345"), "USD") == 1235``; ``to_minor(Decimal("-12.345"), "USD") == -1235``
    (half-up means away from zero); ``to_minor(Decimal("2.5"), "JPY") == 3``;
    ``to_minor(Decimal("1.0005"), "KWD") == 1001``.
    """
    exponent = minor_unit_exponent(currency)
    value = _as_decimal(amount, "amount")
    ctx = _context()
    minor = ctx.scaleb(value, exponent).to_integral_value(rounding=ROUND_HALF_UP, context=ctx)
    return int(minor)


def to_major(minor: int, currency: str) -> Decimal:
    """Exact major-unit ``Decimal`` for an integer number of minor units, with exactly ``exponent`` decimals.

    ``to_major(1234, "USD") == Decimal("12.34")``, ``to_major(5, "JPY") == Decimal("5")``,
    ``to_major(1, "KWD") == Decimal("0.001")``.
    """
    exponent = minor_unit_exponent(currency)
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"minor must be an int, not {type(minor).__name__}")
    return _context().scaleb(Decimal(minor), -exponent)


def format_major(minor: int, currency: str) -> str:
    """Plain decimal string of a minor-unit amount, for JSON: ``"12.34"``, ``"-0.05"``, ``"5"`` (JPY).

    No currency symbol, no grouping, never scientific notation.
    """
    return format(to_major(minor, currency), "f")


def format_money(amount: Decimal, currency: str, *, max_decimals: int = 12) -> str:
    """Human-readable amount with its symbol, for descriptions: ``"$0.000003"``, ``"$1,234.50"``, ``"¥5"``.

    Shows at least the currency's exponent of decimals and at most ``max(max_decimals, exponent)``,
    keeping every significant decimal of a unit price up to that limit. An amount with more decimals is
    rounded ``ROUND_HALF_UP`` to ``max_decimals`` first (Babel would otherwise round half-even). Uses
    Babel's ``format_currency`` with the ``en_US`` locale.
    """
    exponent = minor_unit_exponent(currency)
    value = _as_decimal(amount, "amount")
    if isinstance(max_decimals, bool) or not isinstance(max_decimals, int) or max_decimals < 0:
        raise ValueError(f"max_decimals must be a non-negative int, got {max_decimals!r}")
    decimals = max(max_decimals, exponent)
    ctx = _context()
    if value.as_tuple().exponent < -decimals:  # type: ignore[operator]  # finite, so the exponent is an int
        value = value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP, context=ctx)
    if value.is_zero():
        value = abs(value)  # no "-$0.00" for a negative zero or a tiny negative amount rounded away
    pattern = "¤#,##0"
    if decimals:
        pattern += "." + "0" * exponent + "#" * (decimals - exponent)
    with decimal.localcontext(ctx):
        return format_currency(value, currency, format=pattern, locale=_LOCALE, currency_digits=False)
