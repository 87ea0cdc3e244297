"""Catalog as code: meters, features and plans of a ``billing_apply`` file (parse, validate, diff, apply, dump).

The file's format and the whole-file orchestration (customers, subscriptions, one transaction, dry run) are in
``customers.services.apply``; this module holds the catalog part and the machinery both parts share:

* :class:`Problems` collects every problem of a file as ``FILE: ENTRY.FIELD: message`` lines, e.g.
  ``catalog.yaml: plans[0] (token) rate_cards[2] (ai-quota).entitlement.limit: must be a decimal number``.
* ``*_parse`` functions check shapes and types (no database); ``catalog_validate`` checks references and the
  rules of the services (reads only); ``catalog_apply`` compares each entry with the database and calls the
  services, appending one line per change. Nothing here opens a transaction: the caller wraps everything.

Semantics (what "apply" means for each kind):

* Meters by ``slug``, features by ``key``: created when missing; otherwise only differing fields change
  (meter changes go through ``meter_update``, which rebuilds rollups when the definition changes). A meter's
  ``description`` left out of the entry is left as it is; every other field is the definition (absent = empty).
* Plans by ``key``: the entry is a complete version (name, description, currency, cadence, rate cards in
  order). Equal to the published version → nothing. Different → a new version, published unless
  ``status: draft`` (publishing archives the previous version; its subscriptions keep it). An existing draft is
  updated in place instead (and published unless ``status: draft``). Decimals compare as numbers.
* Nothing is ever deleted: meters, features and plans missing from the file are left alone.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from metering.meter_rules import AGGREGATIONS, validate_meter
from metering.models import Meter
from metering.services.meters import MeterFrozen, MeterValidationError, meter_create, meter_update

from ..models import Feature, Plan, RateCard
from ..rules import (
    CADENCES,
    ENTITLEMENT_TYPES,
    PAYMENT_TERMS,
    PRICE_TYPES,
    clean_currency,
    currency_problem,
    engine_price,
    key_problem,
    rate_card_problems,
)
from ..serializers import decimal_text, rate_card_json
from .features import FeatureError, feature_create, feature_problems, feature_update
from .plans import (
    PlanError,
    RateCardSpec,
    TierSpec,
    plan_create,
    plan_publish,
    plan_replace_rate_cards,
    plan_update_draft,
    rate_card_spec,
)

MISSING: Any = object()  # a field left out of an entry (different from an explicit null)

# PreciseDecimalField is numeric(38, 15): a value with more decimals would be rounded by the database and then
# differ from the file on every apply, so it is refused instead.
DECIMAL_PLACES = 15
DECIMAL_INTEGER_DIGITS = 38 - 15

METER_FIELDS = ("slug", "name", "description", "event_type", "aggregation", "value_property", "group_by")
FEATURE_FIELDS = ("key", "name", "meter", "filters")
PLAN_FIELDS = ("key", "name", "description", "currency", "billing_cadence", "status", "rate_cards")
PLAN_STATUSES = ("published", "draft")
IN_ARREARS = str(RateCard.PaymentTerm.IN_ARREARS.value)
RATE_CARD_FIELDS = (
    "key", "name", "feature", "price", "payment_term", "free_quantity", "minimum_spend", "maximum_spend",
    "entitlement",
)
PRICE_FIELDS = {
    "flat": ("type", "amount"),
    "unit": ("type", "unit_amount"),
    "graduated": ("type", "tiers"),
    "volume": ("type", "tiers"),
    "package": ("type", "amount", "quantity_per_package"),
}
TIER_FIELDS = ("up_to", "unit_amount", "flat_amount")
ENTITLEMENT_FIELDS = {
    "boolean": ("type",),
    "static": ("type", "config"),
    "metered": ("type", "limit", "soft", "usage_period"),
}


# ------------------------------------------------------------------------------------------ problems and readers


class ApplyError(ValueError):
    """The file cannot be applied; ``problems`` are complete lines naming the file, the entry and the field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class Problems:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{self.filename}: {where}: {message}" if where else f"{self.filename}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            raise ApplyError(list(self.items))


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dt.datetime | dt.date):
        return "a date"
    return type(value).__name__


def entry_label(kind: str, index: int, data: Any, key_field: str) -> str:
    """``plans[0] (token)``: the entry's position and, when readable, its key."""
    key = data.get(key_field) if isinstance(data, dict) else None
    return f"{kind}[{index}] ({key})" if isinstance(key, str) and key else f"{kind}[{index}]"


def to_decimal(value: Any) -> Decimal:
    """A YAML string or number as an exact Decimal (numbers via ``str``); ValueError with the reason."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be a decimal number, not {type_name(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite decimal number")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"must be a decimal number, not {value!r}") from None
    if not number.is_finite():
        raise ValueError("must be a finite decimal number")
    normal = number.normalize()
    if normal != 0 and -normal.as_tuple().exponent > DECIMAL_PLACES:  # type: ignore[operator]
        raise ValueError(f"must have at most {DECIMAL_PLACES} decimal places (got {decimal_text(number)})")
    if normal != 0 and normal.adjusted() >= DECIMAL_INTEGER_DIGITS:
        raise ValueError(f"must be less than 10^{DECIMAL_INTEGER_DIGITS}")
    return number


def is_json(value: Any) -> bool:
    if value is None or isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(is_json(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_json(v) for k, v in value.items())
    return False


class Reader:
    """Typed fields of one mapping of the file; every problem is recorded with the field's location."""

    def __init__(self, problems: Problems, where: str, data: Any, known: Iterable[str]) -> None:
        self.problems, self.where, self.ok = problems, where, True
        known = tuple(known)
        if not isinstance(data, dict):
            self.fail("", f"must be a mapping of fields, not {type_name(data)}")
            data = {}
        self.data: dict = data
        for name in data:
            if name not in known:
                self.fail(str(name), f"unknown field (known: {', '.join(known)})")

    def at(self, name: str) -> str:
        if not name:
            return self.where
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, message: str) -> None:
        self.ok = False
        self.problems.add(self.at(name), message)

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str, default: Any = MISSING) -> Any:
        return self.data.get(name, default)

    def _present(self, name: str, required: bool) -> bool:
        if name not in self.data or (required and self.data[name] is None):
            if required:
                self.fail(name, "is required")
            return False
        return True

    def text(self, name: str, *, required: bool = False, default: Any = MISSING, nullable: bool = False,
             choices: Iterable[str] | None = None, strip: bool = True, max_length: int | None = None) -> Any:
        """A string; absent → ``default``; null → None when ``nullable``, else ``""`` (clears the field)."""
        if not self._present(name, required):
            return default
        value = self.data[name]
        if value is None:
            return None if nullable else ""
        if not isinstance(value, str):
            hint = " (put it in quotes)" if isinstance(value, bool | int | float | dt.date) else ""
            self.fail(name, f"must be a string, not {type_name(value)}{hint}")
            return default
        value = value.strip() if strip else value
        if required and not value:
            self.fail(name, "must not be empty")
        elif choices is not None and value not in tuple(choices):
            self.fail(name, f"must be one of {', '.join(choices)}, not {value!r}")
        elif max_length is not None and len(value) > max_length:
            self.fail(name, f"must be at most {max_length} characters")
        return value

    def decimal(self, name: str, *, required: bool = False) -> Decimal | None:
        if not self._present(name, required) or self.data[name] is None:
            return None
        try:
            return to_decimal(self.data[name])
        except ValueError as exc:
            self.fail(name, str(exc))
            return None

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self.data.get(name, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, not {type_name(value)}")
            return default
        return value

    def integer(self, name: str) -> Any:
        """A whole number ≥ 0; absent → MISSING; null → None."""
        value = self.data.get(name, MISSING)
        if value is MISSING or value is None:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(name, f"must be a whole number ≥ 0, not {value!r}")
            return MISSING
        return value

    def mapping(self, name: str, *, json_only: bool = False) -> Any:
        """A mapping; absent → MISSING; null → None."""
        value = self.data.get(name, MISSING)
        if value is MISSING or value is None:
            return value
        if not isinstance(value, dict):
            self.fail(name, f"must be a mapping, not {type_name(value)}")
            return MISSING
        if json_only and not is_json(value):
            self.fail(name, "must hold only JSON values (strings, numbers, booleans, null, lists, mappings)")
            return MISSING
        return value

    def items(self, name: str, *, required: bool = False) -> list | None:
        """A list; absent or null → None (or a problem when required)."""
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(name, "is required")
            return None
        if not isinstance(value, list):
            self.fail(name, f"must be a list, not {type_name(value)}")
            return None
        return value

    def datetime(self, name: str, *, required: bool = False) -> dt.datetime | None:
        if not self._present(name, required) or self.data[name] is None:
            return None
        value = self.data[name]
        try:
            return parse_datetime(value)
        except ValueError as exc:
            self.fail(name, str(exc))
            return None


def parse_datetime(value: Any) -> dt.datetime:
    """RFC 3339 with an offset (a YAML timestamp or a string), in UTC."""
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"must be an RFC 3339 date-time such as 2026-10-01T00:00:00Z, not {value!r}") from None
    elif isinstance(value, dt.datetime):
        parsed = value
    else:
        raise ValueError(f"must be an RFC 3339 date-time such as 2026-10-01T00:00:00Z, not {type_name(value)}")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("needs a time zone offset (e.g. 2026-10-01T00:00:00Z)")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError("is out of range (years 1 to 9999 in UTC)") from None


def show(value: Any) -> str:
    """A value in a diff line, YAML-flow-like: ``0.00002``, ``null``, ``{provider: openai}``, ``"AI Tokens"``."""
    if value is None or value is MISSING:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return decimal_text(value) or "null"
    if isinstance(value, str):
        plain = value and all(c.isalnum() or c in "-_.:$/@+" for c in value)
        return value if plain else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):  # sorted: PostgreSQL's jsonb does not keep the order of keys
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(show(v) for v in value) + "]"
    return str(value)


def diff_values(old: Any, new: Any, path: str = "") -> list[str]:
    """``path old -> new`` for each differing leaf (mappings and same-length lists are compared inside)."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in [*old, *(k for k in new if k not in old)]:
            sub = f"{path}.{key}" if path else str(key)
            changes += diff_values(old.get(key), new.get(key), sub)
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new, strict=True)) for c in diff_values(a, b, f"{path}[{i}]")]
    if old == new and (isinstance(old, bool) == isinstance(new, bool)):
        return []  # numbers compare as numbers (Decimal 49.00 == 49), but true is not 1
    return [f"{path} {show(old)} -> {show(new)}"]


def service_problems(problems: Problems, where: str, exc: Exception) -> ApplyError:
    """A service's refusal during apply, as an ApplyError naming the entry (and the field when known)."""
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict) and errors:
        for name, message in errors.items():
            problems.add(f"{where}.{name}", message)
    else:
        problems.add(where, str(exc))
    return ApplyError(list(problems.items))


# --------------------------------------------------------------------------------------------------- the entries


@dataclass
class MeterEntry:
    where: str
    slug: str
    fields: dict[str, Any]  # name, event_type, aggregation, value_property, group_by[, description]


@dataclass
class FeatureEntry:
    where: str
    key: str
    name: str
    meter: str | None
    filters: dict[str, str]


@dataclass
class PlanState:
    """What a plan version is, for comparing a file entry with the database."""

    name: str
    description: str
    currency: str
    billing_cadence: str
    rate_cards: list[RateCardSpec]


@dataclass
class PlanEntry:
    where: str
    key: str
    status: str
    state: PlanState
    rate_card_wheres: list[str] = field(default_factory=list)


@dataclass
class CatalogSpec:
    meters: list[MeterEntry] = field(default_factory=list)
    features: list[FeatureEntry] = field(default_factory=list)
    plans: list[PlanEntry] = field(default_factory=list)
    # keys of entries present in the file, valid or not (references to a broken entry are not reported twice)
    declared: dict[str, set[str]] = field(default_factory=lambda: {"meters": set(), "features": set(), "plans": set()})


def entry_list(problems: Problems, document: dict, kind: str) -> list:
    value = document.get(kind)
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(kind, f"must be a list of entries, not {type_name(value)}")
        return []
    return value


def _check_duplicates(problems: Problems, entries: list, key_of, kind: str) -> None:
    first: dict[Any, str] = {}
    for entry in entries:
        key = key_of(entry)
        if key in first:
            problems.add(entry.where, f"duplicate: {first[key]} has the same {kind}")
        else:
            first[key] = entry.where


def _max_length(model: Any, name: str) -> int | None:
    return getattr(model._meta.get_field(name), "max_length", None)


def _meter_parse(problems: Problems, where: str, data: Any) -> MeterEntry | None:
    r = Reader(problems, where, data, METER_FIELDS)
    slug = r.text("slug", required=True)
    fields = {
        "name": r.text("name", required=True, max_length=_max_length(Meter, "name")),
        "event_type": r.text("event_type", required=True),
        "aggregation": r.text("aggregation", required=True),
        "value_property": r.text("value_property", default="", max_length=_max_length(Meter, "value_property")),
        "group_by": r.mapping("group_by"),
    }
    if fields["group_by"] in (None, MISSING):
        fields["group_by"] = {}
    description = r.text("description", strip=False)
    if description is not MISSING:
        fields["description"] = description
    if not r.ok:
        return None
    errors = validate_meter(slug=slug, **{k: fields[k] for k in ("name", "event_type", "aggregation",
                                                                   "value_property", "group_by")})
    if "aggregation" in errors:
        errors["aggregation"] = f"must be one of {', '.join(AGGREGATIONS)}, not {fields['aggregation']!r}"
    for name, message in errors.items():
        r.fail(name, message)
    return MeterEntry(where, slug, fields) if r.ok else None


def _feature_parse(problems: Problems, where: str, data: Any) -> FeatureEntry | None:
    r = Reader(problems, where, data, FEATURE_FIELDS)
    key = r.text("key", required=True)
    name = r.text("name", required=True, max_length=_max_length(Feature, "name"))
    meter = r.text("meter", nullable=True, default=None) or None
    filters = r.mapping("filters")
    if filters in (None, MISSING):
        filters = {}
    if isinstance(key, str) and key and key_problem(key, "feature key"):
        r.fail("key", key_problem(key, "feature key") or "")
    for name_, value in filters.items():
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            r.fail(f"filters.{name_}", "must be a non-empty string")
    if not r.ok:
        return None
    return FeatureEntry(where, key, name, meter, {str(k): str(v) for k, v in filters.items()})


def _tiers_parse(problems: Problems, where: str, tiers: list) -> list[TierSpec]:
    parsed = []
    for i, data in enumerate(tiers):
        r = Reader(problems, f"{where}[{i}]", data, TIER_FIELDS)
        if r.ok and "up_to" not in r.data:
            r.fail("up_to", "is required (null on the last tier)")
        up_to = r.decimal("up_to")
        unit_amount = r.decimal("unit_amount", required=True)
        flat_amount = r.decimal("flat_amount")
        parsed.append(TierSpec(up_to, unit_amount or Decimal(0), flat_amount or Decimal(0)))
    return parsed


def _price_parse(r: Reader, spec: RateCardSpec) -> None:
    data = r.raw("price", None)
    if data is None:
        return
    where = r.at("price")
    kind = data.get("type") if isinstance(data, dict) else None
    if isinstance(data, dict) and kind not in PRICE_TYPES:
        known = ", ".join(sorted(PRICE_TYPES))
        r.fail("price.type", f"must be one of {known}, not {kind!r}" if kind is not None else
               f"is required (one of {known}, or price: null)")
        return
    p = Reader(r.problems, where, data, PRICE_FIELDS.get(kind or "", ("type",)))
    if not p.ok:
        r.ok = False
        return
    spec.price_type = str(kind)
    if kind == "flat":
        spec.amount = p.decimal("amount", required=True)
    elif kind == "unit":
        spec.unit_amount = p.decimal("unit_amount", required=True)
    elif kind == "package":
        spec.amount = p.decimal("amount", required=True)
        spec.quantity_per_package = p.decimal("quantity_per_package", required=True)
    else:
        tiers = p.items("tiers", required=True)
        if tiers is not None and not tiers:
            p.fail("tiers", "must list at least one tier")
        spec.tiers = _tiers_parse(r.problems, p.at("tiers"), tiers or [])
    r.ok = r.ok and p.ok


def _entitlement_parse(r: Reader, spec: RateCardSpec) -> None:
    data = r.raw("entitlement", None)
    if data is None:
        return
    kind = data.get("type") if isinstance(data, dict) else None
    if isinstance(data, dict) and kind not in ENTITLEMENT_TYPES:
        known = ", ".join(sorted(ENTITLEMENT_TYPES))
        r.fail("entitlement.type", f"must be one of {known}, not {kind!r}" if kind is not None else
               f"is required (one of {known}, or entitlement: null)")
        return
    e = Reader(r.problems, r.at("entitlement"), data, ENTITLEMENT_FIELDS.get(kind or "", ("type",)))
    if not e.ok:
        r.ok = False
        return
    spec.entitlement_type = str(kind)
    if kind == "static":
        if "config" not in e.data:
            e.fail("config", "is required (any JSON, e.g. {seats: 5})")
        elif not is_json(e.data["config"]):
            e.fail("config", "must hold only JSON values (strings, numbers, booleans, null, lists, mappings)")
        else:
            spec.entitlement_config = e.data["config"]
    elif kind == "metered":
        spec.entitlement_limit = e.decimal("limit", required=True)
        spec.entitlement_soft = e.boolean("soft")
        spec.entitlement_usage_period = e.text("usage_period", default="", choices=CADENCES) or ""
    r.ok = r.ok and e.ok


def _rate_card_parse(problems: Problems, where: str, data: Any) -> RateCardSpec:
    r = Reader(problems, where, data, RATE_CARD_FIELDS)
    key = r.text("key", required=True)
    spec = RateCardSpec(key=key if isinstance(key, str) else "")
    if isinstance(key, str) and key and key_problem(key, "rate card key"):
        r.fail("key", key_problem(key, "rate card key") or "")
    spec.name = r.text("name", default="", max_length=_max_length(RateCard, "name")) or ""
    spec.feature = r.text("feature", nullable=True, default=None) or None
    spec.payment_term = r.text("payment_term", default=IN_ARREARS, choices=sorted(PAYMENT_TERMS)) or IN_ARREARS
    spec.free_quantity = r.decimal("free_quantity")
    spec.minimum_spend = r.decimal("minimum_spend")
    spec.maximum_spend = r.decimal("maximum_spend")
    _price_parse(r, spec)
    _entitlement_parse(r, spec)
    return spec


def _plan_parse(problems: Problems, where: str, data: Any) -> PlanEntry | None:
    r = Reader(problems, where, data, PLAN_FIELDS)
    key = r.text("key", required=True)
    if isinstance(key, str) and key and key_problem(key, "plan key"):
        r.fail("key", key_problem(key, "plan key") or "")
    name = r.text("name", required=True, max_length=_max_length(Plan, "name"))
    description = r.text("description", default="", strip=False) or ""
    currency = r.text("currency", required=True)
    if isinstance(currency, str) and currency:
        currency = clean_currency(currency)  # usd → USD, as plan_create stores it
        if currency_problem(currency):
            r.fail("currency", currency_problem(currency) or "")
    cadence = r.text("billing_cadence", required=True, choices=CADENCES)
    status = r.text("status", default="published", choices=PLAN_STATUSES)
    rate_cards, wheres = [], []
    before = len(problems.items)
    for i, item in enumerate(r.items("rate_cards", required=True) or []):
        label = entry_label(f"{where} rate_cards", i, item, "key")
        rate_cards.append(_rate_card_parse(problems, label, item))
        wheres.append(label)
    seen: dict[str, str] = {}
    for spec, label in zip(rate_cards, wheres, strict=True):
        if spec.key and spec.key in seen:
            problems.add(f"{label}.key", f"duplicate: {seen[spec.key]} has the same key")
        seen.setdefault(spec.key, label)
    if not r.ok or len(problems.items) != before:
        return None
    return PlanEntry(where, key, status, PlanState(name, description, currency, cadence, rate_cards), wheres)


def catalog_parse(*, problems: Problems, document: dict) -> CatalogSpec:
    """Shapes and types of the ``meters``, ``features`` and ``plans`` sections (no database)."""
    spec = CatalogSpec()
    parsers: tuple[tuple[str, str, Any, list[Any]], ...] = (
        ("meters", "slug", _meter_parse, spec.meters),
        ("features", "key", _feature_parse, spec.features),
        ("plans", "key", _plan_parse, spec.plans),
    )
    for kind, key_field, parse, target in parsers:
        for i, data in enumerate(entry_list(problems, document, kind)):
            if isinstance(data, dict) and isinstance(data.get(key_field), str):
                spec.declared[kind].add(data[key_field].strip())
            entry = parse(problems, entry_label(kind, i, data, key_field), data)
            if entry is not None:
                target.append(entry)
    _check_duplicates(problems, spec.meters, lambda e: e.slug, "slug")
    _check_duplicates(problems, spec.features, lambda e: e.key, "key")
    _check_duplicates(problems, spec.plans, lambda e: e.key, "key")
    return spec


# ---------------------------------------------------------------------------------------------------- validation


def _normalized_spec(spec: RateCardSpec) -> RateCardSpec:
    """Only the fields that mean something for the rate card's price and entitlement types."""
    kind, ent = spec.price_type, spec.entitlement_type
    return replace(
        spec,
        amount=spec.amount if kind in ("flat", "package") else None,
        unit_amount=spec.unit_amount if kind == "unit" else None,
        quantity_per_package=spec.quantity_per_package if kind == "package" else None,
        tiers=list(spec.tiers) if kind in ("graduated", "volume") else [],
        entitlement_config=spec.entitlement_config if ent == "static" else None,
        entitlement_limit=spec.entitlement_limit if ent == "metered" else None,
        entitlement_soft=spec.entitlement_soft if ent == "metered" else False,
        entitlement_usage_period=spec.entitlement_usage_period if ent == "metered" else "",
    )


def plan_state(plan: Plan) -> PlanState:
    rate_cards = plan.rate_cards.select_related("feature").prefetch_related("tiers")
    return PlanState(plan.name, plan.description, plan.currency, plan.billing_cadence,
                     [_normalized_spec(rate_card_spec(rc)) for rc in rate_cards])


def _comparable(state: PlanState) -> tuple:
    """Decimals compare as numbers (49.00 == 49); JSON configs compare strictly (true is not 1)."""
    cards = [replace(rc, entitlement_config=json.dumps(rc.entitlement_config, sort_keys=True))
             for rc in state.rate_cards]
    return state.name, state.description, state.currency, state.billing_cadence, cards


def same_plan(a: PlanState, b: PlanState) -> bool:
    return _comparable(a) == _comparable(b)


def _publish_problems(entry: PlanEntry, feature_metered: dict[str, bool]) -> list[tuple[str, str]]:
    """The rules of ``plan_problems`` applied to the entry before anything is written."""
    found: list[tuple[str, str]] = []
    if not entry.state.rate_cards:
        found.append((f"{entry.where}.rate_cards", "a published plan needs at least one rate card"))
    for spec, where in zip(entry.state.rate_cards, entry.rate_card_wheres, strict=True):
        try:
            price = engine_price(spec.price_type, amount=spec.amount, unit_amount=spec.unit_amount,
                                 quantity_per_package=spec.quantity_per_package,
                                 tiers=[(t.up_to, t.unit_amount, t.flat_amount) for t in spec.tiers])
        except ValueError as exc:
            found.append((f"{where}.price", str(exc)))
            continue
        prefix = f"rate card {spec.key}: "
        for problem in rate_card_problems(
            key=spec.key, price_type=spec.price_type, price=price, has_feature=spec.feature is not None,
            feature_metered=feature_metered.get(spec.feature or "", False), payment_term=spec.payment_term,
            minimum_spend=spec.minimum_spend, maximum_spend=spec.maximum_spend, free_quantity=spec.free_quantity,
            entitlement_type=spec.entitlement_type, entitlement_limit=spec.entitlement_limit,
            entitlement_config=spec.entitlement_config,
        ):
            found.append((where, problem.removeprefix(prefix)))
    return found


def catalog_validate(*, problems: Problems, spec: CatalogSpec) -> None:
    """References (feature → meter, rate card → feature) and the services' rules, against file and database."""
    meters_in_file = {m.slug: m for m in spec.meters}
    for feature in spec.features:
        meter: Meter | None = None
        if feature.meter is not None:
            if feature.meter in meters_in_file:
                meter = Meter(slug=feature.meter, group_by=meters_in_file[feature.meter].fields["group_by"])
            else:
                meter = Meter.objects.filter(slug=feature.meter).first()
            if meter is None:
                if feature.meter not in spec.declared["meters"]:
                    problems.add(f"{feature.where}.meter", f"unknown meter {feature.meter!r} (not in the file, "
                                 "not in the database)")
                continue
        for name, message in feature_problems(key=feature.key, name=feature.name, meter=meter,
                                              filters=feature.filters).items():
            problems.add(f"{feature.where}.{'filters' if name == 'meter_group_by_filters' else name}", message)

    metered = {f.key: f.meter is not None for f in spec.features}
    for key, meter_id in Feature.objects.exclude(key__in=list(metered)).values_list("key", "meter_id"):
        metered[key] = meter_id is not None
    for plan in spec.plans:
        for rate_card, where in zip(plan.state.rate_cards, plan.rate_card_wheres, strict=True):
            if rate_card.feature and rate_card.feature not in metered:
                if rate_card.feature not in spec.declared["features"]:
                    problems.add(f"{where}.feature", f"unknown feature {rate_card.feature!r} (not in the file, "
                                 "not in the database)")
                metered[rate_card.feature] = True  # reported once; do not add "needs a feature with a meter"
        if plan.status == "published":
            for where, message in _publish_problems(plan, metered):
                problems.add(where, message)


# ---------------------------------------------------------------------------------------------------------- apply


def _meter_apply(problems: Problems, entry: MeterEntry, lines: list[str]) -> None:
    meter = Meter.objects.filter(slug=entry.slug).first()
    try:
        if meter is None:
            lines.append(f"create meter {entry.slug}")
            meter_create(slug=entry.slug, **entry.fields)
            return
        changes = {name: value for name, value in entry.fields.items() if getattr(meter, name) != value}
        if changes:
            lines.append(f"update meter {entry.slug}: " + ", ".join(
                f"{name} {show(getattr(meter, name))} -> {show(value)}" for name, value in changes.items()))
            meter_update(meter=meter, **changes)
    except MeterFrozen as exc:  # what uses the meter holds it: the entry (naming the meter), the field, why
        for name, message in exc.errors.items():
            problems.add(f"{entry.where}.{name}", f"refused: {message}")
        raise ApplyError(list(problems.items)) from exc
    except MeterValidationError as exc:
        raise service_problems(problems, entry.where, exc) from exc


def _feature_apply(problems: Problems, entry: FeatureEntry, lines: list[str]) -> None:
    feature = Feature.objects.select_related("meter").filter(key=entry.key).first()
    meter = Meter.objects.get(slug=entry.meter) if entry.meter else None
    try:
        if feature is None:
            lines.append(f"create feature {entry.key}")
            feature_create(key=entry.key, name=entry.name, meter=meter, filters=entry.filters)
            return
        old = {"name": feature.name, "meter": feature.meter.slug if feature.meter else None,
               "filters": feature.meter_group_by_filters or {}}
        new = {"name": entry.name, "meter": entry.meter, "filters": entry.filters}
        changes = [f"{name} {show(old[name])} -> {show(new[name])}" for name in old if old[name] != new[name]]
        if changes:
            lines.append(f"update feature {entry.key}: " + ", ".join(changes))
            feature_update(feature=feature, name=entry.name, meter=meter, filters=entry.filters)
    except FeatureError as exc:
        raise service_problems(problems, entry.where, exc) from exc


def rate_card_doc(spec: RateCardSpec) -> dict[str, Any]:
    """A rate card spec in the file's shape, with Decimals (for diffs)."""
    price: dict[str, Any] | None = None
    if spec.price_type in ("flat",):
        price = {"type": "flat", "amount": spec.amount}
    elif spec.price_type == "unit":
        price = {"type": "unit", "unit_amount": spec.unit_amount}
    elif spec.price_type == "package":
        price = {"type": "package", "amount": spec.amount, "quantity_per_package": spec.quantity_per_package}
    elif spec.price_type:
        price = {"type": spec.price_type, "tiers": [
            {"up_to": t.up_to, "unit_amount": t.unit_amount, "flat_amount": t.flat_amount} for t in spec.tiers]}
    entitlement: dict[str, Any] | None = None
    if spec.entitlement_type == "metered":
        entitlement = {"type": "metered", "limit": spec.entitlement_limit, "soft": spec.entitlement_soft,
                       "usage_period": spec.entitlement_usage_period or None}
    elif spec.entitlement_type == "static":
        entitlement = {"type": "static", "config": spec.entitlement_config}
    elif spec.entitlement_type:
        entitlement = {"type": spec.entitlement_type}
    return {
        "name": spec.name or None, "feature": spec.feature, "payment_term": spec.payment_term,
        "free_quantity": spec.free_quantity, "minimum_spend": spec.minimum_spend,
        "maximum_spend": spec.maximum_spend, "price": price, "entitlement": entitlement,
    }


def plan_changes(old: PlanState, new: PlanState) -> list[str]:
    """What differs between two versions, e.g. ``rate card ai-token: price.unit_amount 0.00002 -> 0.00003``."""
    changes = [
        f"{name} {show(getattr(old, name))} -> {show(getattr(new, name))}"
        for name in ("name", "description", "currency", "billing_cadence")
        if getattr(old, name) != getattr(new, name)
    ]
    old_cards = {rc.key: rc for rc in old.rate_cards}
    new_cards = {rc.key: rc for rc in new.rate_cards}
    changes += [f"remove rate card {key}" for key in old_cards if key not in new_cards]
    for key, card in new_cards.items():
        if key not in old_cards:
            changes.append(f"add rate card {key}")
        elif old_cards[key] != card:
            details = diff_values(rate_card_doc(old_cards[key]), rate_card_doc(card))
            changes.append(f"rate card {key}: " + (", ".join(details) or "changed"))
    kept_old = [k for k in old_cards if k in new_cards]
    kept_new = [k for k in new_cards if k in old_cards]
    if kept_old != kept_new:
        changes.append(f"rate card order {', '.join(kept_old)} -> {', '.join(kept_new)}")
    return changes


def _plan_write(entry: PlanEntry, draft: Plan | None) -> Plan:
    state = entry.state
    if draft is None:
        return plan_create(key=entry.key, name=state.name, currency=state.currency,
                           billing_cadence=state.billing_cadence, description=state.description,
                           rate_cards=state.rate_cards)
    plan_update_draft(plan=draft, name=state.name, currency=state.currency, billing_cadence=state.billing_cadence,
                      description=state.description)
    return plan_replace_rate_cards(plan=draft, rate_cards=state.rate_cards)


def _plan_apply(problems: Problems, entry: PlanEntry, lines: list[str]) -> None:
    versions = list(Plan.objects.filter(key=entry.key).order_by("-version"))
    published = next((p for p in versions if p.status == Plan.Status.PUBLISHED), None)
    draft = next((p for p in versions if p.status == Plan.Status.DRAFT), None)
    publish = entry.status == "published"
    key, state = entry.key, entry.state
    try:
        if not versions:
            lines.append(f"create plan {key} v1" if publish else f"create draft plan {key} v1")
            plan = _plan_write(entry, None)
            if publish:
                plan_publish(plan=plan)
            return
        published_state = plan_state(published) if published is not None else None
        if publish and published_state is not None and same_plan(published_state, state):
            return  # the published version is what the file says (a draft in progress is left alone)
        if draft is not None:
            draft_state = plan_state(draft)
            unchanged = same_plan(draft_state, state)
            if unchanged and not publish:
                return
            changes = [] if unchanged else plan_changes(draft_state, state) or ["entitlement config changed"]
            detail = f" ({'; '.join(changes)})" if changes else ""
            if publish:
                verb = "update and publish" if changes else "publish"
                lines.append(f"{verb} draft plan {key} v{draft.version}{detail}")
            else:
                lines.append(f"update draft plan {key} v{draft.version}{detail}")
            plan = draft if unchanged else _plan_write(entry, draft)
            if publish:
                plan_publish(plan=plan)
            return
        if published_state is not None and same_plan(published_state, state):
            return  # a draft entry equal to the published version adds nothing
        base = published or versions[0]
        changes = plan_changes(published_state or plan_state(base), state)
        if published is None:
            changes.append(f"v{base.version} is {base.status}")
        changes = changes or ["entitlement config changed"]
        version = versions[0].version + 1
        lines.append(f"new {'' if publish else 'draft '}version {version} of plan {key} ({'; '.join(changes)})")
        plan = _plan_write(entry, None)
        if publish:
            plan_publish(plan=plan)
    except PlanError as exc:
        raise service_problems(problems, entry.where, exc) from exc


def catalog_apply(*, problems: Problems, spec: CatalogSpec, lines: list[str]) -> None:
    """Create or change what differs, in dependency order; the caller holds the transaction."""
    for meter in spec.meters:
        _meter_apply(problems, meter, lines)
    for feature in spec.features:
        _feature_apply(problems, feature, lines)
    for plan in spec.plans:
        _plan_apply(problems, plan, lines)


# ----------------------------------------------------------------------------------------------------------- dump


def sorted_json(value: Any) -> Any:
    """JSON with mapping keys sorted, so a dump reads the same on SQLite and PostgreSQL (jsonb reorders keys)."""
    if isinstance(value, dict):
        return {k: sorted_json(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, list):
        return [sorted_json(item) for item in value]
    return value


def meter_doc(meter: Meter) -> dict[str, Any]:
    doc: dict[str, Any] = {"slug": meter.slug, "name": meter.name}
    if meter.description:
        doc["description"] = meter.description
    doc.update(event_type=meter.event_type, aggregation=meter.aggregation)
    if meter.value_property:
        doc["value_property"] = meter.value_property
    if meter.group_by:
        doc["group_by"] = sorted_json(meter.group_by)
    return doc


def feature_doc(feature: Feature) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": feature.key, "name": feature.name}
    if feature.meter is not None:
        doc["meter"] = feature.meter.slug
    if feature.meter_group_by_filters:
        doc["filters"] = sorted_json(feature.meter_group_by_filters)
    return doc


def plan_doc(plan: Plan) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": plan.key, "name": plan.name}
    if plan.description:
        doc["description"] = plan.description
    doc.update(currency=plan.currency, billing_cadence=plan.billing_cadence)
    if plan.status == Plan.Status.DRAFT:
        doc["status"] = "draft"
    rate_cards = plan.rate_cards.select_related("feature").prefetch_related("tiers")
    doc["rate_cards"] = [rate_card_json(rc) for rc in rate_cards]
    for card in doc["rate_cards"]:
        if card.get("entitlement") and "config" in card["entitlement"]:
            card["entitlement"]["config"] = sorted_json(card["entitlement"]["config"])
    return doc


def catalog_dump() -> dict[str, list[dict[str, Any]]]:
    """Meters, features and the latest version of each plan that is published or a draft (a plan whose
    versions are all archived is left out: applying it would publish it again)."""
    latest: dict[str, Plan] = {}
    for plan in Plan.objects.order_by("key", "-version"):
        latest.setdefault(plan.key, plan)
    return {
        "meters": [meter_doc(m) for m in Meter.objects.order_by("slug")],
        "features": [feature_doc(f) for f in Feature.objects.select_related("meter").order_by("key")],
        "plans": [plan_doc(p) for p in latest.values() if p.status != Plan.Status.ARCHIVED],
    }
