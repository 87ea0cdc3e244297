"""Meters, features, plans and rate cards, through the real services."""

from __future__ import annotations

from decimal import Decimal

from catalog.models import Feature, Plan
from catalog.services.features import feature_create
from catalog.services.plans import PriceRowSpec, RateCardSpec, TierSpec, plan_create, plan_publish
from metering.models import Meter
from metering.services.meters import meter_create

__all__ = [
    "D", "tokens_meter", "ai_token_feature", "sso_feature", "token_plan", "cent_plan", "platform_fee", "quota",
    "graduated_out", "llm_tokens_feature", "unit_row", "llm_table", "llm_plan",
]

D = Decimal


def tokens_meter() -> Meter:
    existing = Meter.objects.filter(slug="llm_tokens").first()
    return existing or meter_create(slug="llm_tokens", name="AI Gateway Tokens", event_type="kong.llm_request",
                                    aggregation="SUM", value_property="$.tokens",
                                    group_by={"model": "$.model", "provider": "$.provider", "type": "$.type"})


def ai_token_feature(key: str = "ai-token", kind: str = "request") -> Feature:
    existing = Feature.objects.filter(key=key).first()
    return existing or feature_create(key=key, name=key, meter=tokens_meter(),
                                      filters={"provider": "openai", "type": kind})


def sso_feature() -> Feature:
    return Feature.objects.filter(key="sso").first() or feature_create(key="sso", name="SSO")


def token_plan(*, key: str = "token", unit_amount: str = "0.00002", publish: bool = True, extra=None,
               currency: str = "USD", cadence: str = "P1M") -> Plan:
    """The seed plan: usage-based ai-token with a boolean entitlement (plus optional extra rate cards)."""
    ai_token_feature()
    rate_cards = [RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=D(unit_amount),
                               entitlement_type="boolean")]
    rate_cards += extra or []
    plan = plan_create(key=key, name=key.capitalize(), currency=currency, billing_cadence=cadence,
                       rate_cards=rate_cards)
    return plan_publish(plan=plan) if publish else plan


def cent_plan(key: str = "cents", **rate_card) -> Plan:
    """ai-token at 1 cent per token (free quantity and spend limits as given)."""
    ai_token_feature()
    spec = RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=D("0.01"), **rate_card)
    return plan_publish(plan=plan_create(key=key, name=key, currency="USD", rate_cards=[spec]))


def platform_fee(amount: str = "49.00") -> RateCardSpec:
    return RateCardSpec(key="platform", name="Platform fee", price_type="flat", amount=D(amount),
                        payment_term="in_advance")


def quota(limit: str = "500000", soft: bool = False, period: str = "") -> RateCardSpec:
    return RateCardSpec(key="ai-quota", feature="ai-token", entitlement_type="metered", entitlement_limit=D(limit),
                        entitlement_soft=soft, entitlement_usage_period=period)


def graduated_out() -> RateCardSpec:
    ai_token_feature("ai-token-out", "response")
    return RateCardSpec(key="ai-token-out", feature="ai-token-out", price_type="graduated", free_quantity=D(1000),
                        minimum_spend=D("5.00"),
                        tiers=[TierSpec(D(1_000_000), D("0.00001")), TierSpec(None, D("0.000008"), D("2.00"))])


def llm_tokens_feature(key: str = "llm-tokens") -> Feature:
    """The whole llm_tokens meter (no filters): what a dimensional rate card prices by model and type."""
    existing = Feature.objects.filter(key=key).first()
    return existing or feature_create(key=key, name="LLM tokens", meter=tokens_meter())


def unit_row(unit_amount: str, effective_from=None, **match: str) -> PriceRowSpec:
    return PriceRowSpec(match=match, price_type="unit", unit_amount=D(unit_amount), effective_from=effective_from)


def llm_table(*, default: str | None = None, **fields) -> RateCardSpec:
    """The issue's example table: gpt-4o input / output, gpt-4o-mini any type; ``default`` prices the rest."""
    llm_tokens_feature()
    rows = [unit_row("0.0000025", model="gpt-4o", type="request"), unit_row("0.00001", model="gpt-4o",
                                                                             type="response"),
            unit_row("0.00000015", model="gpt-4o-mini")]
    if default is not None:
        rows.append(PriceRowSpec(is_default=True, price_type="unit", unit_amount=D(default)))
    spec = RateCardSpec(key="llm", name="LLM tokens", feature="llm-tokens", price_type="dimensional",
                        dimensions=["model", "type"], rows=rows)
    for name, value in fields.items():
        setattr(spec, name, value)
    return spec


def llm_plan(key: str = "llm", **table) -> Plan:
    return plan_publish(plan=plan_create(key=key, name="LLM", currency="USD", rate_cards=[llm_table(**table)]))
