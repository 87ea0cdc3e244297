"""Currency codes are upper-cased or refused on save (plans), not only at publish: one rule,
``catalog.money.normalize_currency`` behind ``catalog.rules.clean_currency`` / ``currency_problem``."""

from __future__ import annotations

import pytest

from catalog.models import Plan
from catalog.money import normalize_currency
from catalog.services.plans import PlanError, plan_create, plan_update_draft
from tests.builders import admin_form_post

pytestmark = pytest.mark.django_db

BAD_CODES = ["XYZ", "us", "US D", "US\x00", "uſd", "", "USDX", "1US"]


@pytest.mark.parametrize(("typed", "stored"), [("USD", "USD"), ("usd", "USD"), (" Eur ", "EUR"), ("jpy", "JPY")])
def test_normalize_currency(typed, stored):
    assert normalize_currency(typed) == stored


@pytest.mark.parametrize("typed", [*BAD_CODES, None, 840, b"USD"])
def test_normalize_currency_refuses_unknown_codes(typed):
    assert normalize_currency(typed) is None


def test_plan_services_store_upper_case():
    plan = plan_create(key="token", name="Token", currency="usd")
    assert Plan.objects.get(pk=plan.pk).currency == "USD"
    plan_update_draft(plan=plan, name="Token", currency=" eur ", billing_cadence="P1M")
    assert Plan.objects.get(pk=plan.pk).currency == "EUR"


@pytest.mark.parametrize("typed", BAD_CODES)
def test_plan_services_refuse_unknown_codes_on_save(typed):
    with pytest.raises(PlanError, match="is not a known ISO 4217 code"):
        plan_create(key="token", name="Token", currency=typed)
    assert not Plan.objects.exists()
    plan = plan_create(key="token", name="Token", currency="USD")
    with pytest.raises(PlanError, match="is not a known ISO 4217 code"):
        plan_update_draft(plan=plan, name="Token", currency=typed, billing_cadence="P1M")
    assert Plan.objects.get(pk=plan.pk).currency == "USD"


def _plan_add(client, currency: str):
    return admin_form_post(client, "/admin/catalog/plan/add/", "plan_form", key="token", name="Token",
                           currency=currency, billing_cadence="P1M")


def test_plan_admin_upper_cases_the_currency(admin_client):
    assert _plan_add(admin_client, "usd").status_code == 302
    plan = Plan.objects.get()
    assert plan.currency == "USD"
    response = admin_form_post(admin_client, f"/admin/catalog/plan/{plan.pk}/change/", "plan_form", currency="eur")
    assert response.status_code == 302
    plan.refresh_from_db()
    assert plan.currency == "EUR"


@pytest.mark.parametrize("typed", ["XYZ", "us", "US D", "US\x00"])
def test_plan_admin_refuses_unknown_codes_on_save(admin_client, typed):
    response = _plan_add(admin_client, typed)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["currency"]
    assert not Plan.objects.exists()
