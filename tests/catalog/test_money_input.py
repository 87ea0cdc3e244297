"""Safe money input: every decimal a person types in the admin is a text box read by one strict parser.

The defect: ``0,00002`` typed into a browser's ``<input type="number">`` reached the server as ``2`` (a 100,000×
price). Now the field is ``type="text"`` and ``0,00002`` is a form error naming the fix; nothing is saved.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.forms import DecimalField as FormDecimalField

from catalog.models import Plan, PriceTier, RateCard
from common.forms import DecimalTextField, DecimalTextInput, parse_plain_decimal, plain_decimal
from tests.builders import (
    admin_form_data,
    admin_form_post,
    graduated_out,
    ingest,
    iso,
    kong_air,
    llm_event,
    parse_forms,
    platform_fee,
    quota,
    token_plan,
    utc,
)

D = Decimal
pytestmark = pytest.mark.django_db

# ------------------------------------------------------------------------------------------------------ the parser


@pytest.mark.parametrize(("text", "value"), [
    ("0.00002", D("0.00002")),
    ("  0.00002\t", D("0.00002")),
    ("49", D(49)),
    ("49.00", D(49)),
    ("-3.5", D("-3.5")),
    (".5", D("0.5")),
    ("5.", D(5)),
    ("0.000020000000000000000", D("0.00002")),  # trailing zeros are not decimal places that get lost
    ("12345678901234567890123.123456789012345", D("12345678901234567890123.123456789012345")),
])
def test_plain_decimals_are_read_exactly(text, value):
    field = DecimalTextField(max_digits=38, decimal_places=15, required=False)
    cleaned = field.clean(text)
    assert cleaned == value and str(cleaned) == str(value)


@pytest.mark.parametrize(("text", "message"), [
    ("0,00002", "Use a dot as the decimal separator (0.00002)."),
    (",5", "Use a dot as the decimal separator (0.5)."),
    ("1,000", "ambiguous"),
    ("1,000.50", "without thousand separators (1000.50)"),
    ("1 000", "without thousand separators (1000)"),
    ("1'000'000", "without thousand separators (1000000)"),
    ("1e-5", "without an exponent (0.00001)"),
    ("2E+3", "without an exponent (2000)"),
    ("NaN", "NaN and Infinity are not amounts"),
    ("-Infinity", "NaN and Infinity are not amounts"),
    ("inf", "NaN and Infinity are not amounts"),
    ("1\x00", "NUL"),
    ("$5", "digits and one dot only"),
    ("1.2.3", "digits and one dot only"),
    ("١٢", "digits and one dot only"),  # Arabic-Indic digits: Decimal() would take them
    ("0.0000000000000001", "no more than 15 decimal places"),
    ("1" + "0" * 23, "no more than 23 digits before the decimal point"),
    ("9" * 200, "Too long"),
])
def test_anything_else_is_a_form_error_saying_what_to_type(text, message):
    field = DecimalTextField(max_digits=38, decimal_places=15, required=False)
    with pytest.raises(ValidationError) as caught:
        field.clean(text)
    assert message in " ".join(caught.value.messages)


def test_empty_is_none_or_required():
    assert DecimalTextField(required=False).clean("   ") is None
    with pytest.raises(ValidationError, match="required"):
        DecimalTextField(required=True).clean("")


def test_values_are_shown_plain():
    widget = DecimalTextInput()
    assert widget.format_value(D("0.000020000000000")) == "0.00002"
    assert widget.format_value(D("1E+3")) == "1000"
    assert widget.format_value(D("1E-7")) == "0.0000001"  # str() would say 1E-7, which the parser refuses
    assert widget.format_value("0,00002") == "0,00002"  # what was typed comes back as typed, with the error
    assert plain_decimal(D("-0.000")) == "0"
    html = widget.render("unit_amount", D("0.000020000000000"))
    assert 'type="text"' in html and 'inputmode="decimal"' in html and 'value="0.00002"' in html


def test_every_text_typed_back_is_read_again_as_the_same_number():
    for value in (D("0.000000000000001"), D("12345678901234567890123.123456789012345"), D("1E+5"), D(0)):
        assert parse_plain_decimal(DecimalTextInput().format_value(value)) == value


# ------------------------------------------------------------------------------------------ the rate card forms


def _save_rate_card(client, rate_card: RateCard, **changes: str):
    return admin_form_post(client, f"/admin/catalog/ratecard/{rate_card.pk}/change/", "ratecard_form", **changes)


def _save_plan(client, plan: Plan, **changes: str):
    return admin_form_post(client, f"/admin/catalog/plan/{plan.pk}/change/", "plan_form", **changes)


def test_a_decimal_comma_on_the_rate_card_page_is_an_error_and_nothing_is_saved(admin_client):
    plan = token_plan(publish=False)
    rate_card = RateCard.objects.get(plan=plan)
    url = f"/admin/catalog/ratecard/{rate_card.pk}/change/"
    data = admin_form_data(admin_client, url, "ratecard_form", unit_amount="0,00002")
    response = admin_client.post(url, data)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["unit_amount"] == ["Use a dot as the decimal separator (0.00002)."]
    assert "use a dot as the decimal separator (0.00002)" in response.content.decode().lower()
    rate_card.refresh_from_db()
    assert rate_card.unit_amount == D("0.00002")  # unchanged, never 2

    response = admin_client.post(url, {**data, "unit_amount": " 0.00003 "})
    assert response.status_code == 302
    rate_card.refresh_from_db()
    assert rate_card.unit_amount == D("0.00003")


def test_a_decimal_comma_in_the_plan_inline_is_an_error_and_nothing_is_saved(admin_client):
    plan = token_plan(publish=False)
    before = list(RateCard.objects.values())
    url = f"/admin/catalog/plan/{plan.pk}/change/"
    data = admin_form_data(admin_client, url, "plan_form", **{"rate_cards-0-unit_amount": "0,00002", "name": "Renamed"})
    response = admin_client.post(url, data)
    assert response.status_code == 200
    (inline,) = response.context["inline_admin_formsets"]
    assert inline.formset.forms[0].errors["unit_amount"] == ["Use a dot as the decimal separator (0.00002)."]
    assert list(RateCard.objects.values()) == before
    plan.refresh_from_db()
    assert plan.name == "Token"

    data["rate_cards-0-unit_amount"] = "0.00002"
    data["rate_cards-0-free_quantity"] = "1,000"
    response = admin_client.post(url, data)
    (inline,) = response.context["inline_admin_formsets"]
    assert "ambiguous" in inline.formset.forms[0].errors["free_quantity"][0]
    assert list(RateCard.objects.values()) == before


def test_a_new_rate_card_through_the_plan_inline_is_saved_exactly(admin_client):
    plan = token_plan(publish=False)
    response = _save_plan(admin_client, plan, **{
        "rate_cards-TOTAL_FORMS": "2", "rate_cards-1-key": "ai-token-out", "rate_cards-1-name": "",
        "rate_cards-1-feature": str(RateCard.objects.get(plan=plan).feature_id), "rate_cards-1-price_type": "unit",
        "rate_cards-1-payment_term": "in_arrears", "rate_cards-1-unit_amount": "0.00002",
        "rate_cards-1-minimum_spend": "5", "rate_cards-1-entitlement_type": "", "rate_cards-1-plan": str(plan.pk),
    })
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    added = RateCard.objects.get(plan=plan, key="ai-token-out")
    assert added.unit_amount == D("0.00002") and added.minimum_spend == D(5)
    assert added.free_quantity is None and added.amount is None


def test_tier_amounts_are_text_and_strict_too(admin_client):
    plan = token_plan(publish=False, extra=[graduated_out()])
    rate_card = RateCard.objects.get(plan=plan, key="ai-token-out")
    response = _save_rate_card(admin_client, rate_card, **{"tiers-0-unit_amount": "0,00001"})
    assert response.status_code == 200
    (tiers,) = response.context["inline_admin_formsets"]
    assert tiers.formset.forms[0].errors["unit_amount"] == ["Use a dot as the decimal separator (0.00001)."]
    assert PriceTier.objects.filter(rate_card=rate_card).order_by("position")[0].unit_amount == D("0.00001")
    page = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/").content.decode()
    tier_inputs = {i["name"]: i for i in parse_forms(page).inputs if i.get("name", "").startswith("tiers-0-")}
    assert tier_inputs["tiers-0-unit_amount"]["type"] == "text"
    assert tier_inputs["tiers-0-unit_amount"]["value"] == "0.00001"
    assert tier_inputs["tiers-0-up_to"]["value"] == "1000000"


def test_a_negative_price_keeps_the_rules_error(admin_client):
    plan = token_plan(publish=False)
    rate_card = RateCard.objects.get(plan=plan)
    response = _save_rate_card(admin_client, rate_card, minimum_spend="-5")
    assert response.status_code == 200
    assert "minimum spend must not be negative" in str(response.context["adminform"].form.non_field_errors())
    rate_card.refresh_from_db()
    assert rate_card.minimum_spend is None


DECIMAL_NAMES = ("amount", "unit_amount", "quantity_per_package", "free_quantity", "minimum_spend",
                 "maximum_spend", "entitlement_limit")


def test_rendered_rate_card_forms_have_text_inputs_for_decimals(admin_client):
    plan = token_plan(publish=False, extra=[graduated_out()])
    rate_card = RateCard.objects.get(plan=plan, key="ai-token")
    for url, prefix in ((f"/admin/catalog/ratecard/{rate_card.pk}/change/", ""),
                        (f"/admin/catalog/plan/{plan.pk}/change/", "rate_cards-0-"),
                        ("/admin/catalog/plan/add/", "rate_cards-__prefix__-")):
        inputs = {i["name"]: i for i in parse_forms(admin_client.get(url).content.decode()).inputs if "name" in i}
        for name in DECIMAL_NAMES:
            element = inputs[prefix + name]
            assert (element["tag"], element["type"], element.get("inputmode")) == ("input", "text", "decimal"), url
    page = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/").content.decode()
    assert 'value="0.00002"' in page and "0.000020000000000" not in page
    numbers = [i["name"] for i in parse_forms(page).inputs if i.get("type") == "number"]
    assert all(name.endswith("-position") for name in numbers)  # integers only (tier order)


# ------------------------------------------------------------------------------- every admin page, walked


@pytest.fixture
def world():
    """One row of (nearly) every model with an admin, through the services."""
    from customers.services.subscriptions import subscription_create
    from invoicing.services.close import close_cycles

    plan = token_plan(extra=[platform_fee(), graduated_out()])
    token_plan(key="draft", publish=False, extra=[graduated_out()])
    air = kong_air()
    subscription_create(customer=air, plan=plan, start=utc(2026, 10, 1))
    ingest([llm_event(tokens=1000, time=iso(utc(2026, 10, 5)))])
    close_cycles(now=utc(2026, 11, 1, 2))
    return plan


def _forms_of(context) -> list:
    forms = []
    if context.get("adminform") is not None:
        forms.append(context["adminform"].form)
    for inline in context.get("inline_admin_formsets") or []:
        forms.extend(inline.formset.forms)
        forms.append(inline.formset.empty_form)
    for name in ("form", "cost_form"):
        if context.get(name) is not None and hasattr(context[name], "fields"):
            forms.append(context[name])
    return forms


def test_every_admin_add_and_change_page_renders_decimals_as_text(admin_client, world):
    """Walks every registered model admin's add page and the change page of its first row: each decimal form
    field is a DecimalTextField rendered as ``<input type="text" inputmode="decimal">``."""
    checked: set[str] = set()
    pages = 0
    for model in admin.site._registry:
        opts = model._meta
        urls = [f"/admin/{opts.app_label}/{opts.model_name}/add/"]
        first = model._default_manager.first()
        if first is not None:
            urls.append(f"/admin/{opts.app_label}/{opts.model_name}/{first.pk}/change/")
        for url in urls:
            response = admin_client.get(url)
            if response.status_code != 200 or response.context is None:
                continue
            pages += 1
            inputs = {i["name"]: i for i in parse_forms(response.content.decode()).inputs if "name" in i}
            for form in _forms_of(response.context):
                for name, field in form.fields.items():
                    if not isinstance(field, FormDecimalField):
                        continue
                    html_name = form.add_prefix(name)
                    assert isinstance(field, DecimalTextField), f"{url}: {html_name} is a plain DecimalField"
                    assert isinstance(field.widget, DecimalTextInput), f"{url}: {html_name}"
                    if html_name in inputs:
                        assert inputs[html_name]["type"] == "text", f"{url}: {html_name}"
                        checked.add(f"{opts.model_name}:{html_name.split('-')[-1]}")
    assert pages > 20
    # the pages with decimal fields were reached (a walk that checks nothing must fail)
    assert {"plan:unit_amount", "plan:minimum_spend", "ratecard:unit_amount", "ratecard:entitlement_limit",
            "ratecard:up_to", "ratecard:flat_amount", "ratecard:quantity", "solarschedule:latitude"} <= checked


# --------------------------------------------------------------------------------------------- the cost box


def _rows() -> list:
    return [list(m.objects.order_by("pk").values()) for m in (Plan, RateCard, PriceTier)]


def _cost_page(client, rate_card: RateCard, quantity: str):
    return client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/", {"quantity": quantity})


def test_the_cost_box_is_its_own_get_form_outside_the_rate_card_form(admin_client):
    """A form inside the change form is dropped by the browser: "Calculate" then POSTed the rate card form,
    saving a draft and answering 403 on a published rate card."""
    plan = token_plan(extra=[graduated_out()])
    rate_card = RateCard.objects.get(plan=plan, key="ai-token-out")
    page = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/").content.decode()
    forms = parse_forms(page).forms
    (cost_form,) = [f for f in forms if any(i.get("name") == "quantity" for i in f.inputs)]
    assert cost_form.depth == 0 and cost_form.attrs.get("method", "get").lower() == "get"
    assert all(f.depth == 0 for f in forms)
    assert {i["name"] for i in cost_form.inputs if i.get("name")} == {"quantity"}


@pytest.mark.parametrize("publish", [True, False])
def test_the_cost_box_computes_and_saves_nothing(admin_client, publish):
    plan = token_plan(publish=publish, extra=[graduated_out()])
    rate_card = RateCard.objects.get(plan=plan, key="ai-token-out")
    before = _rows()
    response = _cost_page(admin_client, rate_card, "1001000")
    assert response.status_code == 200
    page = response.content.decode()
    # 1,001,000 − 1,000 free = 1,000,000 in tier 1 at 0.00001 = 10.00
    assert 'id="cost-total">10.00<' in page and "amount (USD)" in page
    assert "1,000,000 × 0.00001" in page
    assert _rows() == before


def test_a_finance_viewer_may_use_the_cost_box(client):
    plan = token_plan(extra=[graduated_out()])
    rate_card = RateCard.objects.get(plan=plan, key="ai-token-out")
    viewer = User.objects.create_user("viewer", password="pw-123456", is_staff=True)
    viewer.groups.add(Group.objects.get(name="Finance viewer"))
    client.force_login(viewer)
    before = _rows()
    response = _cost_page(client, rate_card, "2000")
    assert response.status_code == 200
    assert 'id="cost-total">5.00<' in response.content.decode()  # topped up to the minimum spend
    assert 'name="_save"' not in response.content.decode()
    assert client.post(f"/admin/catalog/ratecard/{rate_card.pk}/change/", {"quantity": "1"}).status_code == 403
    assert _rows() == before


@pytest.mark.parametrize(("quantity", "message"), [
    ("1,5", "decimal separator (1.5)"),
    ("-5", "greater than or equal to 0"),
    ("1\x00", "NUL"),
    ("1" + "0" * 40, "no more than 38 digits"),
    ("1e9", "exponent"),
    ("NaN", "not amounts"),
    ("", "required"),
])
def test_the_cost_box_refuses_hostile_quantities(admin_client, quantity, message):
    plan = token_plan(extra=[graduated_out()])
    rate_card = RateCard.objects.get(plan=plan, key="ai-token-out")
    before = _rows()
    response = _cost_page(admin_client, rate_card, quantity)
    assert response.status_code == 200
    errors = " ".join(response.context["cost_form"].errors.get("quantity", []))
    assert message in errors
    assert 'id="cost-total"' not in response.content.decode()
    assert _rows() == before


# ------------------------------------------------------------------------------------ the live price preview


def _preview(client, **params):
    return client.get("/admin/catalog/ratecard/price-preview/", params)


def test_the_price_preview_reads_the_typed_values_with_the_same_rules(admin_client):
    plan = token_plan(publish=False, extra=[graduated_out()])
    feature = RateCard.objects.get(plan=plan, key="ai-token").feature
    assert feature is not None
    before = _rows()
    body = _preview(admin_client, price_type="unit", unit_amount="0.00002", feature=feature.pk, currency="usd",
                    cadence="P1M").json()
    assert body == {"summary": "USD 0.00002 per token", "errors": []}
    body = _preview(admin_client, price_type="unit", unit_amount="0,00002", feature=feature.pk,
                    currency="USD").json()
    assert body["summary"] == "" and body["errors"] == ["unit amount: Use a dot as the decimal separator (0.00002)."]
    body = _preview(admin_client, price_type="flat", amount="49", payment_term="in_advance", currency="USD",
                    cadence="P1M").json()
    assert body["summary"] == "USD 49.00 per month (in advance)"
    body = _preview(admin_client, price_type="unit", unit_amount="1", currency="XYZ").json()
    assert "currency 'XYZ' is not a known ISO 4217 code" in body["errors"][0]
    graduated = RateCard.objects.get(plan=plan, key="ai-token-out")
    body = _preview(admin_client, price_type="graduated", feature=graduated.feature_id, currency="USD",
                    rate_card=graduated.pk).json()
    assert body["summary"].startswith("graduated: first 1,000,000 tokens at USD 0.00001")
    body = _preview(admin_client, price_type="graduated", feature=graduated.feature_id, currency="USD", tiers="1",
                    tier_position=["1", "0"], tier_up_to=["", "1000"], tier_unit_amount=["0.005", "0.01"],
                    tier_flat_amount=["", ""]).json()
    assert body["summary"] == "graduated: first 1,000 tokens at USD 0.01, then USD 0.005 per token above 1,000"
    body = _preview(admin_client, price_type="volume", currency="USD", tiers="1", tier_up_to=["1e3"],
                    tier_unit_amount=["1"], tier_flat_amount=[""], tier_position=["0"]).json()
    assert body["errors"] == ["tier 1 up to: Write the number without an exponent (1000)."]
    assert _rows() == before


def test_the_price_preview_needs_a_staff_user_who_may_view_rate_cards(client):
    assert _preview(client, price_type="unit", unit_amount="1", currency="USD").status_code == 302  # login
    nobody = User.objects.create_user("nobody", password="pw-123456", is_staff=True)
    client.force_login(nobody)
    assert _preview(client, price_type="unit", unit_amount="1", currency="USD").status_code == 403


def test_the_forms_load_the_preview_script_and_show_the_saved_price(admin_client):
    plan = token_plan(publish=False, extra=[platform_fee()])
    page = admin_client.get(f"/admin/catalog/plan/{plan.pk}/change/").content.decode()
    assert "catalog/price_preview.js" in page and 'id="price-preview-config"' in page
    assert "/admin/catalog/ratecard/price-preview/" in page
    rate_card = RateCard.objects.get(plan=plan, key="platform")
    page = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/").content.decode()
    assert "catalog/price_preview.js" in page
    assert "USD 49.00 per month (in advance)" in page


def test_decimals_on_the_plan_page_are_normalised(admin_client):

    plan = token_plan(publish=False, extra=[quota(), graduated_out()])
    page = admin_client.get(f"/admin/catalog/plan/{plan.pk}/change/").content.decode()
    assert "hard limit 500,000 per billing period" in page
    assert ".000000000" not in page  # no numeric(38,15) padding anywhere: inputs, prices, limits
    rate_card = RateCard.objects.get(plan=plan, key="ai-token-out")
    page = admin_client.get(f"/admin/catalog/ratecard/{rate_card.pk}/change/").content.decode()
    assert "up to 1000000\n" in page and ".000000000" not in page


@pytest.mark.parametrize("params", [
    {"price_type": "unit", "unit_amount": "1\x00", "currency": "USD"},
    {"price_type": "unit", "unit_amount": "1", "currency": "US\x00"},
    {"price_type": "unit", "unit_amount": "1", "currency": "USD", "feature": "\x00"},
    {"price_type": "unit", "unit_amount": "1", "currency": "USD", "rate_card": "99999999999999999999999"},
    {"price_type": "bogus", "currency": "USD"},
    {"price_type": "volume", "currency": "USD", "tiers": "1", "tier_up_to": ["1"] * 101},
])
def test_the_price_preview_answers_hostile_input_with_errors(admin_client, params):
    response = _preview(admin_client, **params)
    assert response.status_code == 200
    body = response.json()
    assert body["summary"] == "" and body["errors"]
