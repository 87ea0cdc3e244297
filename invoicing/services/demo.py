"""The seed tutorial as demo data (idempotent): what `make run` loads."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog.models import Feature, ModelCost, Plan
from catalog.services.features import feature_create
from catalog.services.llm_prices import import_preview, llm_prices_import, provider_prices, with_markup
from catalog.services.plans import PriceRowSpec, RateCardSpec, plan_create, plan_publish
from customers.models import Customer
from customers.services.customers import attribution_add, customer_create
from customers.services.subscriptions import subscription_create
from metering.meter_rules import KONG_PRESETS
from metering.models import ApiToken, Meter
from metering.services.meters import meter_create_from_preset, preset_missing
from metering.services.tokens import api_token_create

DEMO_TOKEN_NAME = "demo gateway (make run)"  # noqa: S105 - a label, not a secret


def demo_token_file() -> Path:
    return settings.VAR_DIR / "demo_api_token"


@transaction.atomic
def demo_load(*, now: dt.datetime | None = None) -> list[str]:
    """Create what is missing of the seed flow; returns what was created (empty when all was there)."""
    now = now or timezone.now()
    created: list[str] = []
    if preset_missing("llm_tokens"):  # llm_tokens and its companions (cache read / write, reasoning tokens)
        created += [f"meter {m.slug}" for m in meter_create_from_preset(preset="llm_tokens")]
    meter = Meter.objects.get(slug=KONG_PRESETS["llm_tokens"]["slug"])
    if not Feature.objects.filter(key="ai-token").exists():
        feature_create(key="ai-token", name="ai-token", meter=meter, filters={"provider": "openai", "type": "request"})
        created.append("feature ai-token")
    plan = Plan.objects.filter(key="token", status=Plan.Status.PUBLISHED).first()
    if plan is None and not Plan.objects.filter(key="token").exists():
        plan = plan_publish(plan=plan_create(key="token", name="Token", currency="USD", billing_cadence="P1M",
                                             rate_cards=[RateCardSpec(key="ai-token", name="ai-token",
                                                                      feature="ai-token", price_type="unit",
                                                                      unit_amount=Decimal(1),
                                                                      entitlement_type="boolean")]))
        created.append("plan Token (v1, published)")
    customer = Customer.objects.filter(key="kong-air").first()
    if customer is None:
        customer = customer_create(key="kong-air", name="Kong Air", currency="USD", email="billing@kong-air.example")
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        attribution_add(customer=customer, subject="kong-air", start=month_start)
        created.append("customer Kong Air including consumer kong-air")
        if plan is not None:
            subscription_create(customer=customer, plan=plan, start=month_start, billing_anchor="calendar",
                                actor="demo")
            created.append("subscription of Kong Air to Token")
    created += _ai_gateway(meter, now)
    if not ApiToken.objects.filter(name=DEMO_TOKEN_NAME, revoked_at__isnull=True).exists():
        _, plain = api_token_create(name=DEMO_TOKEN_NAME, scopes=["ingest", "read"])
        path = demo_token_file()
        path.write_text(plain + "\n")
        path.chmod(0o600)
        created.append(f"API token (ingest, read), saved to {path}")
    return created


AI_GATEWAY_MODELS = {"openai": ["gpt-4o", "gpt-4o-mini"], "anthropic": ["claude-3-5-sonnet"]}
AI_GATEWAY_MARKUP = Decimal(20)  # percent over provider cost
# Rate cards on companion meters of llm_tokens: (rate card, name, feature, meter, genai-prices token type).
AI_GATEWAY_COMPANIONS = (
    ("llm-cache-read", "LLM cache reads", "llm-cache-read-tokens", "llm_cache_read_tokens", "cache_read"),
    ("llm-cache-write", "LLM cache writes", "llm-cache-write-tokens", "llm_cache_write_tokens", "cache_write"),
)


def _ai_gateway(meter: Meter, now: dt.datetime) -> list[str]:
    """The AI gateway priced per model and token type in ONE rate card: a dimensional table filled from the
    genai-prices data at cost + 20% (the same data fills the cost table, for margins), and a customer on it."""
    created: list[str] = []
    if not Feature.objects.filter(key="llm-tokens").exists():
        feature_create(key="llm-tokens", name="LLM tokens", meter=meter)
        created.append("feature llm-tokens (the whole llm_tokens meter)")
    for _, name, feature_key, meter_slug, _ in AI_GATEWAY_COMPANIONS:
        if not Feature.objects.filter(key=feature_key).exists():
            feature_create(key=feature_key, name=name, meter=Meter.objects.get(slug=meter_slug))
            created.append(f"feature {feature_key} (the whole {meter_slug} meter)")
    every_price = [price for provider, models in AI_GATEWAY_MODELS.items()
                   for price in provider_prices(providers=[provider], models=models, at=now)]
    prices = [price for price in every_price if price.token_type in ("request", "response")]
    if not ModelCost.objects.exists():
        llm_prices_import(plan=import_preview(prices=every_price), now=now)
        created.append(f"cost table: {len(every_price)} provider prices from genai-prices")
    plan = Plan.objects.filter(key="ai-gateway", status=Plan.Status.PUBLISHED).first()
    if plan is None and not Plan.objects.filter(key="ai-gateway").exists():
        rows = [PriceRowSpec(match={"model": price.model, "type": price.token_type}, price_type="unit",
                             unit_amount=with_markup(price.per_token, AI_GATEWAY_MARKUP)) for price in prices]
        rate_cards = [RateCardSpec(key="llm", name="LLM tokens", feature="llm-tokens", price_type="dimensional",
                                   dimensions=["model", "type"], rows=rows)]
        for key, name, feature_key, _, token_type in AI_GATEWAY_COMPANIONS:  # priced per model, on top of `llm`
            rate_cards.append(RateCardSpec(
                key=key, name=name, feature=feature_key, price_type="dimensional", dimensions=["model"],
                rows=[PriceRowSpec(match={"model": price.model}, price_type="unit",
                                   unit_amount=with_markup(price.per_token, AI_GATEWAY_MARKUP))
                      for price in every_price if price.token_type == token_type]))
        plan = plan_publish(plan=plan_create(key="ai-gateway", name="AI gateway", currency="USD",
                                             billing_cadence="P1M", rate_cards=rate_cards))
        created.append(f"plan AI gateway (v1, published): one rate card priced per model and token type "
                       f"({len(rows)} rows, cost + {AI_GATEWAY_MARKUP}%), and cache reads and writes per model")
    if plan is not None and not Customer.objects.filter(key="acme").exists():
        customer = customer_create(key="acme", name="Acme AI", currency="USD", email="billing@acme.example")
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        attribution_add(customer=customer, subject="acme", start=month_start)
        subscription_create(customer=customer, plan=plan, start=month_start, billing_anchor="calendar",
                            actor="demo")
        created.append("customer Acme AI including consumer acme, subscribed to AI gateway")
    return created
