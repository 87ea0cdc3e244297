"""Margins of per-model prices against hand-computed figures: revenue billed and previewed, provider cost from the
cost table, margin and margin %, models without a cost; the API and the admin page."""

from __future__ import annotations

import pytest

from catalog.models import ModelCost
from customers.services.subscriptions import subscription_create
from invoicing.selectors.margins import margin_report
from invoicing.services.close import close_cycles
from tests.builders import D, bearer, ingest, kong_air, llm_plan, tokens, utc

pytestmark = pytest.mark.django_db

FEB, MAR = utc(2026, 2, 1), utc(2026, 3, 1)


@pytest.fixture
def february():
    subscription_create(customer=kong_air(), plan=llm_plan(), start=FEB, billing_anchor="calendar")
    ingest([tokens(1_000_000, utc(2026, 2, 3), "request", model="gpt-4o"),  # 2.50 at 0.0000025
            tokens(200_000, utc(2026, 2, 4), "response", model="gpt-4o"),  # 2.00 at 0.00001
            tokens(2_000_000, utc(2026, 2, 5), "request", model="gpt-4o-mini"),  # 3,000,000 × 0.00000015 = 0.45
            tokens(1_000_000, utc(2026, 2, 6), "response", model="gpt-4o-mini")], now=utc(2026, 2, 10))
    for model, token_type, cost in (("gpt-4o", "request", "0.000002"), ("gpt-4o", "response", "0.000008"),
                                    ("gpt-4o-mini", "request", "0.0000001")):  # no cost for mini's output
        ModelCost.objects.create(provider="openai", model=model, token_type=token_type, cost_per_token=D(cost))


def test_margin_per_customer_and_model_against_hand_computed_figures(february):
    close_cycles(now=MAR + (utc(2026, 3, 1, 2) - MAR))
    rows = {r.model: r for r in margin_report(start=FEB, end=MAR, now=utc(2026, 4, 1))}
    gpt = rows["gpt-4o"]
    assert (gpt.customer, gpt.revenue_billed, gpt.revenue_previewed) == ("kong-air", 450, 0)
    assert gpt.cost == D("3.60")  # 1,000,000 × 0.000002 + 200,000 × 0.000008
    assert (gpt.margin, gpt.margin_percent, gpt.cost_missing) == (90, D("20.00"), set())
    mini = rows["gpt-4o-mini"]
    assert (mini.revenue_billed, mini.cost, mini.margin) == (45, D("0.20"), 25)
    assert mini.margin_percent == D("55.56") and mini.cost_missing == {"gpt-4o-mini/response"}
    (by_customer,) = margin_report(start=FEB, end=MAR, now=utc(2026, 4, 1), group_by="customer")
    assert (by_customer.model, by_customer.revenue, by_customer.cost, by_customer.margin) == (None, 495, D("3.80"),
                                                                                              115)


def test_the_running_period_counts_as_previewed(february):
    rows = {r.model: r for r in margin_report(start=FEB, end=MAR, now=utc(2026, 2, 20))}
    assert (rows["gpt-4o"].revenue_billed, rows["gpt-4o"].revenue_previewed, rows["gpt-4o"].cost) == (0, 450,
                                                                                                       D("3.60"))


def test_margins_api(api, read_token, february):
    close_cycles(now=utc(2026, 3, 1, 2))
    body = api.get("/api/v1/margins", {"from": "2026-02-01T00:00:00Z", "to": "2026-03-01T00:00:00Z",
                                       "groupBy": "model"}, **bearer(read_token)).json()
    rows = {row["model"]: row for row in body["data"]}
    assert rows["gpt-4o"] == {
        "customer": None, "model": "gpt-4o", "periodStart": "2026-02-01T00:00:00Z",
        "periodEnd": "2026-03-01T00:00:00Z", "currency": "USD", "revenueBilled": "4.50", "revenuePreviewed": "0.00",
        "revenue": "4.50", "cost": "3.6", "costMissing": [], "margin": "0.90", "marginPercent": "20.00"}
    assert rows["gpt-4o-mini"]["costMissing"] == ["gpt-4o-mini/response"]


@pytest.mark.parametrize("params", [
    {}, {"from": "2026-02-01T00:00:00Z"}, {"from": "yesterday", "to": "2026-03-01T00:00:00Z"},
    {"from": "2026-03-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"},
    {"from": "2026-02-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "groupBy": "planet"},
    {"from": "2026-02-01T00:00:00Z", "to": "2026-03-01T00:00:00Z", "customer": "a\x00b"},
    {"from": "0000-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
])
def test_margins_api_refuses_bad_parameters(api, read_token, params):
    response = api.get("/api/v1/margins", params, **bearer(read_token))
    assert response.status_code == 400 and response["Content-Type"].startswith("application/problem+json")


def test_margins_admin_page_shows_the_table_and_a_chart(admin_client, february):
    close_cycles(now=utc(2026, 3, 1, 2))
    page = admin_client.get("/admin/invoicing/invoice/margins/", {"from": "2026-02-01", "to": "2026-03-01"})
    html = page.content.decode()
    assert page.status_code == 200 and "<svg" in html
    assert "gpt-4o-mini/response" in html and "0.90 USD" in html and "55.56" in html
    bad = admin_client.get("/admin/invoicing/invoice/margins/", {"from": "nope"}).content.decode()
    assert "is not a date" in bad


def test_a_cache_read_companion_is_costed_at_the_cache_read_rate():
    """The companion meter's events are ``type: request``, but every token it counts is a cache read: the cost
    table's ``cache_read`` row costs it, not the input rate."""
    from catalog.services.features import feature_create
    from catalog.services.plans import PriceRowSpec, RateCardSpec, plan_create, plan_publish
    from metering.models import Meter
    from metering.services.meters import meter_create_from_preset
    from tests.builders import llm_event

    meter_create_from_preset(preset="llm_tokens")
    feature_create(key="cache-reads", name="Cache reads", meter=Meter.objects.get(slug="llm_cache_read_tokens"))
    card = RateCardSpec(key="cache", name="Cache reads", feature="cache-reads", price_type="dimensional",
                        dimensions=["model"],
                        rows=[PriceRowSpec(match={"model": "gpt-4o"}, price_type="unit", unit_amount=D("0.0000015"))])
    plan = plan_publish(plan=plan_create(key="cache", name="Cache", currency="USD", rate_cards=[card]))
    subscription_create(customer=kong_air(), plan=plan, start=FEB, billing_anchor="calendar")
    ingest([llm_event(tokens=10, model="gpt-4o", time="2026-02-03T10:00:00Z", cache_read_tokens=1_000_000)],
           now=utc(2026, 2, 10))
    for token_type, cost in (("request", "0.0000025"), ("cache_read", "0.00000125")):
        ModelCost.objects.create(provider="openai", model="gpt-4o", token_type=token_type, cost_per_token=D(cost))
    close_cycles(now=utc(2026, 3, 1, 2))
    (row,) = margin_report(start=FEB, end=MAR, now=utc(2026, 4, 1))
    assert (row.model, row.revenue_billed, row.cost, row.margin, row.cost_missing) == (
        "gpt-4o", 150, D("1.25"), 25, set())  # 1,000,000 × 0.0000015 billed, × 0.00000125 cost
