"""A meter has at most 50 group-by keys: the API (400), the admin (form error) and billing_apply (named error)
refuse 51; 50 are accepted and fold on both databases."""

from __future__ import annotations

import io
import json

import pytest
import yaml
from django.core.management import CommandError, call_command

from metering.meter_rules import MAX_GROUP_BY, validate_meter
from metering.models import HourlyUsage, Meter
from tests.builders import bearer, ingest, llm_event, make_meter, roll_up

pytestmark = pytest.mark.django_db


def keys(n: int) -> dict[str, str]:
    return {f"k{i:02d}": f"$.k{i:02d}" for i in range(n)}


@pytest.fixture
def manage_token(make_token):
    return make_token("read", "manage", name="ops")


def test_the_rule():
    assert MAX_GROUP_BY == 50
    base = {"slug": "m", "name": "m", "event_type": "t", "aggregation": "COUNT", "value_property": ""}
    assert validate_meter(**base, group_by=keys(50)) == {}
    assert validate_meter(**base, group_by=keys(51)) == {"group_by": "a meter has at most 50 group-by keys, not 51"}
    assert "group_by" in validate_meter(**base, group_by=keys(10_000))


def test_api_refuses_51_on_create_and_update_and_accepts_50(api, manage_token):
    body = {"slug": "wide", "eventType": "kong.llm_request", "aggregation": "COUNT", "groupBy": keys(51)}
    response = api.post("/api/v1/meters", body, format="json", **bearer(manage_token))
    assert response.status_code == 400 and response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {"field": "groupBy", "message": "a meter has at most 50 group-by keys, not 51"}]
    assert not Meter.objects.exists()
    body["groupBy"] = keys(50)
    assert api.post("/api/v1/meters", body, format="json", **bearer(manage_token)).status_code == 201
    response = api.put("/api/v1/meters/wide", {"groupBy": keys(51)}, format="json", **bearer(manage_token))
    assert response.status_code == 400 and "at most 50 group-by keys" in response.json()["detail"]
    assert len(Meter.objects.get().group_by) == 50


def test_admin_form_error(admin_client):
    fields = {"slug": "wide", "name": "Wide", "event_type": "kong.llm_request", "aggregation": "COUNT",
              "value_property": "", "group_by": json.dumps(keys(51))}
    response = admin_client.post("/admin/metering/meter/add/", fields)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["group_by"] == ["a meter has at most 50 group-by keys, not 51"]
    assert not Meter.objects.exists()
    meter = make_meter(aggregation="COUNT", value_property="", group_by=keys(50))
    fields.pop("slug")
    response = admin_client.post(f"/admin/metering/meter/{meter.pk}/change/", fields)
    assert response.status_code == 200 and "group_by" in response.context["adminform"].form.errors


def test_billing_apply_names_the_entry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = {"meters": [{"slug": "wide", "name": "Wide", "event_type": "kong.llm_request", "aggregation": "COUNT",
                       "group_by": keys(51)}]}
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(CommandError) as info:
        call_command("billing_apply", "catalog.yaml", stdout=io.StringIO())
    assert "catalog.yaml: meters[0] (wide).group_by: a meter has at most 50 group-by keys, not 51" in str(info.value)
    assert not Meter.objects.exists()
    doc["meters"][0]["group_by"] = keys(50)
    (tmp_path / "catalog.yaml").write_text(yaml.safe_dump(doc))
    call_command("billing_apply", "catalog.yaml", stdout=io.StringIO())
    assert len(Meter.objects.get().group_by) == 50


@pytest.mark.django_db(transaction=True)
def test_fifty_group_bys_fold_and_query():
    meter = make_meter(group_by=keys(50))
    ingest([llm_event(tokens=7, **{f"k{i:02d}": f"v{i}" for i in range(50)}, time=None),
            llm_event(tokens=5, time=None)])
    roll_up(meter)
    series = sorted(row.series.group_values.get("k49") or "-"
                    for row in HourlyUsage.objects.filter(series__meter=meter).select_related("series"))
    assert series == ["-", "v49"]
    assert sum(row.value_sum for row in HourlyUsage.objects.filter(series__meter=meter)) == 12
