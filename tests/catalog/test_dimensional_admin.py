"""The admin edits a dimensional table as rows (each with its own price type), refuses a bad row, and prices a
quantity per row in "What would this cost?"."""

from __future__ import annotations

import pytest

from catalog.models import PriceRow, RateCard
from catalog.services.plans import plan_create
from tests.builders import admin_form_data, llm_table

pytestmark = pytest.mark.django_db


def _draft_card() -> RateCard:
    plan_create(key="llm", name="LLM", currency="USD", rate_cards=[llm_table(default="0.000001")])
    return RateCard.objects.get(key="llm")


def _post_the_form_changed(admin_client, rate_card, changes: dict[str, str]):
    """The rate card's change form as the page fills it, with ``changes``, posted."""
    url = f"/admin/catalog/ratecard/{rate_card.pk}/change/"
    return admin_client.post(url, {**admin_form_data(admin_client, url, "ratecard_form"), **changes})


def test_rows_are_edited_inline_with_their_price_type(admin_client):
    rate_card = _draft_card()
    url = f"/admin/catalog/ratecard/{rate_card.pk}/change/"
    data = admin_form_data(admin_client, url, "ratecard_form")
    total = int(data["price_rows-TOTAL_FORMS"])
    data.update({f"price_rows-{total}-position": "9", f"price_rows-{total}-match": '{"model": "o3"}',
                 f"price_rows-{total}-price_type": "graduated",
                 f"price_rows-{total}-tiers": '[{"up_to": "1000", "unit_amount": "0.01"}, '
                                              '{"up_to": null, "unit_amount": "0.005"}]',
                 f"price_rows-{total}-is_default": "", f"price_rows-{total}-effective_from_0": "",
                 f"price_rows-{total}-effective_from_1": "",
                 "price_rows-TOTAL_FORMS": str(total + 1)})
    data["price_rows-0-DELETE"] = "on"
    response = admin_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    rows = {str(row): row for row in PriceRow.objects.filter(rate_card=rate_card)}
    assert "model=gpt-4o, type=request" not in rows
    assert rows["model=o3"].price_type == "graduated" and rows["model=o3"].tiers[1]["up_to"] is None


def test_a_bad_row_is_a_form_error_and_nothing_changes(admin_client):
    rate_card = _draft_card()
    response = _post_the_form_changed(admin_client, rate_card, {"price_rows-0-unit_amount": "",
                                                                "price_rows-1-match": '{"model": ""}'})
    assert response.status_code == 200
    html = response.content.decode()
    assert "non-empty value" in html and "unit_amount must be a Decimal" in html
    assert PriceRow.objects.filter(rate_card=rate_card, unit_amount__isnull=True).count() == 0


def test_what_would_this_cost_prices_the_quantity_per_row(admin_client):
    rate_card = _draft_card()
    page = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/", {"quantity": "1000000"})
    html = page.content.decode()
    assert page.status_code == 200
    assert "model=gpt-4o,type=request" in html and "2.50" in html  # 1,000,000 × 0.0000025
    assert "model=gpt-4o,type=response" in html and "10.00" in html
    assert "default" in html and "each row alone" in html


def test_nul_in_a_row_is_a_form_error(admin_client):
    rate_card = _draft_card()
    response = _post_the_form_changed(admin_client, rate_card, {"price_rows-0-match": '{"model": "gpt\\u0000-4o"}',
                                                                "price_rows-1-tiers": '[{"up_to\\u0000": null}]'})
    assert response.status_code == 200 and "NUL" in response.content.decode()
    assert PriceRow.objects.get(rate_card=rate_card, position=0).match == {"model": "gpt-4o", "type": "request"}
