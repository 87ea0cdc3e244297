"""Key/value rows instead of JSON text areas (meter group-by, feature filters, customer metadata): what people type
in rows becomes a dict, hostile rows are form errors naming the row, the old JSON text still works, the rules of
each form still apply, and the suggestions come from recent events and records."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.http import QueryDict

from catalog.models import Feature
from common.key_value import MAX_PAIRS, KeyValueField, KeyValueWidget
from customers.models import Customer
from metering.models import Meter
from tests.builders import admin_form_data, customer, form_by_id, ingest, llm_event, tokens_meter


def _rows(name: str, pairs: list[tuple[str, str]]) -> QueryDict:
    data = QueryDict(mutable=True)
    for key, value in pairs:
        data.appendlist(f"{name}-key", key)
        data.appendlist(f"{name}-value", value)
    return data


def _clean(pairs: list[tuple[str, str]]):
    field = KeyValueField()
    return field.clean(KeyValueWidget().value_from_datadict(_rows("f", pairs), {}, "f"))


def test_rows_become_a_dict_and_empty_rows_are_skipped():
    assert _clean([("provider", " openai "), ("", ""), ("type", "request")]) == {"provider": "openai",
                                                                                "type": "request"}
    assert _clean([("", "")]) == {}
    assert _clean([]) == {}


@pytest.mark.parametrize("pairs, message", [
    ([("", "openai")], "row 1: the value “openai” needs a name"),
    ([("a", "1"), ("a", "2")], "row 2: “a” is already above"),
    ([("a\x00b", "1")], "row 1: remove the NUL character"),
    ([("a", "1\x00")], "row 1: remove the NUL character"),
    ([("a" * 201, "1")], "row 1: at most 200 characters each"),
    ([("a", "v" * 201)], "row 1: at most 200 characters each"),
    ([(f"k{n}", "v") for n in range(MAX_PAIRS + 1)], f"At most {MAX_PAIRS} pairs."),
    ([(f"k{n}", "v") for n in range(1000)], f"At most {MAX_PAIRS} pairs."),
])
def test_hostile_rows_are_errors_naming_the_row(pairs, message):
    with pytest.raises(ValidationError) as caught:
        _clean(pairs)
    assert message in caught.value.messages


def test_more_keys_than_values_are_read_as_empty_values():
    data = QueryDict(mutable=True)
    data.setlist("f-key", ["a", "b"])
    data.setlist("f-value", ["1"])
    field = KeyValueField()
    assert field.clean(KeyValueWidget().value_from_datadict(data, {}, "f")) == {"a": "1", "b": ""}


@pytest.mark.parametrize("text, expected", [
    ('{"provider": "openai"}', {"provider": "openai"}), ("", {}), ("{}", {}),
])
def test_json_text_is_still_read(text, expected):
    field = KeyValueField()
    data = QueryDict(mutable=True)
    data["f"] = text
    assert field.clean(KeyValueWidget().value_from_datadict(data, {}, "f")) == expected


@pytest.mark.parametrize("text", ["[1, 2]", "not json", '"a"', '{"a": "\\u0000"}\x00', "{" * 30000])
def test_bad_json_text_is_a_form_error(text):
    with pytest.raises(ValidationError):
        KeyValueField().clean(text)


def test_the_widget_renders_rows_and_datalists():
    widget = KeyValueWidget(suggestions=lambda: (["model", "provider"], ["$.model", "$.provider"]))
    html = widget.render("group_by", {"model": "$.model"}, {"id": "id_group_by"})
    assert 'name="group_by-key" value="model"' in html and 'name="group_by-value" value="$.model"' in html
    assert html.count('name="group_by-key"') == 2  # the pair and an empty row to type in
    assert '<option value="provider">' in html and '<option value="$.provider">' in html
    assert 'list="group_by-key-options"' in html
    hostile = widget.render("group_by", {'"><script>': "x"}, {})
    assert "<script>" not in hostile


@pytest.mark.django_db
def test_feature_filters_from_rows_keep_the_filter_rules(admin_client):
    meter = tokens_meter()
    base = {"key": "ai-token", "name": "AI tokens", "meter": str(meter.pk)}
    bad = admin_client.post("/admin/catalog/feature/add/", {
        **base, "meter_group_by_filters-key": ["colour"], "meter_group_by_filters-value": ["red"]})
    assert bad.status_code == 200
    errors = bad.context["adminform"].form.errors["meter_group_by_filters"]
    assert '"colour" is not a group-by of the meter' in errors[0]
    assert not Feature.objects.exists()
    nul = admin_client.post("/admin/catalog/feature/add/", {
        **base, "meter_group_by_filters-key": ["provider"], "meter_group_by_filters-value": ["open\x00ai"]})
    assert nul.status_code in (200, 400)
    assert not Feature.objects.exists()
    good = admin_client.post("/admin/catalog/feature/add/", {
        **base, "meter_group_by_filters-key": ["provider", "type", ""],
        "meter_group_by_filters-value": ["openai", "request", ""]})
    assert good.status_code == 302, good.context["adminform"].form.errors
    assert Feature.objects.get().meter_group_by_filters == {"provider": "openai", "type": "request"}


@pytest.mark.django_db
def test_feature_filter_suggestions_are_values_seen_in_events(admin_client):
    tokens_meter()
    ingest([llm_event(model="claude-3-5", provider="anthropic", time=None)])
    page = admin_client.get("/admin/catalog/feature/add/").content.decode()
    for option in ("model", "provider", "type", "claude-3-5", "anthropic", "request"):
        assert f'<option value="{option}">' in page, option


@pytest.mark.django_db
def test_meter_group_by_from_rows_keeps_the_meter_rules(admin_client):
    ingest([llm_event(time=None, region="eu")])
    base = {"slug": "tokens_by_region", "name": "Tokens by region", "description": "",
            "event_type": "kong.llm_request", "aggregation": "SUM", "value_property": "$.tokens"}
    page = admin_client.get("/admin/metering/meter/add/").content.decode()
    assert '<option value="region">' in page and '<option value="$.region">' in page  # from recent events
    bad = admin_client.post("/admin/metering/meter/add/", {
        **base, "group_by-key": ["region"], "group_by-value": ["region"]})
    assert bad.status_code == 200 and "group_by" in bad.context["adminform"].form.errors
    good = admin_client.post("/admin/metering/meter/add/", {
        **base, "group_by-key": ["region"], "group_by-value": ["$.region"]})
    assert good.status_code == 302, good.context["adminform"].form.errors
    assert Meter.objects.get(slug="tokens_by_region").group_by == {"region": "$.region"}


@pytest.mark.django_db
def test_customer_metadata_rows(admin_client):
    other = customer("globex", metadata={"crm_id": "4711"})
    air = customer("kong-air")
    url = f"/admin/customers/customer/{air.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert '<option value="crm_id">' in page and '<option value="4711">' in page
    data = admin_form_data(admin_client, url, "customer_form")
    data.pop("metadata-key", None)
    data.pop("metadata-value", None)
    post = QueryDict(mutable=True)
    for key, value in data.items():
        post[key] = value
    post.setlist("metadata-key", ["crm_id", "crm_id"])
    post.setlist("metadata-value", ["1", "2"])
    bad = admin_client.post(url, post.urlencode(), content_type="application/x-www-form-urlencoded")
    assert bad.status_code == 200
    air.refresh_from_db()
    assert air.metadata == {}
    post.setlist("metadata-key", ["crm_id", "tier"])
    post.setlist("metadata-value", ["42", "gold"])
    good = admin_client.post(url, post.urlencode(), content_type="application/x-www-form-urlencoded")
    assert good.status_code == 302
    air.refresh_from_db()
    assert air.metadata == {"crm_id": "42", "tier": "gold"}
    assert Customer.objects.get(pk=other.pk).metadata == {"crm_id": "4711"}


@pytest.mark.django_db
def test_metadata_values_that_are_not_text_survive_an_edit(admin_client):
    air = customer("kong-air", metadata={"seats": 5, "tags": ["a", "b"], "note": "x"})
    url = f"/admin/customers/customer/{air.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'value="[&quot;a&quot;, &quot;b&quot;]"' in page
    form = form_by_id(page, "customer_form")
    post = QueryDict(mutable=True)
    for element in form.inputs:
        name = element.get("name")
        if not name or element.get("type") in ("submit", "button") or (
                element.get("type") in ("checkbox", "radio") and "checked" not in element):
            continue
        post.appendlist(name, element.get("value", ""))
    post["_save"] = "Save"
    assert admin_client.post(url, post.urlencode(), content_type="application/x-www-form-urlencoded").status_code == 302
    air.refresh_from_db()
    assert air.metadata == {"seats": 5, "tags": ["a", "b"], "note": "x"}
