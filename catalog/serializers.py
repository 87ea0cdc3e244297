"""JSON shapes of the catalog's read API and of ``billing_dump`` (plain functions, no DRF serializers)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from common.time import format_rfc3339

from .models import Feature, Plan, PriceRow, RateCard
from .rules import row_tiers


def decimal_text(value: Decimal | None) -> str | None:
    """Exact decimal as a string without exponent or trailing zeros: ``0.000003``, ``49``."""
    if value is None:
        return None
    return format(value.normalize(), "f")


def feature_json(feature: Feature) -> dict[str, Any]:
    return {
        "id": str(feature.pk),
        "key": feature.key,
        "name": feature.name,
        "meterSlug": feature.meter.slug if feature.meter is not None else None,
        "meterGroupByFilters": feature.meter_group_by_filters or {},
        "createdAt": format_rfc3339(feature.created_at),
        "updatedAt": format_rfc3339(feature.updated_at),
    }


def row_price_json(row: PriceRow) -> dict[str, Any]:
    kind = row.price_type
    if kind == "unit":
        return {"type": kind, "unit_amount": decimal_text(row.unit_amount)}
    if kind == "package":
        return {"type": kind, "amount": decimal_text(row.amount),
                "quantity_per_package": decimal_text(row.quantity_per_package)}
    tiers = []
    for up_to, unit, flat in row_tiers(row.tiers):
        item: dict[str, Any] = {"up_to": decimal_text(up_to), "unit_amount": decimal_text(unit)}
        if flat:
            item["flat_amount"] = decimal_text(flat)
        tiers.append(item)
    return {"type": kind, "tiers": tiers}


def dimensional_json(rate_card: RateCard) -> dict[str, Any]:
    """``{type: dimensional, dimensions, rows: [{match, price, effective_from?}], default}``: the default
    without a date is ``default``; a scheduled version of the default is a row with ``default: true``."""
    rows: list[dict[str, Any]] = []
    default = None
    for row in rate_card.price_rows.all():
        if row.is_default and row.effective_from is None:
            default = row_price_json(row)
            continue
        item: dict[str, Any] = {"default": True} if row.is_default else {"match": dict(sorted(row.match.items()))}
        item["price"] = row_price_json(row)
        if row.effective_from is not None:
            item["effective_from"] = format_rfc3339(row.effective_from)
        rows.append(item)
    return {"type": "dimensional", "dimensions": list(rate_card.dimensions or []), "rows": rows, "default": default}


def price_json(rate_card: RateCard) -> dict[str, Any] | None:
    kind = rate_card.price_type
    if not kind:
        return None
    if kind == RateCard.PriceType.DIMENSIONAL:
        return dimensional_json(rate_card)
    if kind == RateCard.PriceType.FLAT:
        return {"type": kind, "amount": decimal_text(rate_card.amount)}
    if kind == RateCard.PriceType.UNIT:
        return {"type": kind, "unit_amount": decimal_text(rate_card.unit_amount)}
    if kind == RateCard.PriceType.PACKAGE:
        return {
            "type": kind,
            "amount": decimal_text(rate_card.amount),
            "quantity_per_package": decimal_text(rate_card.quantity_per_package),
        }
    tiers = []
    for tier in rate_card.tiers.all():
        item: dict[str, Any] = {"up_to": decimal_text(tier.up_to), "unit_amount": decimal_text(tier.unit_amount)}
        if tier.flat_amount:
            item["flat_amount"] = decimal_text(tier.flat_amount)
        tiers.append(item)
    return {"type": kind, "tiers": tiers}


def entitlement_json(rate_card: RateCard) -> dict[str, Any] | None:
    kind = rate_card.entitlement_type
    if not kind:
        return None
    if kind == RateCard.EntitlementType.BOOLEAN:
        return {"type": kind}
    if kind == RateCard.EntitlementType.STATIC:
        return {"type": kind, "config": rate_card.entitlement_config}
    body: dict[str, Any] = {
        "type": kind,
        "limit": decimal_text(rate_card.entitlement_limit),
        "soft": rate_card.entitlement_soft,
    }
    if rate_card.entitlement_usage_period:
        body["usage_period"] = rate_card.entitlement_usage_period
    if rate_card.entitlement_credits:
        body["credits"] = rate_card.entitlement_credits
    return body


def rate_card_json(rate_card: RateCard) -> dict[str, Any]:
    body: dict[str, Any] = {"key": rate_card.key}
    if rate_card.name:
        body["name"] = rate_card.name
    if rate_card.feature is not None:
        body["feature"] = rate_card.feature.key
    if rate_card.payment_term != RateCard.PaymentTerm.IN_ARREARS:
        body["payment_term"] = rate_card.payment_term
    for name in ("free_quantity", "minimum_spend", "maximum_spend"):
        value = getattr(rate_card, name)
        if value is not None:
            body[name] = decimal_text(value)
    body["price"] = price_json(rate_card)
    entitlement = entitlement_json(rate_card)
    if entitlement is not None:
        body["entitlement"] = entitlement
    if rate_card.credit_grant:
        body["credit_grant"] = rate_card.credit_grant
    return body


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "id": str(plan.pk),
        "key": plan.key,
        "version": plan.version,
        "name": plan.name,
        "description": plan.description or None,
        "currency": plan.currency,
        "billingCadence": plan.billing_cadence,
        "status": plan.status,
        "publishedAt": format_rfc3339(plan.published_at) if plan.published_at else None,
        "archivedAt": format_rfc3339(plan.archived_at) if plan.archived_at else None,
        "rateCards": [rate_card_json(rc) for rc in plan.rate_cards.all()],
    }
