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
from metering.services.meters import meter_create
from metering.services.tokens import api_token_create

DEMO_TOKEN_NAME = "demo gateway (make run)"  # noqa: S105 - a label, not a secret


def demo_token_file() -> Path:
    return settings.VAR_DIR / "demo_api_token"


@transaction.atomic
def demo_load(*, now: dt.datetime | None = None) -> list[str]:
    """Create what is missing of the seed flow; returns what was created (empty when all was there)."""
    now = now or timezone.now()
    created: list[str] = []
    meter = Meter.objects.filter(slug="llm_tokens").first()
    if meter is None:
        meter = meter_create(**KONG_PRESETS["llm_tokens"])
        created.append("meter llm_tokens")
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


def _ai_gateway(meter: Meter, now: dt.datetime) -> list[str]:
    """The AI gateway priced per model and token type in ONE rate card: a dimensional table filled from the
    genai-prices data at cost + 20% (the same data fills the cost table, for margins), and a customer on it."""
    created: list[str] = []
    if not Feature.objects.filter(key="llm-tokens").exists():
        feature_create(key="llm-tokens", name="LLM tokens", meter=meter)
        created.append("feature llm-tokens (the whole llm_tokens meter)")
    prices = [price for provider, models in AI_GATEWAY_MODELS.items()
              for price in provider_prices(providers=[provider], models=models, at=now)
              if price.token_type in ("request", "response")]
    if not ModelCost.objects.exists():
        llm_prices_import(plan=import_preview(prices=prices), now=now)
        created.append(f"cost table: {len(prices)} provider prices from genai-prices")
    plan = Plan.objects.filter(key="ai-gateway", status=Plan.Status.PUBLISHED).first()
    if plan is None and not Plan.objects.filter(key="ai-gateway").exists():
        rows = [PriceRowSpec(match={"model": price.model, "type": price.token_type}, price_type="unit",
                             unit_amount=with_markup(price.per_token, AI_GATEWAY_MARKUP)) for price in prices]
        plan = plan_publish(plan=plan_create(key="ai-gateway", name="AI gateway", currency="USD",
                                             billing_cadence="P1M", rate_cards=[RateCardSpec(
                                                 key="llm", name="LLM tokens", feature="llm-tokens",
                                                 price_type="dimensional", dimensions=["model", "type"],
                                                 rows=rows)]))
        created.append(f"plan AI gateway (v1, published): one rate card priced per model and token type "
                       f"({len(rows)} rows, cost + {AI_GATEWAY_MARKUP}%)")
    if plan is not None and not Customer.objects.filter(key="acme").exists():
        customer = customer_create(key="acme", name="Acme AI", currency="USD", email="billing@acme.example")
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        attribution_add(customer=customer, subject="acme", start=month_start)
        subscription_create(customer=customer, plan=plan, start=month_start, billing_anchor="calendar",
                            actor="demo")
        created.append("customer Acme AI including consumer acme, subscribed to AI gateway")
    return created
