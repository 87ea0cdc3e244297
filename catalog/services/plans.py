"""Plan lifecycle: draft → published → archived, and new versions of published plans.

- A draft is edited freely (admin forms or :func:`plan_replace_rate_cards`).
- Publishing validates the whole plan (every rate card complete, tiers ascending, currency known), freezes
  it, and archives the previously published version of the same key (its subscriptions keep it).
- "Edit" on a published plan makes a new draft version (a copy), at most one draft per key.
- Archiving stops new subscriptions only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from ..charges import dimensional_price, rate_card_price
from ..dimensional import validate_dimensional
from ..models import Feature, Plan, PriceRow, PriceTier, RateCard
from ..rules import (
    CADENCES,
    clean_currency,
    credit_problems,
    currency_problem,
    key_problem,
    rate_card_problems,
    row_tiers,
    tiers_json,
)


class PlanError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class TierSpec:
    up_to: Decimal | None
    unit_amount: Decimal = Decimal(0)
    flat_amount: Decimal = Decimal(0)


@dataclass
class PriceRowSpec:
    """One row of a dimensional table as data: ``match`` (dimension → value; empty with ``is_default``), a usage
    price, and an optional ``effective_from`` (a scheduled version of the row)."""

    match: dict[str, str] = field(default_factory=dict)
    price_type: str = "unit"
    unit_amount: Decimal | None = None
    amount: Decimal | None = None
    quantity_per_package: Decimal | None = None
    tiers: list[TierSpec] = field(default_factory=list)
    effective_from: dt.datetime | None = None
    is_default: bool = False


@dataclass
class RateCardSpec:
    """A rate card as data (from YAML, the API or tests); the feature is named by key."""

    key: str
    name: str = ""
    feature: str | None = None
    price_type: str = ""
    amount: Decimal | None = None
    unit_amount: Decimal | None = None
    quantity_per_package: Decimal | None = None
    tiers: list[TierSpec] = field(default_factory=list)
    payment_term: str = RateCard.PaymentTerm.IN_ARREARS
    minimum_spend: Decimal | None = None
    maximum_spend: Decimal | None = None
    free_quantity: Decimal | None = None
    entitlement_type: str = ""
    entitlement_config: Any = None
    entitlement_limit: Decimal | None = None
    entitlement_soft: bool = False
    entitlement_usage_period: str = ""
    dimensions: list[str] = field(default_factory=list)
    rows: list[PriceRowSpec] = field(default_factory=list)
    entitlement_credits: str = ""
    credit_grant: dict | None = None


def plan_problems(plan: Plan) -> list[str]:
    """Why the plan cannot be published (empty when it can)."""
    problems: list[str] = []
    problems += [p for p in (key_problem(plan.key, "plan key"), currency_problem(plan.currency)) if p]
    if plan.billing_cadence not in CADENCES:
        problems.append(f"billing cadence must be one of {', '.join(CADENCES)}")
    rate_cards = list(plan.rate_cards.select_related("feature", "feature__meter")
                      .prefetch_related("tiers", "price_rows"))
    if not rate_cards:
        problems.append("a plan needs at least one rate card")
    for rate_card in rate_cards:
        problem = key_problem(rate_card.key, f"rate card key {rate_card.key!r}")
        if problem:
            problems.append(problem)
        try:
            price = rate_card_price(rate_card)
        except ValueError as exc:
            problems.append(f"rate card {rate_card.key}: {exc}")
            continue
        problems.extend(
            rate_card_problems(
                key=rate_card.key,
                price_type=rate_card.price_type,
                price=price,
                has_feature=rate_card.feature_id is not None,
                feature_metered=bool(rate_card.feature is not None and rate_card.feature.meter_id),
                payment_term=rate_card.payment_term,
                minimum_spend=rate_card.minimum_spend,
                maximum_spend=rate_card.maximum_spend,
                free_quantity=rate_card.free_quantity,
                entitlement_type=rate_card.entitlement_type,
                entitlement_limit=rate_card.entitlement_limit,
                entitlement_config=rate_card.entitlement_config,
            )
        )
        if rate_card.price_type == RateCard.PriceType.DIMENSIONAL and rate_card.feature is not None:
            meter = rate_card.feature.meter
            known = set(meter.group_by or {}) if meter is not None else set()
            for name in rate_card.dimensions or []:
                if name not in known:
                    problems.append(f'rate card {rate_card.key}: dimension "{name}" is not a group-by of the meter '
                                    f"(known: {', '.join(sorted(known)) or 'none'})")
        problems.extend(credit_problems(key=rate_card.key, entitlement_type=rate_card.entitlement_type,
                                        entitlement_credits=rate_card.entitlement_credits,
                                        credit_grant=rate_card.credit_grant, currency=plan.currency))
    return problems


def _next_version(key: str) -> int:
    return (Plan.objects.filter(key=key).aggregate(top=Max("version"))["top"] or 0) + 1


@transaction.atomic
def plan_create(
    *,
    key: str,
    name: str,
    currency: str,
    billing_cadence: str = Plan.Cadence.MONTHLY,
    description: str = "",
    rate_cards: list[RateCardSpec] | None = None,
) -> Plan:
    """A new draft: version 1 of a new key, or the next version of an existing one. The currency is stored
    upper-case (``usd`` → ``USD``); an unknown code is refused here, not only at publish."""
    currency = clean_currency(currency)  # type: ignore[assignment]  # a str, or refused just below
    problems = [p for p in (key_problem(key, "plan key"), currency_problem(currency)) if p]
    if billing_cadence not in CADENCES:
        problems.append(f"billing cadence must be one of {', '.join(CADENCES)}")
    if not name or not name.strip():
        problems.append("plan name is required")
    if Plan.objects.filter(key=key, status=Plan.Status.DRAFT).exists():
        problems.append(f"plan {key} already has a draft version; edit that one")
    if problems:
        raise PlanError(problems)
    plan = Plan.objects.create(
        key=key,
        version=_next_version(key),
        name=name.strip(),
        currency=currency,
        billing_cadence=billing_cadence,
        description=description,
    )
    if rate_cards:
        plan_replace_rate_cards(plan=plan, rate_cards=rate_cards)
    return plan


def _require_draft(plan: Plan) -> Plan:
    plan = Plan.objects.select_for_update().get(pk=plan.pk)
    if plan.status != Plan.Status.DRAFT:
        raise PlanError([f"{plan} is {plan.status}: published versions never change; make a new version"])
    return plan


@transaction.atomic
def plan_update_draft(*, plan: Plan, name: str, currency: str, billing_cadence: str, description: str = "") -> Plan:
    plan = _require_draft(plan)
    currency = clean_currency(currency)  # type: ignore[assignment]  # a str, or refused just below
    problems = [p for p in (currency_problem(currency),) if p]
    if billing_cadence not in CADENCES:
        problems.append(f"billing cadence must be one of {', '.join(CADENCES)}")
    if problems:
        raise PlanError(problems)
    plan.name, plan.currency, plan.billing_cadence, plan.description = name, currency, billing_cadence, description
    plan.save()
    return plan


@transaction.atomic
def plan_replace_rate_cards(*, plan: Plan, rate_cards: list[RateCardSpec]) -> Plan:
    """Set a draft's rate cards to exactly these (in this order)."""
    plan = _require_draft(plan)
    keys = [spec.key for spec in rate_cards]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise PlanError([f"rate card key {k!r} appears twice" for k in duplicates])
    features = {f.key: f for f in Feature.objects.filter(key__in=[s.feature for s in rate_cards if s.feature])}
    unknown = sorted({s.feature for s in rate_cards if s.feature and s.feature not in features})
    if unknown:
        raise PlanError([f"unknown feature {k!r}" for k in unknown])
    plan.rate_cards.all().delete()
    for position, spec in enumerate(rate_cards):
        rate_card = RateCard.objects.create(
            plan=plan,
            position=position,
            key=spec.key,
            name=spec.name,
            feature=features.get(spec.feature or ""),
            price_type=spec.price_type,
            amount=spec.amount,
            unit_amount=spec.unit_amount,
            quantity_per_package=spec.quantity_per_package,
            payment_term=spec.payment_term,
            minimum_spend=spec.minimum_spend,
            maximum_spend=spec.maximum_spend,
            free_quantity=spec.free_quantity,
            entitlement_type=spec.entitlement_type,
            entitlement_config=spec.entitlement_config,
            entitlement_limit=spec.entitlement_limit,
            entitlement_soft=spec.entitlement_soft,
            entitlement_usage_period=spec.entitlement_usage_period,
            dimensions=list(spec.dimensions),
            entitlement_credits=spec.entitlement_credits,
            credit_grant=spec.credit_grant,
        )
        PriceRow.objects.bulk_create([price_row_model(rate_card, i, row) for i, row in enumerate(spec.rows)])
        PriceTier.objects.bulk_create(
            [
                PriceTier(
                    rate_card=rate_card, position=i, up_to=t.up_to, unit_amount=t.unit_amount, flat_amount=t.flat_amount
                )
                for i, t in enumerate(spec.tiers)
            ]
        )
    return plan


@transaction.atomic
def plan_publish(*, plan: Plan) -> Plan:
    plan = _require_draft(plan)
    problems = plan_problems(plan)
    if problems:
        raise PlanError(problems)
    now = timezone.now()
    Plan.objects.filter(key=plan.key, status=Plan.Status.PUBLISHED).update(status=Plan.Status.ARCHIVED, archived_at=now)
    plan.status, plan.published_at = Plan.Status.PUBLISHED, now
    plan.save(update_fields=["status", "published_at"])
    return plan


@transaction.atomic
def plan_archive(*, plan: Plan) -> Plan:
    plan = Plan.objects.select_for_update().get(pk=plan.pk)
    if plan.status != Plan.Status.PUBLISHED:
        raise PlanError([f"only a published plan can be archived; {plan} is {plan.status}"])
    plan.status, plan.archived_at = Plan.Status.ARCHIVED, timezone.now()
    plan.save(update_fields=["status", "archived_at"])
    return plan


def rate_card_spec(rate_card: RateCard) -> RateCardSpec:
    return RateCardSpec(
        key=rate_card.key,
        name=rate_card.name,
        feature=rate_card.feature.key if rate_card.feature is not None else None,
        price_type=rate_card.price_type,
        amount=rate_card.amount,
        unit_amount=rate_card.unit_amount,
        quantity_per_package=rate_card.quantity_per_package,
        tiers=[TierSpec(t.up_to, t.unit_amount, t.flat_amount) for t in rate_card.tiers.all()],
        payment_term=rate_card.payment_term,
        minimum_spend=rate_card.minimum_spend,
        maximum_spend=rate_card.maximum_spend,
        free_quantity=rate_card.free_quantity,
        entitlement_type=rate_card.entitlement_type,
        entitlement_config=rate_card.entitlement_config,
        entitlement_limit=rate_card.entitlement_limit,
        entitlement_soft=rate_card.entitlement_soft,
        entitlement_usage_period=rate_card.entitlement_usage_period,
        dimensions=list(rate_card.dimensions or []),
        rows=[price_row_spec(row) for row in rate_card.price_rows.all()],
        entitlement_credits=rate_card.entitlement_credits,
        credit_grant=rate_card.credit_grant,
    )


def price_row_model(rate_card: RateCard, position: int, spec: PriceRowSpec) -> PriceRow:
    return PriceRow(
        rate_card=rate_card, position=position, match=dict(spec.match), is_default=spec.is_default,
        effective_from=spec.effective_from, price_type=spec.price_type, unit_amount=spec.unit_amount,
        amount=spec.amount, quantity_per_package=spec.quantity_per_package,
        tiers=tiers_json([(t.up_to, t.unit_amount, t.flat_amount) for t in spec.tiers]))


def price_row_spec(row: PriceRow) -> PriceRowSpec:
    from_json = row_tiers(row.tiers)
    return PriceRowSpec(
        match=dict(row.match or {}), price_type=row.price_type, unit_amount=row.unit_amount, amount=row.amount,
        quantity_per_package=row.quantity_per_package, tiers=[TierSpec(*t) for t in from_json],
        effective_from=row.effective_from, is_default=row.is_default)


@transaction.atomic
def price_rows_schedule(*, rate_card: RateCard, rows: list[PriceRowSpec], now: dt.datetime) -> list[PriceRow]:
    """Add scheduled versions of rows to a dimensional table, also of a published plan version: each must take
    effect after ``now`` (what was billed, or is being used now, never changes). Appended after the table's rows."""
    rate_card = RateCard.objects.select_related("plan").select_for_update().get(pk=rate_card.pk)
    problems = []
    if rate_card.price_type != RateCard.PriceType.DIMENSIONAL:
        problems.append(f"rate card {rate_card.key} does not have a dimensional price")
    for index, spec in enumerate(rows, start=1):
        if spec.effective_from is None or spec.effective_from <= now:
            problems.append(f"scheduled row {index}: effective_from must be in the future")
    if problems:
        raise PlanError(problems)
    start = rate_card.price_rows.count()
    created = PriceRow.objects.bulk_create([price_row_model(rate_card, start + i, s) for i, s in enumerate(rows)])
    rate_card = RateCard.objects.prefetch_related("price_rows").get(pk=rate_card.pk)
    table_problems = validate_dimensional(dimensional_price(rate_card))
    if table_problems:
        raise PlanError([f"rate card {rate_card.key}: {p}" for p in table_problems])
    return created


@transaction.atomic
def plan_new_version(*, plan: Plan) -> Plan:
    """ "Edit" on a published or archived plan: a draft copy as the next version (or the existing draft)."""
    existing = Plan.objects.filter(key=plan.key, status=Plan.Status.DRAFT).first()
    if existing is not None:
        return existing
    rate_cards = [rate_card_spec(rc) for rc in plan.rate_cards.select_related("feature")
                  .prefetch_related("tiers", "price_rows")]
    draft = Plan.objects.create(
        key=plan.key,
        version=_next_version(plan.key),
        name=plan.name,
        currency=plan.currency,
        billing_cadence=plan.billing_cadence,
        description=plan.description,
    )
    return plan_replace_rate_cards(plan=draft, rate_cards=rate_cards)
