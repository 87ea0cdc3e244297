"""The rate card form fits the price: each price type takes its own fields and refuses the others; the tier table
is checked by the pricing rule and bounded; decimals read plain on read-only pages; pickers show names."""

from __future__ import annotations

import json
from decimal import Decimal as D

import pytest
from django.http import QueryDict

from catalog.models import Feature, Plan, PriceTier, RateCard
from catalog.rules import ENTITLEMENT_FIELDS, PRICE_FIELDS
from tests.builders import admin_form_data, graduated_out, token_plan

pytestmark = pytest.mark.django_db

BLANK = dict.fromkeys(("amount", "unit_amount", "quantity_per_package", "free_quantity", "minimum_spend",
                       "maximum_spend", "entitlement_limit", "entitlement_usage_period", "entitlement_config"), "")


def _post(client, rate_card: RateCard, **changes: str):
    url = f"/admin/catalog/ratecard/{rate_card.pk}/change/"
    data = admin_form_data(client, url, "ratecard_form", **{**BLANK, **changes})
    data.pop("entitlement_soft", None)
    if changes.get("entitlement_soft"):
        data["entitlement_soft"] = "on"
    return client.post(url, data)


def _errors(response) -> dict[str, list[str]]:
    assert response.status_code == 200, "the form should have been refused"
    form = response.context["adminform"].form
    errors = {name: [str(m) for m in messages] for name, messages in form.errors.items()}
    return errors


@pytest.fixture
def rate_card():
    plan = token_plan(publish=False)
    return RateCard.objects.get(plan=plan, key="ai-token")


@pytest.mark.parametrize("price_type, fields, wrong, message", [
    ("flat", {"amount": "49"}, {"unit_amount": "0.1"}, "unit_amount"),
    ("flat", {"amount": "49"}, {"quantity_per_package": "10"}, "quantity_per_package"),
    ("flat", {"amount": "49"}, {"free_quantity": "10"}, "free_quantity"),
    ("unit", {"unit_amount": "0.1"}, {"amount": "5"}, "amount"),
    ("unit", {"unit_amount": "0.1"}, {"payment_term": "in_advance"}, "payment_term"),
    ("package", {"amount": "5", "quantity_per_package": "1000"}, {"unit_amount": "0.1"}, "unit_amount"),
    ("graduated", {}, {"amount": "5"}, "amount"),
    ("volume", {}, {"unit_amount": "0.1"}, "unit_amount"),
    ("", {}, {"minimum_spend": "5"}, "minimum_spend"),
])
def test_a_value_in_a_field_the_price_type_does_not_use_is_a_form_error(admin_client, rate_card, price_type,
                                                                          fields, wrong, message):
    before = list(RateCard.objects.values())
    response = _post(admin_client, rate_card, price_type=price_type, entitlement_type="boolean", **fields, **wrong)
    errors = _errors(response)
    assert message in errors, errors
    assert "Does not apply" in errors[message][0] or "in advance" in errors[message][0]
    assert list(RateCard.objects.values()) == before


@pytest.mark.parametrize("price_type, fields, missing", [
    ("flat", {}, "needs amount"),
    ("unit", {}, "needs unit amount"),
    ("package", {"amount": "5"}, "needs quantity per package"),
    ("package", {"quantity_per_package": "1000"}, "needs amount"),
])
def test_a_missing_field_of_the_price_type_is_a_form_error(admin_client, rate_card, price_type, fields, missing):
    errors = _errors(_post(admin_client, rate_card, price_type=price_type, **fields))
    assert missing in " ".join(errors["__all__"])


@pytest.mark.parametrize("price_type, fields, expected", [
    ("flat", {"amount": "49", "payment_term": "in_advance"}, {"amount": D(49), "payment_term": "in_advance"}),
    ("unit", {"unit_amount": "0.00001", "free_quantity": "100"},
     {"unit_amount": D("0.00001"), "free_quantity": D(100), "payment_term": "in_arrears"}),
    ("package", {"amount": "5", "quantity_per_package": "1000"},
     {"amount": D(5), "quantity_per_package": D(1000), "unit_amount": None}),
])
def test_each_price_type_saves_with_only_its_fields(admin_client, rate_card, price_type, fields, expected):
    data = {**fields}
    data.setdefault("payment_term", "")  # hidden (and not posted) for usage prices: in arrears
    response = _post(admin_client, rate_card, price_type=price_type, **data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    rate_card.refresh_from_db()
    for name, value in expected.items():
        assert getattr(rate_card, name) == value, name


def test_entitlement_fields_belong_to_their_type(admin_client, rate_card):
    errors = _errors(_post(admin_client, rate_card, price_type="unit", unit_amount="1", entitlement_type="boolean",
                           entitlement_limit="5", entitlement_config='{"a": 1}', entitlement_soft="on"))
    assert {"entitlement_limit", "entitlement_config", "entitlement_soft"} <= set(errors)
    errors = _errors(_post(admin_client, rate_card, price_type="unit", unit_amount="1", entitlement_type="static",
                           entitlement_config=""))
    assert "a static entitlement needs a JSON config" in " ".join(errors["__all__"])
    response = _post(admin_client, rate_card, price_type="unit", unit_amount="1", entitlement_type="metered",
                     entitlement_limit="1000", entitlement_soft="on")
    assert response.status_code == 302
    rate_card.refresh_from_db()
    assert (rate_card.entitlement_limit, rate_card.entitlement_soft) == (D(1000), True)


def test_the_form_carries_which_fields_each_type_uses_and_no_null_config(admin_client, rate_card):
    page = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/").content.decode()
    assert "catalog/rate_card_form.js" in page
    form = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/").context["adminform"].form
    assert json.loads(form.fields["price_type"].widget.attrs["data-fields"]) == {k: list(v) for k, v in
                                                                               PRICE_FIELDS.items()}
    assert json.loads(form.fields["entitlement_type"].widget.attrs["data-fields"]) == {
        k: list(v) for k, v in ENTITLEMENT_FIELDS.items()}
    assert ">null</textarea>" not in page
    assert "More: free quantity, minimum and maximum spend" in page


# ------------------------------------------------------------------------------------------------- tier table


def _tier_post(client, rate_card: RateCard, rows: list[tuple[str, str, str]], **extra: str):
    url = f"/admin/catalog/ratecard/{rate_card.pk}/change/"
    data = admin_form_data(client, url, "ratecard_form")
    data = {k: v for k, v in data.items() if not k.startswith("tiers-")}
    existing = list(rate_card.tiers.order_by("position", "id"))
    data.update({"tiers-TOTAL_FORMS": str(len(rows)), "tiers-INITIAL_FORMS": str(min(len(existing), len(rows))),
                 "tiers-MIN_NUM_FORMS": "0", "tiers-MAX_NUM_FORMS": "100"})
    for i, (up_to, unit, flat) in enumerate(rows):
        data.update({f"tiers-{i}-up_to": up_to, f"tiers-{i}-unit_amount": unit, f"tiers-{i}-flat_amount": flat,
                     f"tiers-{i}-rate_card": str(rate_card.pk)})
        if i < len(existing):
            data[f"tiers-{i}-id"] = str(existing[i].pk)
    data.update(extra)
    return client.post(url, data)


@pytest.fixture
def tiered():
    plan = token_plan(publish=False, extra=[graduated_out()])
    return RateCard.objects.get(plan=plan, key="ai-token-out")


def _tiers(rate_card: RateCard) -> list[tuple]:
    return [(t.up_to, t.unit_amount, t.flat_amount) for t in rate_card.tiers.order_by("position", "id")]


def _formset_errors(response) -> str:
    assert response.status_code == 200
    (tiers,) = response.context["inline_admin_formsets"]
    return " ".join([str(e) for e in tiers.formset.non_form_errors()] + [str(e) for e in tiers.formset.errors])


def test_tier_rows_are_saved_in_the_order_shown(admin_client, tiered):
    response = _tier_post(admin_client, tiered, [("100", "0.1", "0"), ("1000", "0.05", "1"), ("", "0.01", "0")])
    assert response.status_code == 302, _formset_errors(response)
    assert _tiers(tiered) == [(D(100), D("0.1"), D(0)), (D(1000), D("0.05"), D(1)), (None, D("0.01"), D(0))]
    assert list(tiered.tiers.order_by("position", "id").values_list("position", flat=True)) == [0, 1, 2]


def test_a_removed_row_is_deleted(admin_client, tiered):
    before = _tiers(tiered)
    response = _tier_post(admin_client, tiered, [("1000000", "0.00001", "0"), ("", "0.000008", "2")],
                          **{"tiers-1-DELETE": "on"})
    # Deleting the open last tier leaves an upper bound on the last one: the pricing rule refuses it.
    assert "last tier" in _formset_errors(response).lower() or "up to" in _formset_errors(response)
    assert _tiers(tiered) == before


# Tier tables refused the same way by the rate card's page and the plan page's inline.
HOSTILE_TIERS = [
    ([("1000", "0.1", "0"), ("100", "0.05", "0"), ("", "0.01", "0")], "ascending"),
    ([("1000", "-0.1", "0"), ("", "0.01", "0")], "negative"),
]


@pytest.mark.parametrize("rows, expected", [
    *HOSTILE_TIERS,
    ([("1000", "0.1", "-1"), ("", "0.01", "0")], "negative"),
    ([("-5", "0.1", "0"), ("", "0.01", "0")], "greater than 0"),
    ([("", "0.1", "0"), ("", "0.01", "0")], "up to"),
    ([("1000", "0.1", "0"), ("2000", "0.01", "0")], "up to"),
])
def test_hostile_tier_tables_are_form_errors_and_nothing_changes(admin_client, tiered, rows, expected):
    before = _tiers(tiered)
    response = _tier_post(admin_client, tiered, rows)
    assert expected in _formset_errors(response)
    assert _tiers(tiered) == before


@pytest.mark.parametrize("cell", ["1\x000", "0,5", "1e3", "NaN", "x" * 500, "١٠٠"])
def test_hostile_tier_cells_are_form_errors(admin_client, tiered, cell):
    before = _tiers(tiered)
    response = _tier_post(admin_client, tiered, [(cell, "0.1", "0"), ("", "0.01", "0")])
    assert response.status_code == 200
    (tiers,) = response.context["inline_admin_formsets"]
    assert tiers.formset.forms[0].errors["up_to"]
    assert _tiers(tiered) == before


def test_more_than_a_hundred_tier_rows_are_a_form_error(admin_client, tiered):
    before = _tiers(tiered)
    rows = [(str(n + 1), "0.1", "0") for n in range(150)] + [("", "0.01", "0")]
    response = _tier_post(admin_client, tiered, rows)
    assert "at most 100" in _formset_errors(response).lower()
    assert _tiers(tiered) == before


def test_a_thousand_tier_rows_are_refused_not_read(admin_client, tiered):
    """4,000 fields exceed Django's DATA_UPLOAD_MAX_NUMBER_FIELDS: a 400 before any form is built."""
    before = _tiers(tiered)
    rows = [(str(n + 1), "0.1", "0") for n in range(999)] + [("", "0.01", "0")]
    response = _tier_post(admin_client, tiered, rows)
    assert 400 <= response.status_code < 500
    assert _tiers(tiered) == before
    assert PriceTier.objects.filter(rate_card=tiered).count() == 2


def test_a_rate_card_not_tiered_ignores_its_tier_order(admin_client, rate_card):
    response = _tier_post(admin_client, rate_card, [])
    assert response.status_code == 302


# ------------------------------------------------------------------------------------- plain decimals, names


def test_a_published_rate_card_shows_its_decimals_plain(admin_client):
    plan = token_plan(unit_amount="0.00001", extra=[graduated_out()])
    rate_card = RateCard.objects.get(plan=plan, key="ai-token")
    page = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/").content.decode()
    assert "0.00001" in page and "0.000010000000000" not in page
    tiered = RateCard.objects.get(plan=plan, key="ai-token-out")
    page = admin_client.get(f"/admin/catalog/ratecard/{tiered.pk}/change/").content.decode()
    assert "1,000,000" in page and "1000000.000000000000000" not in page
    assert "0.000008" in page and "0.000008000000000" not in page
    page = admin_client.get(f"/admin/catalog/plan/{plan.pk}/change/").content.decode()
    assert "0.000010000000000" not in page and "1,000" in page


def test_pickers_show_names(admin_client):
    token_plan(publish=False)
    page = admin_client.get("/admin/catalog/feature/add/").content.decode()
    assert ">AI Gateway Tokens (llm_tokens)</option>" in page
    Feature.objects.filter(key="ai-token").update(name="AI tokens")
    page = admin_client.get(f"/admin/catalog/plan/{Plan.objects.get().pk}/change/").content.decode()
    assert ">AI tokens (ai-token)</option>" in page


# ------------------------------------------------------------------------------- the plan page's tier table


def _plan_post(client, plan: Plan, rows: list[tuple[str, str, str]] | None, **changes: str):
    url = f"/admin/catalog/plan/{plan.pk}/change/"
    data = admin_form_data(client, url, "plan_form", **changes)
    index = next(i for i in range(5) if data.get(f"rate_cards-{i}-key") == "ai-token-out")
    prefix = f"rate_cards-{index}-tiers"
    post = QueryDict(mutable=True)
    for key, value in data.items():
        if not key.startswith(prefix + "-"):
            post[key] = value
    if rows is not None:
        for up_to, unit, flat in rows:
            post.appendlist(f"{prefix}-up_to", up_to)
            post.appendlist(f"{prefix}-unit_amount", unit)
            post.appendlist(f"{prefix}-flat_amount", flat)
    return client.post(url, post.urlencode(), content_type="application/x-www-form-urlencoded"), index


def _inline_errors(response, index: int) -> str:
    assert response.status_code == 200, "the plan should have been refused"
    (inline,) = response.context["inline_admin_formsets"]
    return " ".join(str(e) for e in inline.formset.forms[index].errors.get("tiers", []))


def test_the_plan_page_saves_its_tier_table_in_the_order_shown(admin_client, tiered):
    response, _ = _plan_post(admin_client, tiered.plan, [("500", "0.02", "0"), ("", "", ""), ("", "0.01", "1")])
    assert response.status_code == 302
    assert _tiers(tiered) == [(D(500), D("0.02"), D(0)), (None, D("0.01"), D(1))]


def test_the_plan_page_renders_the_tiers_and_leaves_them_when_nothing_is_posted(admin_client, tiered):
    before = _tiers(tiered)
    page = admin_client.get(f"/admin/catalog/plan/{tiered.plan_id}/change/").content.decode()
    assert 'value="1000000"' in page and 'value="0.000008"' in page
    response, _ = _plan_post(admin_client, tiered.plan, None)  # the table hidden (disabled): nothing posted
    assert response.status_code == 302
    assert _tiers(tiered) == before


@pytest.mark.parametrize("rows, expected", [
    *HOSTILE_TIERS,
    ([("1\x00000", "0.1", "0"), ("", "0.01", "0")], "NUL"),
    ([("1,000", "0.1", "0"), ("", "0.01", "0")], "thousand separators"),
    ([(str(n + 1), "0.1", "0") for n in range(150)], "At most 100 tiers"),
])
def test_hostile_tier_tables_on_the_plan_page_are_form_errors(admin_client, tiered, rows, expected):
    before = _tiers(tiered)
    response, index = _plan_post(admin_client, tiered.plan, rows)
    assert expected in _inline_errors(response, index)
    assert _tiers(tiered) == before


def test_a_published_plan_shows_its_tiers_as_a_sentence(admin_client):
    plan = token_plan(extra=[graduated_out()])
    page = admin_client.get(f"/admin/catalog/plan/{plan.pk}/change/").content.decode()
    assert "tier-table" not in page and "PriceTier.None" not in page
    assert "Edit the tier table" in page
