"""A rate card's credit settings in the admin: the recurring grant as fields (amount, every, expires after,
priority; all empty = none) and the credit access mode of a metered entitlement, checked by the catalog's own rule
(``credit_problems``) as form errors — never a 500, nothing saved; a published version shows them read only."""

from __future__ import annotations

import pytest

from catalog.models import RateCard
from catalog.services.plans import plan_publish
from tests.builders import admin_form_data, quota, token_plan

pytestmark = pytest.mark.django_db

BLANK = dict.fromkeys(("amount", "quantity_per_package", "free_quantity", "minimum_spend", "maximum_spend",
                       "entitlement_usage_period", "entitlement_config"), "")


@pytest.fixture
def draft_quota():
    plan = token_plan(publish=False, extra=[quota()])
    return RateCard.objects.get(plan=plan, key="ai-quota")


def _post(client, rate_card: RateCard, **changes: str):
    url = f"/admin/catalog/ratecard/{rate_card.pk}/change/"
    data = admin_form_data(client, url, "ratecard_form", **{**BLANK, **changes})
    return client.post(url, data)


def _errors(response) -> dict[str, list[str]]:
    assert response.status_code == 200, "the form should have been refused"
    form = response.context["adminform"].form
    return {name: [str(m) for m in messages] for name, messages in form.errors.items()}


def test_the_recurring_grant_is_saved_from_its_fields(admin_client, draft_quota):
    response = _post(admin_client, draft_quota, credit_grant_amount="10.00", credit_grant_every="P1M",
                     credit_grant_expires_after="P1M", credit_grant_priority="10", entitlement_credits="credit_only")
    assert response.status_code == 302, _errors(response)
    draft_quota.refresh_from_db()
    assert draft_quota.credit_grant == {"amount": "10.00", "every": "P1M", "expires_after": "P1M", "priority": 10}
    assert draft_quota.entitlement_credits == "credit_only"
    page = admin_client.get(f"/admin/catalog/ratecard/{draft_quota.pk}/change/").content.decode()
    assert 'name="credit_grant_amount"' in page and 'value="10.00"' in page
    assert "Recurring credits: amount" in page and "Credit access" in page


def test_empty_fields_mean_no_recurring_grant(admin_client, draft_quota):
    RateCard.objects.filter(pk=draft_quota.pk).update(credit_grant={"amount": "5.00", "every": "P1M"})
    response = _post(admin_client, draft_quota, credit_grant_amount="", credit_grant_every="P1M",
                     credit_grant_expires_after="", credit_grant_priority="")
    assert response.status_code == 302, _errors(response)
    draft_quota.refresh_from_db()
    assert draft_quota.credit_grant is None


@pytest.mark.parametrize("fields, field, words", [
    ({"credit_grant_amount": "0"}, "credit_grant_amount", "more than zero"),
    ({"credit_grant_amount": "-5"}, "credit_grant_amount", "more than zero"),
    ({"credit_grant_amount": "ten"}, "credit_grant_amount", "more than zero"),
    ({"credit_grant_amount": "NaN"}, "credit_grant_amount", "more than zero"),
    ({"credit_grant_amount": "1e400"}, "credit_grant_amount", "too large"),
    ({"credit_grant_amount": "10.001"}, "credit_grant_amount", "more decimals than USD"),
    ({"credit_grant_amount": "1" * 39}, "credit_grant_amount", "too large"),
    ({"credit_grant_amount": "10\x00"}, "credit_grant_amount", "Null characters"),
    ({"credit_grant_amount": "10", "credit_grant_every": "P1X"}, "credit_grant_every", "Must be one of P1D"),
    ({"credit_grant_amount": "10", "credit_grant_every": "monthly"}, "credit_grant_every", "Must be one of P1D"),
    ({"credit_grant_amount": "10", "credit_grant_expires_after": "P2M"}, "credit_grant_expires_after",
     "Must be one of P1D"),
    ({"credit_grant_amount": "10", "credit_grant_priority": "-1"}, "credit_grant_priority", "whole number from 0"),
    ({"credit_grant_amount": "10", "credit_grant_priority": "99999999999999999999"}, "credit_grant_priority",
     "whole number from 0"),
    ({"credit_grant_amount": "10", "credit_grant_priority": "1.5"}, "credit_grant_priority", "whole number"),
    ({"credit_grant_priority": "3"}, "credit_grant_amount", "Give the amount"),
    ({"credit_grant_expires_after": "P1M"}, "credit_grant_amount", "Give the amount"),
])
def test_a_bad_recurring_grant_is_a_form_error(admin_client, draft_quota, fields, field, words):
    before = list(RateCard.objects.values())
    errors = _errors(_post(admin_client, draft_quota, **fields))
    assert field in errors, errors
    assert words in " ".join(errors[field])
    assert list(RateCard.objects.values()) == before


def test_a_credit_mode_needs_a_metered_entitlement(admin_client):
    plan = token_plan(publish=False)
    rate_card = RateCard.objects.get(plan=plan, key="ai-token")  # a boolean entitlement
    errors = _errors(_post(admin_client, rate_card, entitlement_type="boolean", entitlement_credits="credit_only",
                           entitlement_limit=""))
    assert "need a metered entitlement" in " ".join(errors["entitlement_credits"])
    errors = _errors(_post(admin_client, rate_card, entitlement_type="boolean", entitlement_credits="bogus",
                           entitlement_limit=""))
    assert "entitlement_credits" in errors
    assert RateCard.objects.get(pk=rate_card.pk).entitlement_credits == ""


def test_a_published_version_shows_its_credits_read_only(admin_client):
    plan = token_plan(publish=False, extra=[quota()])
    rate_card = RateCard.objects.get(plan=plan, entitlement_type="metered")
    RateCard.objects.filter(pk=rate_card.pk).update(
        credit_grant={"amount": "10.00", "every": "P1M", "expires_after": "P1M", "priority": 10})
    plan_publish(plan=plan)
    for url in (f"/admin/catalog/ratecard/{rate_card.pk}/change/", f"/admin/catalog/plan/{plan.pk}/change/"):
        response = admin_client.get(url)
        assert response.status_code == 200
        page = response.content.decode()
        assert "10.00 USD every P1M, expiring after P1M, priority 10" in page
        assert 'name="credit_grant_amount"' not in page and 'name="rate_cards-0-credit_grant_amount"' not in page
    url = f"/admin/catalog/ratecard/{rate_card.pk}/change/"
    response = admin_client.post(url, {"credit_grant_amount": "99"})
    assert response.status_code in (302, 403)
    assert (RateCard.objects.get(pk=rate_card.pk).credit_grant or {}).get("amount") == "10.00"


def test_the_plan_page_inline_takes_the_recurring_grant_with_the_plan_currency(admin_client):
    plan = token_plan(publish=False, currency="JPY", extra=[quota()])
    rate_card = RateCard.objects.get(plan=plan, entitlement_type="metered")
    index = list(plan.rate_cards.order_by("position", "id")).index(rate_card)
    url = f"/admin/catalog/plan/{plan.pk}/change/"
    prefix = f"rate_cards-{index}-"
    data = admin_form_data(admin_client, url, "plan_form", **{prefix + "credit_grant_amount": "10.5"})
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "more decimals than JPY" in response.content.decode()
    data = admin_form_data(admin_client, url, "plan_form", **{prefix + "credit_grant_amount": "1000"})
    response = admin_client.post(url, data)
    assert response.status_code == 302
    assert RateCard.objects.get(pk=rate_card.pk).credit_grant == {"amount": "1000", "every": "P1M"}
