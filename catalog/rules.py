"""Catalog rules as pure functions (no database): keys, cadences, and what makes a rate card complete."""

from __future__ import annotations

import re
from decimal import Decimal

from dateutil.relativedelta import relativedelta

from .dimensional import DimensionalPrice, validate_dimensional
from .models import Plan, RateCard
from .money import is_known_currency, minor_unit_exponent, normalize_currency
from .pricing import (
    FlatPrice,
    GraduatedPrice,
    PackagePrice,
    Price,
    Tier,
    UnitPrice,
    VolumePrice,
    validate_price,
)

KEY_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")
KEY_HELP = "lowercase letters and digits, words joined by - or _ (e.g. ai-token)"
PriceType = RateCard.PriceType
EntitlementType = RateCard.EntitlementType
PaymentTerm = RateCard.PaymentTerm
Cadence = Plan.Cadence

CADENCES: dict[str, relativedelta] = {
    Cadence.DAILY: relativedelta(days=1),
    Cadence.WEEKLY: relativedelta(weeks=1),
    Cadence.MONTHLY: relativedelta(months=1),
    Cadence.QUARTERLY: relativedelta(months=3),
    Cadence.YEARLY: relativedelta(years=1),
}
# Plain strings (the choices' values), as the stored fields and the catalog files hold them.
PRICE_TYPES = frozenset(PriceType.values) - {PriceType.NONE.value}
ROW_PRICE_TYPES = frozenset({"unit", "graduated", "volume", "package"})  # what a dimensional row may use
USAGE_PRICES = PRICE_TYPES - {PriceType.FLAT.value}
ENTITLEMENT_TYPES = frozenset(EntitlementType.values) - {EntitlementType.NONE.value}
PAYMENT_TERMS = frozenset(PaymentTerm.values)
# Which fields each price type and entitlement type uses (the rate card form shows only these and refuses values
# in the others). ``tiers`` is the tier table; free quantity applies to usage prices, the spend limits to any price.
PRICE_FIELDS: dict[str, tuple[str, ...]] = {
    PriceType.NONE.value: (),
    PriceType.FLAT.value: ("amount", "payment_term", "minimum_spend", "maximum_spend"),
    PriceType.UNIT.value: ("unit_amount", "free_quantity", "minimum_spend", "maximum_spend"),
    PriceType.GRADUATED.value: ("tiers", "free_quantity", "minimum_spend", "maximum_spend"),
    PriceType.VOLUME.value: ("tiers", "free_quantity", "minimum_spend", "maximum_spend"),
    PriceType.PACKAGE.value: ("amount", "quantity_per_package", "free_quantity", "minimum_spend", "maximum_spend"),
    # A dimensional price's table of rows is edited on the rate card's own page (catalog/admin/rate_cards.py).
    PriceType.DIMENSIONAL.value: ("dimensions", "free_quantity", "minimum_spend", "maximum_spend"),
}
ENTITLEMENT_FIELDS: dict[str, tuple[str, ...]] = {
    EntitlementType.NONE.value: (),
    EntitlementType.BOOLEAN.value: (),
    EntitlementType.STATIC.value: ("entitlement_config",),
    EntitlementType.METERED.value: ("entitlement_limit", "entitlement_soft", "entitlement_usage_period",
                                     "entitlement_credits"),
}
CREDIT_MODES = sorted(set(RateCard.CreditMode.values) - {""})


def cadence_delta(cadence: str) -> relativedelta:
    """The length of one billing period; periods are anchor + n × delta (never chained)."""
    try:
        return CADENCES[cadence]
    except KeyError:
        raise ValueError(f"billing cadence must be one of {', '.join(CADENCES)}, not {cadence!r}") from None


def key_problem(key: object, what: str = "key") -> str | None:
    if not isinstance(key, str) or not KEY_RE.match(key):
        return f"{what} must be {KEY_HELP}"
    if len(key) > 64:
        return f"{what} must be at most 64 characters"
    return None


def currency_problem(currency: object) -> str | None:
    """The problem with a currency code as stored (upper-case ISO 4217); services first read what a person typed
    with :func:`clean_currency`, so ``usd`` is stored as ``USD`` and ``XYZ`` is refused on save."""
    if not is_known_currency(currency):
        return f"currency {currency!r} is not a known ISO 4217 code (e.g. USD, EUR, JPY)"
    return None


def clean_currency(currency: object) -> object:
    """What a person typed as a currency, normalised when it is a known code (``"usd"`` → ``"USD"``); anything
    else comes back unchanged, for :func:`currency_problem` to name."""
    return normalize_currency(currency) or currency


def feature_filter_problems(filters: object, meter_group_by: dict | None) -> list[str]:
    """Filters are equality on one or more of the meter's group-by names."""
    if filters in (None, {}):
        return []
    if meter_group_by is None:
        return ["group-by filters need a meter"]
    if not isinstance(filters, dict):
        return ['filters must be an object of group-by name → value, e.g. {"provider": "openai"}']
    problems = []
    for name, value in filters.items():
        if name not in meter_group_by:
            known = ", ".join(sorted(meter_group_by)) or "none"
            problems.append(f'"{name}" is not a group-by of the meter (known: {known})')
        elif not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            problems.append(f'the filter value of "{name}" must be a non-empty string')
    return problems


def row_tiers(tiers: object) -> list[tuple[Decimal | None, Decimal, Decimal]]:
    """A price row's stored tiers (``[{"up_to", "unit_amount", "flat_amount"}]``, numbers as strings) as
    :func:`engine_price` takes them. Raises ``ValueError`` for anything else."""
    if not isinstance(tiers, list):
        raise ValueError("tiers must be a list")
    out = []
    for tier in tiers:
        if not isinstance(tier, dict):
            raise ValueError("each tier must be an object with up_to, unit_amount, flat_amount")
        up_to = tier.get("up_to")
        try:
            out.append((None if up_to is None else Decimal(str(up_to)), Decimal(str(tier.get("unit_amount", "0"))),
                        Decimal(str(tier.get("flat_amount", "0")))))
        except ArithmeticError:
            raise ValueError(f"tier numbers must be decimals, not {tier!r}") from None
    return out


def tiers_json(tiers: list[tuple[Decimal | None, Decimal, Decimal]]) -> list[dict[str, str | None]]:
    return [{"up_to": None if up_to is None else format(up_to, "f"), "unit_amount": format(unit, "f"),
             "flat_amount": format(flat, "f")} for up_to, unit, flat in tiers]


def engine_price(
    price_type: str,
    *,
    amount: Decimal | None = None,
    unit_amount: Decimal | None = None,
    quantity_per_package: Decimal | None = None,
    tiers: list[tuple[Decimal | None, Decimal, Decimal]] | None = None,
) -> Price | None:
    """The pricing engine's price for stored fields (None for an entitlement-only rate card)."""
    if not price_type:
        return None
    if price_type == PriceType.FLAT:
        return FlatPrice(amount)  # type: ignore[arg-type]
    if price_type == PriceType.UNIT:
        return UnitPrice(unit_amount)  # type: ignore[arg-type]
    if price_type == PriceType.PACKAGE:
        return PackagePrice(amount, quantity_per_package)  # type: ignore[arg-type]
    tier_objects = tuple(Tier(up_to, unit, flat) for up_to, unit, flat in (tiers or []))
    if price_type == PriceType.GRADUATED:
        return GraduatedPrice(tier_objects)
    if price_type == PriceType.VOLUME:
        return VolumePrice(tier_objects)
    if price_type == PriceType.DIMENSIONAL:
        raise ValueError("a dimensional price is built from its rows (catalog.charges.dimensional_price)")
    raise ValueError(f"unknown price type {price_type!r}")


def rate_card_problems(
    *,
    key: str,
    price_type: str,
    price: Price | DimensionalPrice | None,
    has_feature: bool,
    feature_metered: bool,
    payment_term: str,
    minimum_spend: Decimal | None,
    maximum_spend: Decimal | None,
    free_quantity: Decimal | None,
    entitlement_type: str,
    entitlement_limit: Decimal | None,
    entitlement_config,
) -> list[str]:
    """Everything that keeps a rate card from being published, as sentences naming the rate card."""
    problems: list[str] = []
    prefix = f"rate card {key}: "
    if price_type and price_type not in PRICE_TYPES:
        problems.append(f"{prefix}unknown price type {price_type!r}")
    if isinstance(price, DimensionalPrice):
        problems.extend(prefix + p for p in validate_dimensional(price))
        if not price.rows:
            problems.append(prefix + "a dimensional price needs at least one row or a default")
    elif price is not None:
        fields = (
            ("amount", getattr(price, "amount", 0)),
            ("unit amount", getattr(price, "unit_amount", 0)),
            ("quantity per package", getattr(price, "quantity_per_package", 1)),
        )
        missing = [name for name, value in fields if value is None]
        if missing:
            problems.append(prefix + f"the {price_type} price needs {', '.join(missing)}")
        else:
            problems.extend(prefix + p for p in validate_price(price))
    if price_type in USAGE_PRICES and not feature_metered:
        problems.append(prefix + "a usage-based price needs a feature with a meter")
    if payment_term not in PAYMENT_TERMS:
        problems.append(prefix + f"payment term must be {' or '.join(PaymentTerm.values)}")
    if payment_term == PaymentTerm.IN_ADVANCE and price_type in USAGE_PRICES:
        problems.append(prefix + "usage can only be billed in arrears")
    for name, value in (
        ("minimum spend", minimum_spend),
        ("maximum spend", maximum_spend),
        ("free quantity", free_quantity),
    ):
        if value is not None and value < 0:
            problems.append(prefix + f"{name} must not be negative")
    if (minimum_spend is not None or maximum_spend is not None or free_quantity is not None) and not price_type:
        problems.append(prefix + "minimum/maximum spend and free quantity need a price")
    if free_quantity is not None and price_type == PriceType.FLAT:
        problems.append(prefix + "free quantity applies to usage-based prices only")
    if minimum_spend is not None and maximum_spend is not None and minimum_spend > maximum_spend:
        problems.append(prefix + "minimum spend must not exceed maximum spend")
    if entitlement_type and entitlement_type not in ENTITLEMENT_TYPES:
        problems.append(prefix + f"unknown entitlement type {entitlement_type!r}")
    if entitlement_type and not has_feature:
        problems.append(prefix + "an entitlement needs a feature")
    if entitlement_type == EntitlementType.METERED:
        if not feature_metered:
            problems.append(prefix + "a metered entitlement needs a feature with a meter")
        if entitlement_limit is None or entitlement_limit < 0:
            problems.append(prefix + "a metered entitlement needs a limit ≥ 0")
    if entitlement_type == EntitlementType.STATIC and entitlement_config is None:
        problems.append(prefix + "a static entitlement needs a JSON config")
    if not price_type and not entitlement_type:
        problems.append(prefix + "needs a price, an entitlement, or both")
    return problems


CREDIT_GRANT_FIELDS = ("amount", "every", "expires_after", "priority")


def credit_grant_problems(value: object, currency: str) -> list[str]:
    """A recurring credit grant on a rate card: ``{"amount": "10.00", "every": "P1M", "expires_after": "P1M",
    "priority": 10}`` (amount in major units of the plan's currency, more than zero and exact in its minor unit;
    ``every`` and ``expires_after`` cadences; priority a whole number from 0)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        return ["credit_grant must be a mapping with amount, every, expires_after and priority"]
    problems = [f"credit_grant: unknown field {name!r}" for name in value if name not in CREDIT_GRANT_FIELDS]
    amount = value.get("amount")
    try:
        decimal_amount = Decimal(str(amount)) if isinstance(amount, str | int | Decimal) and not isinstance(
            amount, bool) else None
    except ArithmeticError:
        decimal_amount = None
    if decimal_amount is None or not decimal_amount.is_finite() or decimal_amount <= 0:
        problems.append("credit_grant: amount must be a decimal more than zero, e.g. \"10.00\"")
    elif decimal_amount >= Decimal(10) ** 15:  # before the precision check: quantizing 1e400 raises
        problems.append("credit_grant: amount is too large")
    elif is_known_currency(currency) and decimal_amount != decimal_amount.quantize(
            Decimal(1).scaleb(-minor_unit_exponent(currency))):
        problems.append(f"credit_grant: amount has more decimals than {currency} has")
    if value.get("every", "P1M") not in CADENCES:
        problems.append(f"credit_grant: every must be one of {', '.join(CADENCES)}")
    expires_after = value.get("expires_after")
    if expires_after is not None and expires_after not in CADENCES:
        problems.append(f"credit_grant: expires_after must be one of {', '.join(CADENCES)} or empty")
    priority = value.get("priority", 100)
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 2**31 - 1:
        problems.append("credit_grant: priority must be a whole number from 0")
    return problems


def credit_problems(*, key: str, entitlement_type: str, entitlement_credits: str, credit_grant: object,
                    currency: str) -> list[str]:
    """Credits on a rate card: a credit mode needs a metered entitlement; a recurring grant must be well formed."""
    prefix = f"rate card {key}: "
    problems: list[str] = []
    if entitlement_credits and entitlement_credits not in RateCard.CreditMode.values:
        problems.append(prefix + f"unknown credit mode {entitlement_credits!r}")
    elif entitlement_credits and entitlement_type != EntitlementType.METERED:
        problems.append(prefix + "credit_only and credit_then_invoice need a metered entitlement")
    return problems + [prefix + p for p in credit_grant_problems(credit_grant, currency)]
