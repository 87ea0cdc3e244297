"""Companion meters of llm_tokens on invoices: cache reads priced per model by their own dimensional rate card, beside
the llm table; an event without the field adds nothing, so it is never reported as unpriced."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from catalog.services.features import feature_create
from catalog.services.plans import PriceRowSpec, RateCardSpec, plan_create, plan_publish
from customers.services.subscriptions import subscription_create
from invoicing.models import InvoiceLine
from invoicing.services.close import close_cycles
from metering.models import Meter
from metering.services.meters import meter_create_from_preset
from tests.builders import D, bearer, ingest, kong_air, llm_event, llm_table

pytestmark = pytest.mark.django_db


def _plan():
    meter_create_from_preset(preset="llm_tokens")
    feature_create(key="llm-cache-read-tokens", name="LLM cache reads",
                   meter=Meter.objects.get(slug="llm_cache_read_tokens"))
    cache = RateCardSpec(key="llm-cache-read", name="LLM cache reads", feature="llm-cache-read-tokens",
                         price_type="dimensional", dimensions=["model"],
                         rows=[PriceRowSpec(match={"model": "gpt-4o"}, price_type="unit", unit_amount=D("0.0000015"))])
    return plan_publish(plan=plan_create(key="ai", name="AI", currency="USD", rate_cards=[llm_table(), cache]))


def test_cache_reads_are_billed_per_model_and_absent_fields_are_not_unpriced(api, read_token):
    now = timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    subscription_create(customer=kong_air(), plan=_plan(), start=start, billing_anchor="calendar")
    ingest([llm_event(event_id="cached", tokens=1_000_000, model="gpt-4o", time=None, cache_read_tokens=1_000_000),
            llm_event(event_id="plain", tokens=2_000_000, model="gpt-4o-mini", time=None),
            llm_event(event_id="mini-cached", tokens=10, model="gpt-4o-mini", time=None, cache_read_tokens=7)])

    items = {i["event"]["id"]: i["validationError"] for i in api.get("/api/v1/events", **bearer(read_token)).json()}
    assert items["cached"] is None
    assert items["plain"] is None  # no cache_read_tokens: nothing for llm-cache-read to price
    assert items["mini-cached"] == "no price for model=gpt-4o-mini (rate card llm-cache-read of plan ai)"

    close_cycles(now=(start + dt.timedelta(days=40)).replace(day=1) + dt.timedelta(hours=2))
    lines = {(line.rate_card_key, line.price_part): line for line in InvoiceLine.objects.filter(kind="usage")}
    cache = lines[("llm-cache-read", "model=gpt-4o")]
    assert (cache.quantity, cache.unit_price, cache.amount) == (D(1_000_000), D("0.0000015"), 150)
    assert cache.dimensions == {"model": "gpt-4o"}
    assert cache.description.startswith("LLM cache reads — gpt-4o: 1,000,000 cache read tokens × $0.0000015")
    assert lines[("llm", "model=gpt-4o,type=request")].amount == 250  # the llm table bills tokens as before
    assert not any(key == "llm-cache-read" and part != "model=gpt-4o" for key, part in lines)
