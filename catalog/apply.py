"""Catalog as code: meters, features and plans of a ``billing_apply`` file (parse, validate, diff, apply, dump).

The file's format and the whole-file orchestration (customers, subscriptions, one transaction, dry run) are in
``customers.apply``; reading YAML and typed fields with their locations is ``common.yaml_reader``'s. This module
holds the catalog's part:

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from typing import Any

from common.yaml_reader import (
    MISSING,
    FileError,
    Problems,
    Reader,
    change,
    changed_fields,
    changes_text,
    check_duplicates,
    diff_values,
    entry_label,
    parse_entries,
    sorted_json,
    without_empty,
)
from metering.meter_rules import AGGREGATIONS, validate_meter
from metering.models import Meter
from metering.services.meters import MeterFrozen, MeterValidationError, meter_create, meter_update

from .dimensional import DimensionalPrice, DimensionRow
from .models import Feature, ModelCost, Plan, RateCard
from .rules import (
    CADENCES,
    CREDIT_MODES,
    ENTITLEMENT_TYPES,
    PAYMENT_TERMS,
    PRICE_TYPES,
    ROW_PRICE_TYPES,
    clean_currency,
    credit_grant_problems,
    currency_problem,
    engine_price,
    key_problem,
    rate_card_problems,
)
from .serializers import decimal_text, rate_card_json
from .services.features import FeatureError, feature_create, feature_problems, feature_update
from .services.plans import (
    PlanError,
    PriceRowSpec,
    RateCardSpec,
    TierSpec,
    plan_create,
    plan_publish,
    plan_replace_rate_cards,
    plan_update_draft,
    rate_card_spec,
)

METER_FIELDS = ("slug", "name", "description", "event_type", "aggregation", "value_property", "value_absent",
                "group_by")
FEATURE_FIELDS = ("key", "name", "meter", "filters")
PLAN_FIELDS = ("key", "name", "description", "currency", "billing_cadence", "status", "rate_cards")
PLAN_STATUSES = ("published", "draft")
IN_ARREARS = str(RateCard.PaymentTerm.IN_ARREARS.value)
RATE_CARD_FIELDS = (
    "key", "name", "feature", "price", "payment_term", "free_quantity", "minimum_spend", "maximum_spend",
    "entitlement", "credit_grant",
)
PRICE_FIELDS = {
    "flat": ("type", "amount"),
    "unit": ("type", "unit_amount"),
    "graduated": ("type", "tiers"),
    "volume": ("type", "tiers"),
    "package": ("type", "amount", "quantity_per_package"),
    "dimensional": ("type", "dimensions", "rows", "default"),
}
ROW_FIELDS = ("match", "price", "effective_from", "default")
TIER_FIELDS = ("up_to", "unit_amount", "flat_amount")
ENTITLEMENT_FIELDS = {
    "boolean": ("type",),
    "static": ("type", "config"),
    "metered": ("type", "limit", "soft", "usage_period", "credits"),
}


class CatalogReader(Reader):
    """Decimals as the catalog stores them. PreciseDecimalField is numeric(38, 15): a value with more decimals
    would be rounded by the database and then differ from the file on every apply, so it is refused instead."""

    decimal_places = 15
    decimal_integer_digits = 38 - 15


# --------------------------------------------------------------------------------------------------- the entries


@dataclass
class MeterEntry:
    where: str
    slug: str
    fields: dict[str, Any]  # name, event_type, aggregation, value_property, value_absent, group_by[, description]


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
class CostEntry:
    where: str
    provider: str
    model: str
    token_type: str
    cost_per_token: Decimal
    currency: str
    source: str


@dataclass
class CatalogSpec:
    costs: list[CostEntry] = field(default_factory=list)
    meters: list[MeterEntry] = field(default_factory=list)
    features: list[FeatureEntry] = field(default_factory=list)
    plans: list[PlanEntry] = field(default_factory=list)
    # keys of entries present in the file, valid or not (references to a broken entry are not reported twice)
    declared: dict[str, set[str]] = field(default_factory=lambda: {"meters": set(), "features": set(), "plans": set()})


# --------------------------------------------------------------------------------------------------------- parse


def _max_length(model: Any, name: str) -> int | None:
    return getattr(model._meta.get_field(name), "max_length", None)


def key_check(what: str) -> Callable[[str], str | None]:
    """The rule of a key (``feature key``, ``customer key``…), for :meth:`Reader.text`'s ``check``."""
    return lambda key: key_problem(key, what)


def currency_check(currency: str) -> str | None:
    """The problem with a currency as typed (``usd`` is USD), for :meth:`Reader.text`'s ``check``."""
    return currency_problem(clean_currency(currency))


def _meter_parse(problems: Problems, where: str, data: Any) -> MeterEntry | None:
    r = CatalogReader(problems, where, data, METER_FIELDS)
    slug = r.text("slug", required=True)
    fields = {
        "name": r.text("name", required=True, max_length=_max_length(Meter, "name")),
        "event_type": r.text("event_type", required=True),
        "aggregation": r.text("aggregation", required=True),
        "value_property": r.text("value_property", default="", max_length=_max_length(Meter, "value_property")),
        "value_absent": r.text("value_absent", default=Meter.ValueAbsent.INVALID.value,
                               choices=Meter.ValueAbsent.values),
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
                                                                   "value_property", "value_absent", "group_by")})
    if "aggregation" in errors:
        errors["aggregation"] = f"must be one of {', '.join(AGGREGATIONS)}, not {fields['aggregation']!r}"
    for name, message in errors.items():
        r.fail(name, message)
    return MeterEntry(where, slug, fields) if r.ok else None


def _feature_parse(problems: Problems, where: str, data: Any) -> FeatureEntry | None:
    r = CatalogReader(problems, where, data, FEATURE_FIELDS)
    key = r.text("key", required=True, check=key_check("feature key"))
    name = r.text("name", required=True, max_length=_max_length(Feature, "name"))
    meter = r.text("meter", nullable=True, default=None) or None
    filters = r.mapping("filters")
    if filters in (None, MISSING):
        filters = {}
    for name_, value in filters.items():
        if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
            r.fail(f"filters.{name_}", "must be a non-empty string")
    if not r.ok:
        return None
    return FeatureEntry(where, key, name, meter, {str(k): str(v) for k, v in filters.items()})


def _typed_section(r: Reader, name: str, types: frozenset[str], fields: dict[str, tuple[str, ...]],
                   read: Callable[[str, Reader], None]) -> None:
    """The mapping at ``name`` (a price, an entitlement; null: none): its ``type`` is checked first, then its
    fields are those of the type, and ``read(type, reader)`` reads them."""
    data = r.raw(name, None)
    if data is None:
        return
    kind = data.get("type") if isinstance(data, dict) else None
    if isinstance(data, dict) and (not isinstance(kind, str) or kind not in types):
        known = ", ".join(sorted(types))
        r.fail(f"{name}.type", f"must be one of {known}, not {kind!r}" if kind is not None else
               f"is required (one of {known}, or {name}: null)")
        return
    section = r.nested(name, data, fields.get(kind or "", ("type",)))
    if section.ok:
        read(str(kind), section)


def _tiers_parse(p: Reader) -> list[TierSpec]:
    tiers = p.items("tiers", required=True)
    if tiers is not None and not tiers:
        p.fail("tiers", "must list at least one tier")
    parsed = []
    for i, data in enumerate(tiers or []):
        t = p.nested(f"tiers[{i}]", data, TIER_FIELDS)
        if t.ok and "up_to" not in t.data:
            t.fail("up_to", "is required (null on the last tier)")
        up_to = t.decimal("up_to")
        unit_amount = t.decimal("unit_amount", required=True)
        flat_amount = t.decimal("flat_amount")
        parsed.append(TierSpec(up_to, unit_amount or Decimal(0), flat_amount or Decimal(0)))
    return parsed


def _row_price_read(row: PriceRowSpec, kind: str, p: Reader) -> None:
    holder = RateCardSpec(key="")
    _price_read(holder, kind, p)
    row.price_type, row.unit_amount, row.amount = kind, holder.unit_amount, holder.amount
    row.quantity_per_package, row.tiers = holder.quantity_per_package, holder.tiers


def _dimensional_read(spec: RateCardSpec, p: Reader) -> None:
    """``dimensions: [model, type]``, ``rows: [{match, price, effective_from?}]``, ``default: price | null`` (a
    scheduled version of the default is a row with ``default: true`` and no match)."""
    dimensions = p.items("dimensions", required=True) or []
    if not all(isinstance(name, str) and name and "\x00" not in name for name in dimensions):
        p.fail("dimensions", "must be a list of group-by names, e.g. [model, type]")
        dimensions = []
    spec.dimensions = [str(name) for name in dimensions]
    rows: list[PriceRowSpec] = []
    for i, data in enumerate(p.items("rows") or []):
        r = p.nested(f"rows[{i}]", data, ROW_FIELDS)
        if not r.ok:
            continue
        row = PriceRowSpec(is_default=r.boolean("default"))
        match = r.mapping("match")
        if match not in (None, MISSING):
            for name, value in match.items():
                if not isinstance(value, str | int) or isinstance(value, bool) or str(value) == "":
                    r.fail(f"match.{name}", "must be a non-empty string")
            row.match = {str(k): str(v) for k, v in match.items()}
        elif not row.is_default:
            r.fail("match", "is required (dimension → value; {} matches anything)")
        row.effective_from = r.datetime("effective_from")
        if not r.has("price") or r.raw("price") is None:
            r.fail("price", "is required (a unit, graduated, volume or package price)")
        _typed_section(r, "price", ROW_PRICE_TYPES, PRICE_FIELDS, partial(_row_price_read, row))
        rows.append(row)
    if p.raw("default", None) is not None:
        default = PriceRowSpec(is_default=True)
        _typed_section(p, "default", ROW_PRICE_TYPES, PRICE_FIELDS, partial(_row_price_read, default))
        rows.append(default)
    spec.rows = rows


def _price_read(spec: RateCardSpec, kind: str, p: Reader) -> None:
    spec.price_type = kind
    if kind == "dimensional":
        _dimensional_read(spec, p)
    elif kind == "flat":
        spec.amount = p.decimal("amount", required=True)
    elif kind == "unit":
        spec.unit_amount = p.decimal("unit_amount", required=True)
    elif kind == "package":
        spec.amount = p.decimal("amount", required=True)
        spec.quantity_per_package = p.decimal("quantity_per_package", required=True)
    else:
        spec.tiers = _tiers_parse(p)


def _entitlement_read(spec: RateCardSpec, kind: str, e: Reader) -> None:
    spec.entitlement_type = kind
    if kind == "static":
        config = e.json("config")
        if not e.has("config"):
            e.fail("config", "is required (any JSON, e.g. {seats: 5})")
        elif config is not MISSING:
            spec.entitlement_config = config
    elif kind == "metered":
        spec.entitlement_limit = e.decimal("limit", required=True)
        spec.entitlement_soft = e.boolean("soft")
        spec.entitlement_usage_period = e.text("usage_period", default="", choices=CADENCES) or ""
        spec.entitlement_credits = e.text("credits", default="", choices=CREDIT_MODES) or ""


def _rate_card_parse(problems: Problems, where: str, data: Any) -> RateCardSpec:
    r = CatalogReader(problems, where, data, RATE_CARD_FIELDS)
    key = r.text("key", required=True, check=key_check("rate card key"))
    spec = RateCardSpec(key=key if isinstance(key, str) else "")
    spec.name = r.text("name", default="", max_length=_max_length(RateCard, "name")) or ""
    spec.feature = r.text("feature", nullable=True, default=None) or None
    spec.payment_term = r.text("payment_term", default=IN_ARREARS, choices=sorted(PAYMENT_TERMS)) or IN_ARREARS
    spec.free_quantity = r.decimal("free_quantity")
    spec.minimum_spend = r.decimal("minimum_spend")
    spec.maximum_spend = r.decimal("maximum_spend")
    _typed_section(r, "price", PRICE_TYPES, PRICE_FIELDS, partial(_price_read, spec))
    _typed_section(r, "entitlement", ENTITLEMENT_TYPES, ENTITLEMENT_FIELDS, partial(_entitlement_read, spec))
    if r.has("credit_grant"):
        grant = r.mapping("credit_grant")
        if isinstance(grant, dict):
            grant = {name: format(value, "f") if isinstance(value, Decimal) else value
                     for name, value in grant.items()}
            for problem in credit_grant_problems(grant, ""):
                r.fail("credit_grant", problem.removeprefix("credit_grant: "))
            spec.credit_grant = grant
    return spec


def _rate_cards_parse(problems: Problems, r: Reader) -> tuple[list[RateCardSpec], list[str]]:
    """The plan's rate cards and where each is (``plans[0] (token) rate_cards[1] (platform)``)."""
    rate_cards, wheres = [], []
    for i, item in enumerate(r.items("rate_cards", required=True) or []):
        label = entry_label(f"{r.where} rate_cards", i, item, "key")
        rate_cards.append(_rate_card_parse(problems, label, item))
        wheres.append(label)
    seen: dict[str, str] = {}
    for spec, label in zip(rate_cards, wheres, strict=True):
        if spec.key and spec.key in seen:
            problems.add(f"{label}.key", f"duplicate: {seen[spec.key]} has the same key")
        seen.setdefault(spec.key, label)
    return rate_cards, wheres


def _plan_parse(problems: Problems, where: str, data: Any) -> PlanEntry | None:
    r = CatalogReader(problems, where, data, PLAN_FIELDS)
    key = r.text("key", required=True, check=key_check("plan key"))
    name = r.text("name", required=True, max_length=_max_length(Plan, "name"))
    description = r.text("description", default="", strip=False) or ""
    currency = r.text("currency", required=True, check=currency_check)
    cadence = r.text("billing_cadence", required=True, choices=CADENCES)
    status = r.text("status", default="published", choices=PLAN_STATUSES)
    before = len(problems.items)
    rate_cards, wheres = _rate_cards_parse(problems, r)
    if not r.ok or len(problems.items) != before:
        return None
    state = PlanState(name, description, str(clean_currency(currency)), cadence, rate_cards)  # usd → USD, as stored
    return PlanEntry(where, key, status, state, wheres)


def catalog_parse(*, problems: Problems, document: dict) -> CatalogSpec:
    """Shapes and types of the ``meters``, ``features`` and ``plans`` sections (no database)."""
    spec = CatalogSpec()
    spec.meters = parse_entries(problems, document, "meters", _meter_parse, key_field="slug",
                                declared=spec.declared["meters"])
    spec.features = parse_entries(problems, document, "features", _feature_parse, key_field="key",
                                  declared=spec.declared["features"])
    spec.plans = parse_entries(problems, document, "plans", _plan_parse, key_field="key",
                               declared=spec.declared["plans"])
    check_duplicates(problems, spec.meters, lambda e: e.slug, "slug")
    check_duplicates(problems, spec.features, lambda e: e.key, "key")
    check_duplicates(problems, spec.plans, lambda e: e.key, "key")
    spec.costs = parse_entries(problems, document, "costs", _cost_parse,
                               label=lambda i, data: entry_label("costs", i, data, "model"))
    check_duplicates(problems, spec.costs, lambda e: (e.provider, e.model, e.token_type), "provider, model and "
                                                                                          "token_type")
    return spec


COST_FIELDS = ("provider", "model", "token_type", "cost_per_token", "currency", "source")


def _cost_parse(problems: Problems, where: str, data: Any) -> CostEntry | None:
    """One row of the cost table: what a model costs us per token of a type (USD unless ``currency``)."""
    r = CatalogReader(problems, where, data, COST_FIELDS)
    provider = r.text("provider", required=True, max_length=_max_length(ModelCost, "provider"))
    model = r.text("model", required=True, max_length=_max_length(ModelCost, "model"))
    token_type = r.text("token_type", required=True, max_length=_max_length(ModelCost, "token_type"))
    cost = r.decimal("cost_per_token", required=True)
    if cost is not None and cost < 0:
        r.fail("cost_per_token", "must not be negative")
    currency = r.text("currency", default="USD", check=currency_check) or "USD"
    source = r.text("source", default="", max_length=_max_length(ModelCost, "source")) or ""
    if not r.ok or cost is None:
        return None
    return CostEntry(where, provider, model, token_type, cost, str(clean_currency(currency)), source)


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
        dimensions=list(spec.dimensions) if kind == "dimensional" else [],
        rows=_normalized_rows(spec.rows) if kind == "dimensional" else [],
        entitlement_credits=spec.entitlement_credits if ent == "metered" else "",
    )


def _normalized_rows(rows: list[PriceRowSpec]) -> list[PriceRowSpec]:
    """Rows in order (the order ranks equally specific rows), then the default's versions by date (where the
    default is listed means nothing)."""
    never = dt.datetime.min.replace(tzinfo=dt.UTC)
    defaults = sorted((row for row in rows if row.is_default), key=lambda row: row.effective_from or never)
    return [_normalized_row(row) for row in rows if not row.is_default] + [_normalized_row(r) for r in defaults]


def _normalized_row(row: PriceRowSpec) -> PriceRowSpec:
    kind = row.price_type
    return replace(row, amount=row.amount if kind == "package" else None,
                   unit_amount=row.unit_amount if kind == "unit" else None,
                   quantity_per_package=row.quantity_per_package if kind == "package" else None,
                   tiers=list(row.tiers) if kind in ("graduated", "volume") else [])


def spec_price(spec: RateCardSpec) -> Any:
    """The pricing engine's price of a rate card spec (a dimensional table built from its rows)."""
    if spec.price_type != "dimensional":
        return engine_price(spec.price_type, amount=spec.amount, unit_amount=spec.unit_amount,
                            quantity_per_package=spec.quantity_per_package,
                            tiers=[(t.up_to, t.unit_amount, t.flat_amount) for t in spec.tiers])
    rows = []
    for row in spec.rows:
        price = engine_price(row.price_type, amount=row.amount, unit_amount=row.unit_amount,
                             quantity_per_package=row.quantity_per_package,
                             tiers=[(t.up_to, t.unit_amount, t.flat_amount) for t in row.tiers])
        if price is None:
            raise ValueError("a price row needs a price type")
        rows.append(DimensionRow(tuple(sorted(row.match.items())), price, row.effective_from, row.is_default))
    return DimensionalPrice(tuple(spec.dimensions), tuple(rows))


def plan_state(plan: Plan) -> PlanState:
    rate_cards = plan.rate_cards.select_related("feature").prefetch_related("tiers", "price_rows")
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
            price = spec_price(spec)
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


def _feature_meter(problems: Problems, feature: FeatureEntry, in_file: dict[str, MeterEntry],
                   declared: set[str]) -> tuple[bool, Meter | None]:
    """Whether the meter the feature names is known, and that meter (from the file, else the database; None for
    a feature without a meter). An unknown meter is a problem, unless the file has a broken entry of it (already
    reported)."""
    if feature.meter is None:
        return True, None
    if feature.meter in in_file:
        return True, Meter(slug=feature.meter, group_by=in_file[feature.meter].fields["group_by"])
    meter = Meter.objects.filter(slug=feature.meter).first()
    if meter is None and feature.meter not in declared:
        problems.add(f"{feature.where}.meter", f"unknown meter {feature.meter!r} (not in the file, not in the "
                     "database)")
    return meter is not None, meter


def _features_validate(problems: Problems, spec: CatalogSpec) -> None:
    in_file = {m.slug: m for m in spec.meters}
    for feature in spec.features:
        known, meter = _feature_meter(problems, feature, in_file, spec.declared["meters"])
        if not known:
            continue
        for name, message in feature_problems(key=feature.key, name=feature.name, meter=meter,
                                              filters=feature.filters).items():
            problems.add(f"{feature.where}.{'filters' if name == 'meter_group_by_filters' else name}", message)


def _plans_validate(problems: Problems, spec: CatalogSpec) -> None:
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


def catalog_validate(*, problems: Problems, spec: CatalogSpec) -> None:
    """References (feature → meter, rate card → feature) and the services' rules, against file and database."""
    _features_validate(problems, spec)
    _plans_validate(problems, spec)


# ---------------------------------------------------------------------------------------------------------- apply


def _meter_apply(problems: Problems, entry: MeterEntry, lines: list[str]) -> None:
    meter = Meter.objects.filter(slug=entry.slug).first()
    try:
        if meter is None:
            lines.append(f"create meter {entry.slug}")
            meter_create(slug=entry.slug, **entry.fields)
            return
        current = {name: getattr(meter, name) for name in entry.fields}
        changes = changed_fields(current, entry.fields)
        if changes:
            lines.append(f"update meter {entry.slug}: {changes_text(current, changes)}")
            meter_update(meter=meter, **changes)
    except MeterFrozen as exc:  # what uses the meter holds it: the entry (naming the meter), the field, why
        for name, message in exc.errors.items():
            problems.add(f"{entry.where}.{name}", f"refused: {message}")
        raise FileError(list(problems.items)) from exc
    except MeterValidationError as exc:
        raise problems.refused(entry.where, exc) from exc


def _feature_apply(problems: Problems, entry: FeatureEntry, lines: list[str]) -> None:
    feature = Feature.objects.select_related("meter").filter(key=entry.key).first()
    meter = Meter.objects.get(slug=entry.meter) if entry.meter else None
    try:
        if feature is None:
            lines.append(f"create feature {entry.key}")
            feature_create(key=entry.key, name=entry.name, meter=meter, filters=entry.filters)
            return
        current = {"name": feature.name, "meter": feature.meter.slug if feature.meter else None,
                   "filters": feature.meter_group_by_filters or {}}
        changes = changed_fields(current, {"name": entry.name, "meter": entry.meter, "filters": entry.filters})
        if changes:
            lines.append(f"update feature {entry.key}: {changes_text(current, changes)}")
            feature_update(feature=feature, name=entry.name, meter=meter, filters=entry.filters)
    except FeatureError as exc:
        raise problems.refused(entry.where, exc) from exc


def _row_doc(row: PriceRowSpec) -> dict[str, Any]:
    price = _price_doc(RateCardSpec(key="", price_type=row.price_type, amount=row.amount,
                                    unit_amount=row.unit_amount, quantity_per_package=row.quantity_per_package,
                                    tiers=row.tiers))
    doc: dict[str, Any] = {"default": True} if row.is_default else {"match": dict(sorted(row.match.items()))}
    doc["price"] = price
    if row.effective_from is not None:
        doc["effective_from"] = row.effective_from
    return doc


def _price_doc(spec: RateCardSpec) -> dict[str, Any] | None:
    if spec.price_type == "dimensional":
        return {"type": "dimensional", "dimensions": list(spec.dimensions),
                "rows": [_row_doc(row) for row in spec.rows]}
    if spec.price_type == "flat":
        return {"type": "flat", "amount": spec.amount}
    if spec.price_type == "unit":
        return {"type": "unit", "unit_amount": spec.unit_amount}
    if spec.price_type == "package":
        return {"type": "package", "amount": spec.amount, "quantity_per_package": spec.quantity_per_package}
    if spec.price_type:
        return {"type": spec.price_type, "tiers": [
            {"up_to": t.up_to, "unit_amount": t.unit_amount, "flat_amount": t.flat_amount} for t in spec.tiers]}
    return None


def _entitlement_doc(spec: RateCardSpec) -> dict[str, Any] | None:
    if spec.entitlement_type == "metered":
        doc = {"type": "metered", "limit": spec.entitlement_limit, "soft": spec.entitlement_soft,
               "usage_period": spec.entitlement_usage_period or None}
        if spec.entitlement_credits:
            doc["credits"] = spec.entitlement_credits
        return doc
    if spec.entitlement_type == "static":
        return {"type": "static", "config": spec.entitlement_config}
    return {"type": spec.entitlement_type} if spec.entitlement_type else None


def rate_card_doc(spec: RateCardSpec) -> dict[str, Any]:
    """A rate card spec in the file's shape, with Decimals (for diffs)."""
    return {
        "name": spec.name or None, "feature": spec.feature, "payment_term": spec.payment_term,
        "free_quantity": spec.free_quantity, "minimum_spend": spec.minimum_spend,
        "maximum_spend": spec.maximum_spend, "price": _price_doc(spec), "entitlement": _entitlement_doc(spec),
        **({"credit_grant": spec.credit_grant} if spec.credit_grant else {}),
    }


def plan_changes(old: PlanState, new: PlanState) -> list[str]:
    """What differs between two versions, e.g. ``rate card ai-token: price.unit_amount 0.00002 -> 0.00003``."""
    changes = [
        change(name, getattr(old, name), getattr(new, name))
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


def _draft_change(entry: PlanEntry, draft: Plan, lines: list[str]) -> Plan | None:
    """The draft in progress, updated in place when it differs; None when there is nothing to do."""
    publish = entry.status == "published"
    draft_state = plan_state(draft)
    unchanged = same_plan(draft_state, entry.state)
    if unchanged and not publish:
        return None
    changes = [] if unchanged else plan_changes(draft_state, entry.state) or ["entitlement config changed"]
    detail = f" ({'; '.join(changes)})" if changes else ""
    verb = ("update and publish" if changes else "publish") if publish else "update"
    lines.append(f"{verb} draft plan {entry.key} v{draft.version}{detail}")
    return draft if unchanged else _plan_write(entry, draft)


def _version_add(entry: PlanEntry, versions: list[Plan], published: Plan | None,
                 published_state: PlanState | None, lines: list[str]) -> Plan:
    """A new version after the latest, described against the published one (else the latest)."""
    base = published or versions[0]
    changes = plan_changes(published_state or plan_state(base), entry.state)
    if published is None:
        changes.append(f"v{base.version} is {base.status}")
    changes = changes or ["entitlement config changed"]
    draft = "" if entry.status == "published" else "draft "
    lines.append(f"new {draft}version {versions[0].version + 1} of plan {entry.key} ({'; '.join(changes)})")
    return _plan_write(entry, None)


def _plan_change(entry: PlanEntry, lines: list[str]) -> Plan | None:
    """Write the version the entry describes (one line in ``lines``) and return it, or None when the database
    already has it."""
    versions = list(Plan.objects.filter(key=entry.key).order_by("-version"))
    if not versions:
        lines.append(f"create {'' if entry.status == 'published' else 'draft '}plan {entry.key} v1")
        return _plan_write(entry, None)
    published = next((p for p in versions if p.status == Plan.Status.PUBLISHED), None)
    published_state = plan_state(published) if published is not None else None
    same_as_published = published_state is not None and same_plan(published_state, entry.state)
    if same_as_published and entry.status == "published":
        return None  # the published version is what the file says (a draft in progress is left alone)
    draft = next((p for p in versions if p.status == Plan.Status.DRAFT), None)
    if draft is not None:
        return _draft_change(entry, draft, lines)
    if same_as_published:
        return None  # a draft entry equal to the published version adds nothing
    return _version_add(entry, versions, published, published_state, lines)


def _plan_apply(problems: Problems, entry: PlanEntry, lines: list[str]) -> None:
    try:
        plan = _plan_change(entry, lines)
        if plan is not None and entry.status == "published":
            plan_publish(plan=plan)
    except PlanError as exc:
        raise problems.refused(entry.where, exc) from exc


def _cost_apply(entry: CostEntry, lines: list[str]) -> None:
    current = ModelCost.objects.filter(provider=entry.provider, model=entry.model,
                                       token_type=entry.token_type).first()
    label = f"cost {entry.provider}/{entry.model} {entry.token_type}"
    wanted = {"cost_per_token": entry.cost_per_token, "currency": entry.currency, "source": entry.source}
    if current is None:
        lines.append(f"create {label}")
        ModelCost.objects.create(provider=entry.provider, model=entry.model, token_type=entry.token_type, **wanted)
        return
    changed = {name: value for name, value in wanted.items() if getattr(current, name) != value}
    if changed:
        def shown(value: Any) -> Any:
            return decimal_text(value) if isinstance(value, Decimal) else value

        lines.append(f"update {label}: " + ", ".join(f"{name} {shown(getattr(current, name))} -> {shown(value)}"
                                                     for name, value in changed.items()))
        for name, value in changed.items():
            setattr(current, name, value)
        current.save()


def catalog_apply(*, problems: Problems, spec: CatalogSpec, lines: list[str]) -> None:
    """Create or change what differs, in dependency order; the caller holds the transaction."""
    for cost in spec.costs:
        _cost_apply(cost, lines)
    for meter in spec.meters:
        _meter_apply(problems, meter, lines)
    for feature in spec.features:
        _feature_apply(problems, feature, lines)
    for plan in spec.plans:
        _plan_apply(problems, plan, lines)


# ----------------------------------------------------------------------------------------------------------- dump


def meter_doc(meter: Meter) -> dict[str, Any]:
    doc = without_empty({
        "slug": meter.slug, "name": meter.name, "description": meter.description, "event_type": meter.event_type,
        "aggregation": meter.aggregation, "value_property": meter.value_property,
        "group_by": sorted_json(meter.group_by),
    }, optional=("description", "value_property", "group_by"))
    if meter.value_absent != Meter.ValueAbsent.INVALID:  # the default is left out, like an empty field
        doc = {**{k: v for k, v in doc.items() if k != "group_by"}, "value_absent": meter.value_absent,
               **({"group_by": doc["group_by"]} if "group_by" in doc else {})}
    return doc


def feature_doc(feature: Feature) -> dict[str, Any]:
    return without_empty({
        "key": feature.key, "name": feature.name, "meter": feature.meter.slug if feature.meter else None,
        "filters": sorted_json(feature.meter_group_by_filters),
    }, optional=("meter", "filters"))


def plan_doc(plan: Plan) -> dict[str, Any]:
    rate_cards = [rate_card_json(rc) for rc in plan.rate_cards.select_related("feature")
                  .prefetch_related("tiers", "price_rows")]
    for card in rate_cards:
        if card.get("entitlement") and "config" in card["entitlement"]:
            card["entitlement"]["config"] = sorted_json(card["entitlement"]["config"])
    return without_empty({
        "key": plan.key, "name": plan.name, "description": plan.description, "currency": plan.currency,
        "billing_cadence": plan.billing_cadence, "status": "draft" if plan.status == Plan.Status.DRAFT else None,
        "rate_cards": rate_cards,
    }, optional=("description", "status"))


def catalog_dump() -> dict[str, list[dict[str, Any]]]:
    """Meters, features and the latest version of each plan that is published or a draft (a plan whose
    versions are all archived is left out: applying it would publish it again)."""
    latest: dict[str, Plan] = {}
    for plan in Plan.objects.order_by("key", "-version"):
        latest.setdefault(plan.key, plan)
    document: dict[str, list[dict[str, Any]]] = {
        "meters": [meter_doc(m) for m in Meter.objects.order_by("slug")],
        "features": [feature_doc(f) for f in Feature.objects.select_related("meter").order_by("key")],
        "plans": [plan_doc(p) for p in latest.values() if p.status != Plan.Status.ARCHIVED],
    }
    costs = [cost_doc(c) for c in ModelCost.objects.order_by("provider", "model", "token_type")]
    if costs:  # the cost table (what models cost us; margins), apart from prices
        document["costs"] = costs
    return document


def cost_doc(cost: ModelCost) -> dict[str, Any]:
    return without_empty({
        "provider": cost.provider, "model": cost.model, "token_type": cost.token_type,
        "cost_per_token": decimal_text(cost.cost_per_token), "currency": cost.currency, "source": cost.source,
    }, optional=("source",))
