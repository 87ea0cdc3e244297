"""Pricing engine: pure functions on ``Decimal`` (no database, no Django).

Price models (frozen dataclasses; amounts are major units of the rate card's currency, e.g. dollars):

* ``FlatPrice(amount)`` -- a fixed amount per period; quantity is ignored.
* ``UnitPrice(unit_amount)`` -- ``quantity × unit_amount``. Unit amounts may have 12+ decimals
  (``Decimal("0.000003")`` per token).
* ``GraduatedPrice(tiers)`` -- each unit is priced at the tier it falls in. Tier *i* covers the half-open
  range ``(previous up_to, up_to]`` (the first tier starts after 0; ``up_to`` is INCLUSIVE; the last tier has
  ``up_to=None`` and is open-ended). A tier's ``flat_amount`` is added once when a positive quantity falls in
  the tier. Quantities may be fractional: with tiers up to 1000 / 5000 / open, 1000.5 units are 1000 in the
  first tier and 0.5 in the second.
* ``VolumePrice(tiers)`` -- ALL units are priced at the tier that contains the total quantity (the first tier
  whose ``up_to >= quantity``, else the last), plus that tier's ``flat_amount``.
* ``PackagePrice(amount, quantity_per_package)`` -- ``amount`` per started package:
  ``amount × ceil(quantity / quantity_per_package)``.

Rules of the calculation (``price_rate_card``):

* **Free quantity** is taken off first: ``billable = max(0, quantity − free_quantity)``; tiers then apply to the
  billable quantity starting from 0 (1000 free units shift every graduated tier split by 1000 units).
  Flat prices ignore quantity and free quantity.
* **Zero quantity**: a usage-based price (unit, graduated, volume, package) charges exactly nothing for a
  billable quantity of 0 -- no tier flat amounts, no first package, and no tier charges. The usage line is still
  returned (amount 0) so the invoice can show the quantity and the free quantity used.
* **Proration** (an exact ``Decimal`` fraction 0 ≤ p ≤ 1 of the period covered) multiplies the flat amount of a
  ``FlatPrice`` and the minimum and maximum spend. It never scales usage quantities or tier bounds.
* **Rounding**: each line is computed exactly in ``Decimal`` (``exact_amount``, major units, never rounded) and
  then rounded ONCE, ``ROUND_HALF_UP`` (ties away from zero), to the currency's minor unit taken from Babel
  (``amount``, an integer: USD 2 decimals, JPY 0, KWD 3). Totals are sums of rounded lines.
* **Minimum spend**: when the main line's rounded ``amount`` is below ``to_minor(minimum_spend × proration)``, a
  ``"minimum_spend"`` line tops it up to exactly that minimum (the difference is computed in minor units, so
  nothing is rounded twice).
* **Maximum spend**: when the main line's rounded ``amount`` is above ``to_minor(maximum_spend × proration)``, a
  ``"discount"`` line with the negative difference brings it down to exactly that maximum.
* **Validation**: ``validate_price`` lists a price's problems; every engine function raises ``PricingError``
  (a ``ValueError``) with those messages for an invalid price, and for a negative or non-``Decimal`` quantity,
  a proration outside [0, 1], negative spends or a minimum spend above the maximum. Floats are refused
  everywhere (``int`` is accepted as an exact number).
* **Precision**: arithmetic runs in a private ``decimal`` context with 60 significant digits and the ``Inexact``
  trap on, so every multiplication is exact (10**12 tokens × 0.000003 is exactly 3,000,000) or fails loudly.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from catalog.money import minor_unit_exponent, to_major, to_minor

__all__ = [
    "LINE_DISCOUNT",
    "LINE_FLAT_FEE",
    "LINE_MINIMUM_SPEND",
    "LINE_USAGE",
    "FlatPrice",
    "GraduatedPrice",
    "PackagePrice",
    "Price",
    "PriceLine",
    "PricingError",
    "RateCardCharge",
    "Tier",
    "TierCharge",
    "UnitPrice",
    "VolumePrice",
    "charge_for_quantity",
    "price_rate_card",
    "validate_price",
]

LINE_FLAT_FEE = "flat_fee"
LINE_USAGE = "usage"
LINE_MINIMUM_SPEND = "minimum_spend"
LINE_DISCOUNT = "discount"

_PRECISION = 60
_ZERO = Decimal(0)
_ONE = Decimal(1)


class PricingError(ValueError):
    """An invalid price or invalid input to the engine. ``problems`` holds the individual messages."""

    def __init__(self, *problems: str) -> None:
        self.problems: tuple[str, ...] = problems
        super().__init__("; ".join(problems))


# --------------------------------------------------------------------------------------------------- price models


@dataclass(frozen=True)
class Tier:
    """One tier of a graduated or volume price.

    ``up_to`` is the INCLUSIVE upper bound; the tier covers ``(previous tier's up_to, up_to]`` (the first tier
    starts after 0). Only the last tier has ``up_to=None`` (open-ended), and it must.
    """

    up_to: Decimal | None
    unit_amount: Decimal = _ZERO
    flat_amount: Decimal = _ZERO


@dataclass(frozen=True)
class FlatPrice:
    """A fixed ``amount`` per period, whatever the quantity (prorated by ``price_rate_card``'s ``proration``)."""

    amount: Decimal


@dataclass(frozen=True)
class UnitPrice:
    """``quantity × unit_amount``; ``unit_amount`` may have 12+ decimals (``Decimal("0.000003")`` per token)."""

    unit_amount: Decimal


@dataclass(frozen=True)
class GraduatedPrice:
    """Each unit priced at the tier it falls in; a tier's ``flat_amount`` is added once if a positive quantity
    falls in it."""

    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class VolumePrice:
    """All units priced at the tier containing the total quantity (first tier with ``up_to >= quantity``, else the
    last), plus that tier's ``flat_amount``."""

    tiers: tuple[Tier, ...]


@dataclass(frozen=True)
class PackagePrice:
    """``amount`` per started package: ``amount × ceil(quantity / quantity_per_package)``."""

    amount: Decimal
    quantity_per_package: Decimal


Price = FlatPrice | UnitPrice | GraduatedPrice | VolumePrice | PackagePrice


# --------------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class TierCharge:
    """What one tier contributed (graduated and volume prices only; tiers with no quantity are left out).

    ``index`` is the 0-based position in ``price.tiers``; ``from_quantity`` is the EXCLUSIVE lower bound of the
    tier (0 for the first), ``up_to`` its inclusive upper bound (``None`` when open-ended); ``quantity`` the
    units priced in it (for a volume price: all units); ``exact_amount = quantity × unit_amount + flat_amount``,
    in major units, unrounded.
    """

    index: int
    from_quantity: Decimal
    up_to: Decimal | None
    quantity: Decimal
    unit_amount: Decimal
    flat_amount: Decimal
    exact_amount: Decimal


@dataclass(frozen=True)
class PriceLine:
    """One line of a rate card's charge.

    * ``kind``: ``"flat_fee"`` (``FlatPrice``), ``"usage"`` (every other price), ``"minimum_spend"`` (top-up),
      ``"discount"`` (maximum spend cap, negative amount).
    * ``quantity``: the billable quantity (after free quantity) for usage; the proration fraction for a flat fee
      (``Decimal(1)`` when not prorated); ``Decimal(1)`` for minimum spend and discount lines.
    * ``unit_price``: the unit amount (unit price), the unprorated amount (flat fee), the package amount
      (package price); ``None`` for graduated and volume prices (see ``tiers``) and for minimum spend/discount.
    * ``exact_amount``: major units, unrounded (for minimum spend/discount lines: exactly ``to_major(amount)``).
    * ``amount``: minor units, ``to_minor(exact_amount, currency)`` -- the line's only rounding.
    * ``tiers``: the per-tier breakdown for graduated and volume prices, empty otherwise.
    * ``free_quantity_applied``: how much of the free quantity this line used (``min(quantity, free_quantity)``).
    """

    kind: str
    quantity: Decimal
    unit_price: Decimal | None
    exact_amount: Decimal
    amount: int
    tiers: tuple[TierCharge, ...] = ()
    free_quantity_applied: Decimal = _ZERO
    # Dimensional prices (catalog.dimensional): the row version billed, its match, the stretch of the period it
    # covered, and the quantity it matched before free quantity.
    part: str = ""
    dimensions: tuple[tuple[str, str], ...] = ()
    effective: tuple[Any, Any] | None = None
    rated_quantity: Decimal | None = None


@dataclass(frozen=True)
class RateCardCharge:
    """The lines of one rate card for one period; ``total`` is the sum of the lines' rounded ``amount``s."""

    lines: tuple[PriceLine, ...]
    total: int
    unpriced: tuple[Any, ...] = ()  # dimensional prices: catalog.dimensional.UnpricedUsage


# ------------------------------------------------------------------------------------------------------ validation


def _number_problem(value: object, what: str) -> str | None:
    """A problem with a number given as ``Decimal`` (or ``int``), or ``None`` when it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int):
        return f"{what} must be a Decimal, not {type(value).__name__}"
    if not Decimal(value).is_finite():
        return f"{what} must be a finite number (got {value})"
    return None


def _non_negative_problem(value: object, what: str) -> str | None:
    problem = _number_problem(value, what)
    if problem is None and Decimal(value) < 0:  # type: ignore[arg-type]  # checked by _number_problem
        problem = f"{what} must not be negative (got {value})"
    return problem


def _tier_problems(tiers: object) -> list[str]:
    if not isinstance(tiers, tuple | list):
        return [f"tiers must be a tuple of Tier, not {type(tiers).__name__}"]
    if not tiers:
        return ["tiers must not be empty"]
    problems: list[str] = []
    last = len(tiers) - 1
    previous: Decimal = _ZERO
    previous_label: str | None = None  # None: no bound seen yet, the lower bound is 0
    for i, tier in enumerate(tiers):
        label = f"tier {i + 1}"
        if not isinstance(tier, Tier):
            problems.append(f"{label} must be a Tier, not {type(tier).__name__}")
            continue
        for problem in (
            _non_negative_problem(tier.unit_amount, f"{label} unit_amount"),
            _non_negative_problem(tier.flat_amount, f"{label} flat_amount"),
        ):
            if problem:
                problems.append(problem)
        if tier.up_to is None:
            if i != last:
                problems.append(f"{label} has no up_to: only the last tier may be open-ended (up_to=None)")
            continue
        problem = _number_problem(tier.up_to, f"{label} up_to")
        if problem:
            problems.append(problem)
            continue
        up_to = Decimal(tier.up_to)
        if i == last:
            problems.append(f"the last tier ({label}) must be open-ended (up_to=None), got up_to={tier.up_to}")
        if up_to <= previous:
            if previous_label is None:
                problems.append(f"{label} up_to must be greater than 0 (got {tier.up_to})")
            else:
                problems.append(
                    f"tiers must be strictly ascending: {label} up_to {tier.up_to} is not greater than {previous_label}"
                )
        else:
            previous, previous_label = up_to, f"{label} up_to {tier.up_to}"
    return problems


def validate_price(price: object) -> list[str]:
    """Human-readable problems with ``price``; an empty list when it is valid.

    Checks: amounts are finite ``Decimal``s (or ints, never floats) and not negative; tiers are not empty; every
    tier but the last has an ``up_to``, the last has ``up_to=None``; the bounds are strictly ascending and the
    first is greater than 0; ``quantity_per_package`` is greater than 0. Tiers are numbered from 1 in messages.
    """
    problems: list[str | None]
    if isinstance(price, FlatPrice):
        problems = [_non_negative_problem(price.amount, "flat amount")]
    elif isinstance(price, UnitPrice):
        problems = [_non_negative_problem(price.unit_amount, "unit_amount")]
    elif isinstance(price, GraduatedPrice | VolumePrice):
        problems = list(_tier_problems(price.tiers))
    elif isinstance(price, PackagePrice):
        problems = [_non_negative_problem(price.amount, "package amount")]
        problem = _number_problem(price.quantity_per_package, "quantity_per_package")
        if problem is None and Decimal(price.quantity_per_package) <= 0:
            problem = f"quantity_per_package must be greater than 0 (got {price.quantity_per_package})"
        problems.append(problem)
    else:
        problems = [f"unsupported price type {type(price).__name__}"]
    return [p for p in problems if p]


def _require_valid(price: object) -> None:
    problems = validate_price(price)
    if problems:
        raise PricingError(*problems)


def _quantity(value: object, what: str) -> Decimal:
    problem = _non_negative_problem(value, what)
    if problem:
        raise PricingError(problem)
    return Decimal(value)  # type: ignore[arg-type]  # checked above


# ----------------------------------------------------------------------------------------------------- calculation


@contextmanager
def _exact() -> Iterator[None]:
    """Arithmetic that is exact or fails: 60 digits, ``Inexact`` trapped."""
    ctx = decimal.Context(
        prec=_PRECISION,
        rounding=ROUND_HALF_UP,
        traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
    )
    try:
        with decimal.localcontext(ctx):
            yield
    except (decimal.Inexact, decimal.Overflow) as err:
        raise PricingError(f"amount cannot be computed exactly within {_PRECISION} significant digits") from err


def _graduated(tiers: tuple[Tier, ...], quantity: Decimal) -> tuple[Decimal, tuple[TierCharge, ...]]:
    charges: list[TierCharge] = []
    lower = _ZERO
    for index, tier in enumerate(tiers):
        upper = None if tier.up_to is None else Decimal(tier.up_to)
        top = quantity if upper is None else min(quantity, upper)
        in_tier = top - lower
        if in_tier > 0:
            unit, flat = Decimal(tier.unit_amount), Decimal(tier.flat_amount)
            charges.append(TierCharge(index, lower, upper, in_tier, unit, flat, in_tier * unit + flat))
        if upper is None or quantity <= upper:
            break
        lower = upper
    return sum((c.exact_amount for c in charges), _ZERO), tuple(charges)


def _volume(tiers: tuple[Tier, ...], quantity: Decimal) -> tuple[Decimal, tuple[TierCharge, ...]]:
    lower = _ZERO
    index, tier = len(tiers) - 1, tiers[-1]
    for i, candidate in enumerate(tiers):
        if candidate.up_to is None or quantity <= candidate.up_to:
            index, tier = i, candidate
            break
        lower = Decimal(candidate.up_to)
    unit, flat = Decimal(tier.unit_amount), Decimal(tier.flat_amount)
    upper = None if tier.up_to is None else Decimal(tier.up_to)
    exact = quantity * unit + flat
    return exact, (TierCharge(index, lower, upper, quantity, unit, flat, exact),)


def _packages(quantity: Decimal, per_package: Decimal) -> Decimal:
    """``ceil(quantity / per_package)``, exactly (``divmod`` gives an exact integer quotient and remainder)."""
    whole, remainder = divmod(quantity, per_package)
    return whole + 1 if remainder else whole


def _charge(price: Price, quantity: Decimal) -> tuple[Decimal, tuple[TierCharge, ...]]:
    """Exact charge of a VALID price for a non-negative quantity, inside ``_exact()``."""
    if isinstance(price, FlatPrice):
        return Decimal(price.amount), ()
    if quantity == 0:
        return _ZERO, ()
    if isinstance(price, UnitPrice):
        return quantity * Decimal(price.unit_amount), ()
    if isinstance(price, GraduatedPrice):
        return _graduated(price.tiers, quantity)
    if isinstance(price, VolumePrice):
        return _volume(price.tiers, quantity)
    if isinstance(price, PackagePrice):
        return Decimal(price.amount) * _packages(quantity, Decimal(price.quantity_per_package)), ()
    raise PricingError(f"unsupported price type {type(price).__name__}")  # pragma: no cover - validated before


def charge_for_quantity(price: Price, quantity: Decimal) -> tuple[Decimal, tuple[TierCharge, ...]]:
    """Exact major-unit charge of ``price`` for ``quantity`` and its tier breakdown: no rounding, no free quantity,
    no proration, no minimum/maximum spend.

    A ``FlatPrice`` returns its amount whatever the quantity; a usage price returns ``(Decimal(0), ())`` for a
    quantity of 0. Graduated prices return one ``TierCharge`` per tier that received a positive quantity, volume
    prices one for the containing tier, other prices none. Use it for late-usage deltas:
    ``charge_for_quantity(p, q_with)[0] - charge_for_quantity(p, q_without)[0]``.

    Raises ``PricingError`` for an invalid price or a negative (or non-``Decimal``) quantity.
    """
    _require_valid(price)
    q = _quantity(quantity, "quantity")
    with _exact():
        return _charge(price, q)


def _unit_price(price: Price) -> Decimal | None:
    if isinstance(price, UnitPrice):
        return Decimal(price.unit_amount)
    if isinstance(price, PackagePrice | FlatPrice):
        return Decimal(price.amount)
    return None


def price_rate_card(
    *,
    price: Price,
    quantity: Decimal,
    currency: str,
    free_quantity: Decimal = _ZERO,
    minimum_spend: Decimal | None = None,
    maximum_spend: Decimal | None = None,
    proration: Decimal = _ONE,
) -> RateCardCharge:
    """Price one rate card for one period and return its rounded lines.

    1. The main line: for a ``FlatPrice`` a ``"flat_fee"`` line of ``amount × proration`` (quantity =
       ``proration``; quantity and free quantity are ignored); for any other price a ``"usage"`` line for
       ``billable = max(0, quantity − free_quantity)``, tiers applying to the billable quantity from 0. A billable
       quantity of 0 charges nothing and has no tier charges. Proration never scales usage or tier bounds.
    2. The line's ``exact_amount`` is rounded ONCE, ``ROUND_HALF_UP``, to the currency's minor unit (from Babel).
    3. ``minimum_spend`` (prorated, then rounded to minor units): if the main line's rounded amount is below it, a
       ``"minimum_spend"`` line tops it up exactly to the minimum.
    4. ``maximum_spend`` (prorated, then rounded): if the main line's rounded amount is above it, a ``"discount"``
       line with the negative difference brings it down exactly to the maximum.
    5. ``total`` is the sum of the lines' rounded amounts.

    Raises ``UnknownCurrency`` for an unknown currency and ``PricingError`` for an invalid price, a negative
    quantity or free quantity, a proration outside [0, 1], a negative spend or ``minimum_spend > maximum_spend``.
    """
    minor_unit_exponent(currency)  # UnknownCurrency before anything else
    _require_valid(price)
    problems = [
        _non_negative_problem(quantity, "quantity"),
        _non_negative_problem(free_quantity, "free_quantity"),
        _non_negative_problem(proration, "proration"),
    ]
    if problems[-1] is None and Decimal(proration) > 1:
        problems.append(f"proration must be between 0 and 1 (got {proration})")
    if minimum_spend is not None:
        problems.append(_non_negative_problem(minimum_spend, "minimum_spend"))
    if maximum_spend is not None:
        problems.append(_non_negative_problem(maximum_spend, "maximum_spend"))
    reported = [p for p in problems if p]
    if reported:
        raise PricingError(*reported)
    if minimum_spend is not None and maximum_spend is not None and Decimal(minimum_spend) > Decimal(maximum_spend):
        raise PricingError(f"minimum_spend ({minimum_spend}) must not be greater than maximum_spend ({maximum_spend})")

    q, free, p = Decimal(quantity), Decimal(free_quantity), Decimal(proration)
    with _exact():
        if isinstance(price, FlatPrice):
            exact = Decimal(price.amount) * p
            main = PriceLine(LINE_FLAT_FEE, p, _unit_price(price), exact, to_minor(exact, currency))
        else:
            billable = max(q - free, _ZERO)
            exact, tiers = _charge(price, billable)
            main = PriceLine(
                LINE_USAGE, billable, _unit_price(price), exact, to_minor(exact, currency), tiers, min(q, free)
            )
        lines = [main]
        if minimum_spend is not None:
            floor = to_minor(Decimal(minimum_spend) * p, currency)
            if main.amount < floor:
                top_up = floor - main.amount
                lines.append(PriceLine(LINE_MINIMUM_SPEND, _ONE, None, to_major(top_up, currency), top_up))
        if maximum_spend is not None:
            cap = to_minor(Decimal(maximum_spend) * p, currency)
            if main.amount > cap:
                discount = cap - main.amount
                lines.append(PriceLine(LINE_DISCOUNT, _ONE, None, to_major(discount, currency), discount))
    return RateCardCharge(lines=tuple(lines), total=sum(line.amount for line in lines))
