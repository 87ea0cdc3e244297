"""Catalog admin: features, plan lifecycle with confirmations, read-only published versions, cost calculator."""

from __future__ import annotations

import pytest

from catalog.models import Feature, Plan, RateCard
from tests.builders import graduated_out, platform_fee, token_plan, tokens_meter

pytestmark = pytest.mark.django_db


def test_feature_form_validates_filters_against_the_meter(admin_client):
    meter = tokens_meter()
    response = admin_client.post("/admin/catalog/feature/add/", {
        "key": "ai-token", "name": "ai-token", "meter": meter.pk, "meter_group_by_filters": '{"colour": "red"}'})
    assert response.status_code == 200
    assert "meter_group_by_filters" in response.context["adminform"].form.errors
    response = admin_client.post("/admin/catalog/feature/add/", {
        "key": "ai-token", "name": "ai-token", "meter": meter.pk,
        "meter_group_by_filters": '{"provider": "openai", "type": "request"}'})
    assert response.status_code == 302
    assert Feature.objects.get().meter_group_by_filters == {"provider": "openai", "type": "request"}


def test_plan_lifecycle_through_the_admin(admin_client):
    plan = token_plan(publish=False, extra=[platform_fee()])
    page = admin_client.get(f"/admin/catalog/plan/{plan.pk}/change/").content.decode()
    assert "Ready to publish." in page and "USD 0.00002 per token" in page
    assert "USD 49.00 per month (in advance)" in page
    confirm = admin_client.get(f"/admin/catalog/plan/{plan.pk}/lifecycle/publish/")
    assert b"Publishing freezes version 1" in confirm.content
    admin_client.post(f"/admin/catalog/plan/{plan.pk}/lifecycle/publish/")
    plan.refresh_from_db()
    assert plan.status == "published"
    page = admin_client.get(f"/admin/catalog/plan/{plan.pk}/change/").content.decode()
    assert "cannot change" in page and 'name="_save"' not in page  # read-only
    response = admin_client.post(f"/admin/catalog/plan/{plan.pk}/change/", {"name": "Hacked"})
    assert response.status_code == 403
    admin_client.post(f"/admin/catalog/plan/{plan.pk}/lifecycle/new_version/")
    draft = Plan.objects.get(key="token", status="draft")
    assert draft.version == 2 and draft.rate_cards.count() == 2
    admin_client.post(f"/admin/catalog/plan/{draft.pk}/lifecycle/publish/")
    plan.refresh_from_db()
    assert plan.status == "archived"


def test_publishing_a_broken_draft_shows_why(admin_client):
    from catalog.services.plans import plan_create

    plan = plan_create(key="empty", name="Empty", currency="USD")
    confirm = admin_client.get(f"/admin/catalog/plan/{plan.pk}/lifecycle/publish/").content.decode()
    assert "cannot be published yet" in confirm and "at least one rate card" in confirm
    response = admin_client.post(f"/admin/catalog/plan/{plan.pk}/lifecycle/publish/", follow=True)
    assert "at least one rate card" in response.content.decode()
    plan.refresh_from_db()
    assert plan.status == "draft"


def test_bulk_actions_confirm_first(admin_client):
    plan = token_plan(publish=False)
    data = {"action": "publish_plans", "_selected_action": [plan.pk]}
    assert b"Publish plans?" in admin_client.post("/admin/catalog/plan/", data).content
    plan.refresh_from_db()
    assert plan.status == "draft"
    admin_client.post("/admin/catalog/plan/", {**data, "confirmed": "yes"})
    plan.refresh_from_db()
    assert plan.status == "published"


def test_cost_calculator_on_a_rate_card(admin_client):
    plan = token_plan(extra=[graduated_out()])
    rate_card = RateCard.objects.get(plan=plan, key="ai-token-out")
    page = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/", {"quantity": "1001000"}).content.decode()
    # 1,001,000 - 1,000 free = 1,000,000 in tier 1 at 0.00001 = 10.00
    assert 'id="cost-total">10.00<' in page
    page = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/", {"quantity": "2000"}).content.decode()
    # 1,000 billable × 0.00001 = 0.01, topped up to the 5.00 minimum
    assert "minimum_spend" in page and 'id="cost-total">5.00<' in page
    bad = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/", {"quantity": "-5"})
    assert "quantity" in bad.context["cost_form"].errors


def test_rate_card_form_errors_for_incomplete_prices(admin_client):
    plan = token_plan(publish=False)
    rate_card = RateCard.objects.get(plan=plan)
    response = admin_client.post(f"/admin/catalog/ratecard/{rate_card.pk}/change/", {
        "key": "ai-token", "name": "", "feature": "", "price_type": "unit", "payment_term": "in_arrears",
        "entitlement_type": "", "tiers-TOTAL_FORMS": "0", "tiers-INITIAL_FORMS": "0"})
    assert response.status_code == 200
    errors = str(response.context["adminform"].form.non_field_errors())
    assert "needs unit amount" in errors and "needs a feature with a meter" in errors


def test_add_pages_render(admin_client):
    for url in ("/admin/catalog/plan/add/", "/admin/catalog/feature/add/", "/admin/metering/meter/add/",
                "/admin/customers/customer/add/", "/admin/customers/subscription/add/",
                "/admin/metering/apitoken/add/"):
        assert admin_client.get(url).status_code == 200, url
