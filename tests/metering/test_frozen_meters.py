"""Published means frozen, for meters too: a meter a published (or archived) plan version bills keeps its
event type, aggregation and value property (group-bys may be added); no feature loses a group-by it filters
on. Refused as admin form errors (never a 500, never error and success together), API 409, and a named
billing_apply error; a meter of draft plans only, or of no plan, still changes."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command

from catalog.services.plans import plan_archive
from metering.models import Meter
from metering.services.meters import MeterFrozen, MeterValidationError, meter_update
from tests.builders import ai_token_feature, bearer, token_plan, tokens_meter

pytestmark = pytest.mark.django_db

WAY_FORWARD = "To change how a published plan meters, publish a new plan version on a new meter."
GROUP_BY = {"model": "$.model", "provider": "$.provider", "type": "$.type"}


@pytest.fixture
def manage_token(make_token):
    return make_token("read", "manage", name="ops")


@pytest.fixture
def frozen() -> Meter:
    token_plan()  # published: bills feature ai-token (filters provider, type) on llm_tokens
    return tokens_meter()


def definition(meter: Meter) -> tuple:
    meter.refresh_from_db()
    return meter.event_type, meter.aggregation, meter.value_property, meter.group_by, meter.definition_version


def form_fields(meter: Meter, **changes) -> dict:
    fields = {"name": meter.name, "description": meter.description, "event_type": meter.event_type,
              "aggregation": meter.aggregation, "value_property": meter.value_property,
              "group_by": json.dumps(meter.group_by)}
    fields.update(changes)
    return fields


@pytest.mark.parametrize("change", [{"aggregation": "COUNT", "value_property": ""},
                                    {"event_type": "kong.other"}, {"value_property": "$.usage.tokens"}])
def test_service_refuses_changing_what_a_published_plan_meters(frozen, change):
    before = definition(frozen)
    with pytest.raises(MeterFrozen) as info:
        meter_update(meter=frozen, **change)
    assert set(info.value.errors) == set(change)
    message = str(info.value)
    assert "meter llm_tokens is frozen (plan token v1 (published) bills feature ai-token)" in message
    assert WAY_FORWARD in message
    assert definition(frozen) == before
    meter_update(meter=frozen, name="Renamed", description="names are free")  # not what it counts
    assert Meter.objects.get().name == "Renamed"


def test_archived_plans_freeze_too_and_drafts_do_not():
    plan = token_plan(publish=False)
    meter = tokens_meter()
    meter_update(meter=meter, value_property="$.usage.tokens")  # only a draft bills it
    meter_update(meter=meter, value_property="$.tokens")
    from catalog.services.plans import plan_publish

    plan_archive(plan=plan_publish(plan=plan))
    with pytest.raises(MeterFrozen, match=r"plan token v1 \(archived\) bills feature ai-token"):
        meter_update(meter=meter, aggregation="MAX")


def test_a_meter_of_no_plan_changes_freely():
    meter = tokens_meter()
    ai_token_feature()  # a feature, but no plan bills it
    assert meter_update(meter=meter, aggregation="MAX").aggregation == "MAX"


def test_group_bys_may_be_added_but_filtered_ones_neither_removed_nor_repathed(frozen):
    meter = meter_update(meter=frozen, group_by={**GROUP_BY, "region": "$.region"})
    assert meter.group_by["region"] == "$.region"
    meter = meter_update(meter=meter, group_by=GROUP_BY)  # unfiltered: may go again
    meter = meter_update(meter=meter, group_by={**GROUP_BY, "model": "$.llm.model"})  # unfiltered: new path ok
    with pytest.raises(MeterFrozen, match="feature ai-token filters on provider; change the feature first"):
        meter_update(meter=meter, group_by={"model": "$.model", "type": "$.type"})
    with pytest.raises(MeterFrozen, match="the JSONPath of type cannot change"):
        meter_update(meter=meter, group_by={**meter.group_by, "type": "$.kind"})


def test_removing_a_filtered_group_by_is_refused_even_for_draft_plans():
    meter = tokens_meter()
    ai_token_feature()
    with pytest.raises(MeterValidationError, match="feature ai-token filters on provider, type"):
        meter_update(meter=meter, group_by={"model": "$.model"})


# --- API ----------------------------------------------------------------------------------------------------


def test_api_answers_409_naming_what_freezes_it(api, manage_token, frozen):
    before = definition(frozen)
    response = api.put("/api/v1/meters/llm_tokens", {"aggregation": "COUNT", "valueProperty": ""}, format="json",
                       **bearer(manage_token))
    assert response.status_code == 409 and response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["title"] == "Meter in use"
    assert problem["detail"].startswith("aggregation, valueProperty: meter llm_tokens is frozen (plan token v1 "
                                        "(published) bills feature ai-token)")
    assert WAY_FORWARD in problem["detail"]
    assert {e["field"] for e in problem["errors"]} == {"aggregation", "valueProperty"}
    assert definition(frozen) == before
    # a malformed change is still a 400, and adding a group-by still works
    response = api.put("/api/v1/meters/llm_tokens", {"aggregation": "TOTAL"}, format="json", **bearer(manage_token))
    assert response.status_code == 400
    response = api.put("/api/v1/meters/llm_tokens", {"groupBy": {**GROUP_BY, "region": "$.region"}}, format="json",
                       **bearer(manage_token))
    assert response.status_code == 200 and "region" in response.json()["groupBy"]
    response = api.put("/api/v1/meters/llm_tokens", {"groupBy": {"model": "$.model"}}, format="json",
                       **bearer(manage_token))
    assert response.status_code == 409
    assert "feature ai-token filters on provider, type" in response.json()["detail"]


def test_api_changes_a_meter_only_drafts_use(api, manage_token):
    token_plan(publish=False)
    response = api.put("/api/v1/meters/llm_tokens", {"aggregation": "MAX", "valueProperty": "$.tokens"},
                       format="json", **bearer(manage_token))
    assert response.status_code == 200 and response.json()["aggregation"] == "MAX"


# --- admin --------------------------------------------------------------------------------------------------


def test_admin_shows_form_errors_and_no_success(admin_client, frozen):
    before = definition(frozen)
    response = admin_client.post(f"/admin/metering/meter/{frozen.pk}/change/",
                                 form_fields(frozen, aggregation="COUNT", value_property=""))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"aggregation", "value_property"}
    assert "meter llm_tokens is frozen (plan token v1 (published) bills feature ai-token)" in errors["aggregation"][0]
    assert WAY_FORWARD in errors["aggregation"][0]
    assert not list(get_messages(response.wsgi_request))
    assert definition(frozen) == before


def test_admin_removing_a_filtered_group_by_is_a_form_error_not_a_500(admin_client):
    meter = tokens_meter()
    ai_token_feature()  # no plan at all: the feature's filters alone hold provider and type
    response = admin_client.post(f"/admin/metering/meter/{meter.pk}/change/",
                                 form_fields(meter, group_by=json.dumps({"model": "$.model"})))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["group_by"] == [
        "feature ai-token filters on provider, type; change the feature first"]
    assert Meter.objects.get().group_by == GROUP_BY


def test_admin_adds_a_group_by_to_a_frozen_meter(admin_client, frozen):
    response = admin_client.post(f"/admin/metering/meter/{frozen.pk}/change/",
                                 form_fields(frozen, group_by=json.dumps({**GROUP_BY, "region": "$.region"})),
                                 follow=True)
    assert response.status_code == 200
    assert Meter.objects.get().group_by["region"] == "$.region"
    assert any("is being rebuilt" in str(m) for m in get_messages(response.wsgi_request))


def test_admin_save_refused_after_the_form_validated_is_an_error_only(admin_client, frozen, monkeypatch):
    """A plan published between the form's check and the save: a form error, no 500, no success."""
    from metering import forms

    monkeypatch.setattr(forms.MeterForm, "_refusals", lambda self, data: {})
    response = admin_client.post(f"/admin/metering/meter/{frozen.pk}/change/",
                                 form_fields(frozen, aggregation="MAX"), follow=True)
    assert response.status_code == 200
    assert not list(get_messages(response.wsgi_request))
    assert "is frozen" in response.context["adminform"].form.errors["aggregation"][0]
    assert Meter.objects.get().aggregation == "SUM"
    assert not LogEntry.objects.exists()


def test_admin_delete_refused_shows_only_the_error(admin_client, monkeypatch):
    """Features protect their meter: the delete page says so; were one added after that check, the
    refusal is the only message and nothing (not even the log entry) is written."""
    from metering.admin.meters import MeterAdmin

    meter = tokens_meter()
    ai_token_feature()
    page = admin_client.get(f"/admin/metering/meter/{meter.pk}/delete/")
    assert page.status_code == 200 and b"ai-token" in page.content
    real = MeterAdmin.get_deleted_objects

    def nothing_protected(self, objs, request):
        deleted, counts, perms, _ = real(self, objs, request)
        return deleted, counts, perms, []

    monkeypatch.setattr(MeterAdmin, "get_deleted_objects", nothing_protected)
    response = admin_client.post(f"/admin/metering/meter/{meter.pk}/delete/", {"post": "yes"}, follow=True)
    assert response.status_code == 200
    shown = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert shown == [("error", "meter llm_tokens is used by: ai-token; remove those first")]
    assert Meter.objects.filter(pk=meter.pk).exists()
    assert not LogEntry.objects.exists()
    # the bulk action likewise
    response = admin_client.post("/admin/metering/meter/", {"action": "delete_selected", "_selected_action": [meter.pk],
                                                            "post": "yes"}, follow=True)
    assert response.status_code == 200
    shown = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert shown == [("error", "meter llm_tokens is used by: ai-token; remove those first")]
    assert Meter.objects.filter(pk=meter.pk).exists() and not LogEntry.objects.exists()


# --- billing_apply ------------------------------------------------------------------------------------------


CATALOG = {
    "meters": [{"slug": "llm_tokens", "name": "AI Gateway Tokens", "event_type": "kong.llm_request",
                "aggregation": "SUM", "value_property": "$.tokens", "group_by": GROUP_BY}],
    "features": [{"key": "ai-token", "name": "ai-token", "meter": "llm_tokens",
                  "filters": {"provider": "openai", "type": "request"}}],
    "plans": [{"key": "token", "name": "Token", "currency": "USD", "billing_cadence": "P1M",
               "rate_cards": [{"key": "ai-token", "feature": "ai-token",
                               "price": {"type": "unit", "unit_amount": "0.00002"}}]}],
}


def apply(tmp_path, doc) -> str:
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    out = io.StringIO()
    call_command("billing_apply", "catalog.yaml", stdout=out)
    return out.getvalue()


def test_billing_apply_names_the_entry_the_meter_and_why(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    apply(tmp_path, CATALOG)
    before = definition(Meter.objects.get())
    doc = json.loads(json.dumps(CATALOG))
    doc["meters"][0]["aggregation"] = "MAX"
    doc["plans"][0]["name"] = "Token (renamed)"  # would publish v2: nothing of the file may be written
    with pytest.raises(CommandError) as info:
        apply(tmp_path, doc)
    message = str(info.value)
    assert message.startswith("Nothing applied: 1 problem:")
    assert ("catalog.yaml: meters[0] (llm_tokens).aggregation: refused: meter llm_tokens is frozen (plan token v1 "
            "(published) bills feature ai-token)") in message
    assert WAY_FORWARD in message
    assert definition(Meter.objects.get()) == before
    from catalog.models import Plan

    assert list(Plan.objects.values_list("version", "name")) == [(1, "Token")]
    # group-bys may be added from the file too
    doc = json.loads(json.dumps(CATALOG))
    doc["meters"][0]["group_by"] = {**GROUP_BY, "region": "$.region"}
    assert apply(tmp_path, doc).startswith("update meter llm_tokens: group_by")


def test_billing_apply_changes_a_meter_of_draft_plans(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = json.loads(json.dumps(CATALOG))
    doc["plans"][0]["status"] = "draft"
    apply(tmp_path, doc)
    doc["meters"][0]["aggregation"] = "MAX"
    assert apply(tmp_path, doc).startswith("update meter llm_tokens: aggregation SUM -> MAX")
    assert Meter.objects.get().aggregation == "MAX"
