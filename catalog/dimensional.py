"""Dimensional prices: a rate card's price as a table keyed by some of its meter's group-by values (pure functions).

A ``DimensionalPrice`` prices the usage of one feature split by ``dimensions`` (e.g. ``model`` and ``type``). Each
row has a ``match`` on some of those dimensions (a dimension left out matches any value) and a usage price (unit,
graduated, volume, package) applied to the quantity the row matched. Rules:

* **Most specific row wins**: of the rows whose ``match`` equals the usage's values on every dimension it names,
  the one naming the most dimensions wins; among equally specific rows, the first listed. A ``default`` row prices
  what no row matches; usage neither matches nor a default prices is **unpriced** (returned, never billed).
* **Effective dates**: a row may carry ``effective_from`` (UTC). A row version replaces the earlier versions of the
  same ``match`` (or the earlier default) from that instant; before its ``effective_from`` a row does not exist.
  A period is cut into *segments* at every ``effective_from`` inside it; usage of each segment is priced by the
  rows in effect then, and a row version is one line (its *part*) for the whole stretch of the period it covers.
* **Whole-rate-card rules**: the free quantity is used up by the lines in their order (rows as listed, then by
  effective date); minimum and maximum spend compare the sum of the rounded row lines with the (prorated) bounds
  and add one ``minimum_spend`` or ``discount`` line for the rate card as a whole (its part is ``""``).
* Each row line is rounded once, ``ROUND_HALF_UP``, by :func:`catalog.pricing.price_rate_card`.

A line's ``part`` names the row version it bills (``model=gpt-4o,type=request``, ``*`` for the default, with
``@<effective_from>`` for a scheduled version): invoices store it, and re-rating compares rated and billed
amounts per part.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache

from .money import minor_unit_exponent, to_major, to_minor
from .pricing import (
    LINE_DISCOUNT,
    LINE_MINIMUM_SPEND,
    FlatPrice,
    Price,
    PriceLine,
    PricingError,
    RateCardCharge,
    price_rate_card,
    validate_price,
)

__all__ = [
    "DEFAULT_PART",
    "DimensionRow",
    "DimensionalPrice",
    "UnpricedUsage",
    "UsageGroup",
    "effective_segments",
    "price_dimensional",
    "resolve_row",
    "rows_in_effect",
    "validate_dimensional",
]

DEFAULT_PART = "*"
Values = tuple[tuple[str, str | None], ...]  # (dimension, value) in the table's dimension order


@dataclass(frozen=True)
class DimensionRow:
    """One row: ``match`` as sorted ``(dimension, value)`` pairs, a usage price, and when it takes effect."""

    match: tuple[tuple[str, str], ...]
    price: Price
    effective_from: dt.datetime | None = None
    is_default: bool = False

    @property
    def identity(self) -> str:
        """The row across its versions: its match (``*`` for the default)."""
        if self.is_default:
            return DEFAULT_PART
        return ",".join(f"{name}={value}" for name, value in self.match)

    @property
    def part(self) -> str:
        """The row version: what one invoice line bills and re-rating compares."""
        if self.effective_from is None:
            return self.identity
        return f"{self.identity}@{self.effective_from.astimezone(dt.UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"

    def matches(self, values: dict[str, str | None]) -> bool:
        return all(values.get(name) == value for name, value in self.match)


@dataclass(frozen=True)
class DimensionalPrice:
    dimensions: tuple[str, ...]
    rows: tuple[DimensionRow, ...]


@dataclass(frozen=True)
class UsageGroup:
    """Usage of one combination of dimension values in ``[start, end)`` (one effective segment)."""

    start: dt.datetime
    end: dt.datetime
    values: Values
    quantity: Decimal


@dataclass(frozen=True)
class UnpricedUsage:
    """Usage no row (and no default) prices: never billed, always shown."""

    values: Values
    quantity: Decimal

    @property
    def label(self) -> str:
        shown = [f"{name}={value if value is not None else '(none)'}" for name, value in self.values]
        return "no price for " + (", ".join(shown) or "this usage")


def validate_dimensional(price: object) -> list[str]:
    """Problems of a dimensional price: dimensions named once, rows matching only those dimensions with non-empty
    values, usage prices only, at most one default per effective date, no two versions of a row on one date."""
    if not isinstance(price, DimensionalPrice):
        return [f"unsupported price type {type(price).__name__}"]
    problems: list[str] = []
    if not price.dimensions:
        problems.append("a dimensional price needs at least one dimension")
    if len(set(price.dimensions)) != len(price.dimensions):
        problems.append("dimensions must be listed once each")
    seen: set[tuple[str, dt.datetime | None]] = set()
    for index, row in enumerate(price.rows, start=1):
        label = "the default" if row.is_default else f"row {index}"
        if row.is_default and row.match:
            problems.append(f"{label} must not have a match")
        for name, value in row.match:
            if name not in price.dimensions:
                problems.append(f'{label}: "{name}" is not one of the dimensions ({", ".join(price.dimensions)})')
            if not isinstance(value, str) or value == "":
                problems.append(f'{label}: the value of "{name}" must be a non-empty string')
        if isinstance(row.price, FlatPrice):
            problems.append(f"{label}: a row's price must be a usage price (unit, graduated, volume or package)")
        else:
            problems.extend(f"{label}: {problem}" for problem in validate_price(row.price))
        if row.effective_from is not None and row.effective_from.utcoffset() is None:
            problems.append(f"{label}: effective_from must be an aware UTC time")
        key = (row.part, row.effective_from)
        if key in seen:
            problems.append(f"{label}: {row.identity} is listed twice for the same effective date")
        seen.add(key)
    return problems


@lru_cache(maxsize=256)
def _table_problems(price: DimensionalPrice) -> tuple[str, ...]:
    """Validation of a table, once per table (a close prices the same few tables for every customer)."""
    return tuple(validate_dimensional(price))


def _require_valid(price: DimensionalPrice) -> None:
    try:
        problems = _table_problems(price)
    except TypeError:  # an unhashable (hence invalid) value somewhere in the table
        problems = tuple(validate_dimensional(price))
    if problems:
        raise PricingError(*problems)


def rows_in_effect(price: DimensionalPrice, at: dt.datetime) -> list[tuple[int, DimensionRow]]:
    """The row versions in effect at ``at``, with the listed position of each row's first version (its rank
    among equally specific rows)."""
    first_position: dict[str, int] = {}
    current: dict[str, DimensionRow] = {}
    for position, row in enumerate(price.rows):
        first_position.setdefault(row.identity, position)
        if row.effective_from is not None and row.effective_from > at:
            continue
        held = current.get(row.identity)
        if held is None or (held.effective_from or dt.datetime.min.replace(tzinfo=dt.UTC)) <= (
                row.effective_from or dt.datetime.min.replace(tzinfo=dt.UTC)):
            current[row.identity] = row
    return sorted(((first_position[identity], row) for identity, row in current.items()), key=lambda pair: pair[0])


def resolve_row(rows: Sequence[tuple[int, DimensionRow]], values: dict[str, str | None]) -> DimensionRow | None:
    """The row pricing usage with these values: the most specific match, then the first listed; else the
    default; else None (unpriced)."""
    best: tuple[int, int, DimensionRow] | None = None
    default = None
    for position, row in rows:
        if row.is_default:
            default = row
            continue
        if row.matches(values):
            rank = (-len(row.match), position)
            if best is None or rank < best[:2]:
                best = (*rank, row)
    return best[2] if best is not None else default


def effective_segments(price: DimensionalPrice, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime,
                                                                                                     dt.datetime]]:
    """``[start, end)`` cut at every ``effective_from`` strictly inside it (one segment when nothing changes)."""
    cuts = sorted({row.effective_from for row in price.rows
                   if row.effective_from is not None and start < row.effective_from < end})
    bounds = [start, *cuts, end]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if a < b] or [(start, end)]


def segment_usage_groups(
    price: DimensionalPrice, start: dt.datetime, end: dt.datetime,
    read: Callable[[dt.datetime, dt.datetime], dict[tuple[str | None, ...], Decimal]],
) -> list[UsageGroup]:
    """A dimensional price's usage in ``[start, end)`` as :func:`price_dimensional` takes it: one ``read(a, b)`` per
    effective segment, each returning the usage by the table's dimension values (in the order of
    ``price.dimensions``), sorted by those values."""
    if end <= start:
        return []
    groups = []
    for segment_start, segment_end in effective_segments(price, start, end):
        usage = read(segment_start, segment_end)
        for values, quantity in sorted(usage.items(), key=lambda kv: [v or "" for v in kv[0]]):
            groups.append(UsageGroup(segment_start, segment_end, tuple(zip(price.dimensions, values, strict=True)),
                                     quantity))
    return groups


@dataclass
class _Part:
    row: DimensionRow
    order: tuple[int, dt.datetime]
    quantity: Decimal
    start: dt.datetime
    end: dt.datetime


def price_dimensional(
    *,
    price: DimensionalPrice,
    usage: Sequence[UsageGroup],
    currency: str,
    free_quantity: Decimal = Decimal(0),
    minimum_spend: Decimal | None = None,
    maximum_spend: Decimal | None = None,
    proration: Decimal = Decimal(1),
) -> RateCardCharge:
    """Price grouped usage with a dimensional table: one ``usage`` line per row version that matched usage (its
    ``part``, ``dimensions`` and effective range set), then a ``minimum_spend`` or ``discount`` line for the whole
    rate card; ``unpriced`` lists what nothing priced. ``total`` is the sum of the rounded lines."""
    minor_unit_exponent(currency)
    _require_valid(price)
    checks = price_rate_card(price=FlatPrice(Decimal(0)), quantity=Decimal(0), currency=currency,
                             free_quantity=free_quantity, minimum_spend=minimum_spend, maximum_spend=maximum_spend,
                             proration=proration)  # validates the whole-card numbers the same way
    del checks
    parts: dict[str, _Part] = {}
    unpriced: dict[Values, Decimal] = {}
    never = dt.datetime.min.replace(tzinfo=dt.UTC)
    in_effect_cache: dict[dt.datetime, list[tuple[int, DimensionRow]]] = {}
    for group in usage:
        if isinstance(group.quantity, bool) or not isinstance(group.quantity, Decimal | int) or group.quantity < 0:
            raise PricingError(f"usage quantity must be a non-negative Decimal (got {group.quantity!r})")
        if group.quantity == 0:
            continue
        rows = in_effect_cache.get(group.start)
        if rows is None:
            rows = in_effect_cache[group.start] = rows_in_effect(price, group.start)
        row = resolve_row(rows, dict(group.values))
        if row is None:
            unpriced[group.values] = unpriced.get(group.values, Decimal(0)) + Decimal(group.quantity)
            continue
        position = next(p for p, r in rows if r is row)
        entry = parts.get(row.part)
        if entry is None:
            parts[row.part] = _Part(row, (position, row.effective_from or never), Decimal(group.quantity),
                                    group.start, group.end)
        else:
            entry.quantity += Decimal(group.quantity)
            entry.start, entry.end = min(entry.start, group.start), max(entry.end, group.end)
    remaining_free = Decimal(free_quantity)
    lines: list[PriceLine] = []
    for entry in sorted(parts.values(), key=lambda e: (e.order[0], e.order[1], e.row.part)):
        free = min(remaining_free, entry.quantity)
        remaining_free -= free
        charge = price_rate_card(price=entry.row.price, quantity=entry.quantity, currency=currency,
                                 free_quantity=free)
        lines.append(replace(charge.lines[0], part=entry.row.part, dimensions=entry.row.match,
                             effective=(entry.start, entry.end), rated_quantity=entry.quantity))
    subtotal = sum(line.amount for line in lines)
    p = Decimal(proration)
    if minimum_spend is not None:
        floor = to_minor(Decimal(minimum_spend) * p, currency)
        if subtotal < floor:
            top_up = floor - subtotal
            lines.append(PriceLine(LINE_MINIMUM_SPEND, Decimal(1), None, to_major(top_up, currency), top_up))
    if maximum_spend is not None:
        cap = to_minor(Decimal(maximum_spend) * p, currency)
        if subtotal > cap:
            discount = cap - subtotal
            lines.append(PriceLine(LINE_DISCOUNT, Decimal(1), None, to_major(discount, currency), discount))
    return RateCardCharge(lines=tuple(lines), total=sum(line.amount for line in lines),
                          unpriced=tuple(UnpricedUsage(values, quantity) for values, quantity in sorted(
                              unpriced.items(), key=lambda kv: [(k, v or "") for k, v in kv[0]])))
