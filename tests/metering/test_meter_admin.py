"""Admin screens for meters: Kong presets, validation as form errors, rebuild with progress, usage explorer."""

from __future__ import annotations

import pytest

from common.models import JobRun
from metering.models import HourlyUsage, Meter
from tests.builders import ingest, iso, llm_event, make_meter, roll_up, utc


@pytest.mark.django_db
def test_kong_presets_are_one_click(admin_client, kong_fixtures):
    page = admin_client.get("/admin/metering/meter/")
    assert b"Add AI Gateway Tokens" in page.content and b"Add API Requests" in page.content
    response = admin_client.post("/admin/metering/meter/presets/llm_tokens/")
    meter = Meter.objects.get(slug="llm_tokens")
    assert response.status_code == 302 and response["Location"].endswith(f"/{meter.pk}/change/")
    recommended = {m["slug"]: m for m in kong_fixtures["recommended_meters"]}
    for slug in ("llm_tokens", "api_requests"):
        if slug != "llm_tokens":
            admin_client.post(f"/admin/metering/meter/presets/{slug}/")
        meter = Meter.objects.get(slug=slug)
        expected = recommended[slug]
        assert (meter.event_type, meter.aggregation, meter.group_by) == (
            expected["event_type"], expected["aggregation"], expected["group_by"])
        assert meter.value_property == expected.get("value_property", "")
    assert b"already added" in admin_client.get("/admin/metering/meter/").content
    admin_client.post("/admin/metering/meter/presets/llm_tokens/")
    assert sorted(Meter.objects.values_list("slug", flat=True)) == [  # the preset's meters, each once
        "api_requests", "llm_cache_read_tokens", "llm_cache_write_tokens", "llm_reasoning_tokens", "llm_tokens"]


@pytest.mark.django_db
def test_meter_form_shows_rule_violations_as_form_errors(admin_client):
    response = admin_client.post("/admin/metering/meter/add/", {
        "slug": "Bad Slug", "name": "x", "event_type": "kong.llm_request", "aggregation": "SUM",
        "value_property": "$..tokens", "group_by": '{"subject": "$.user"}'})
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"slug", "value_property", "group_by"}
    assert Meter.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_meter_form_creates_and_changing_the_definition_rebuilds(admin_client):
    ingest([llm_event(tokens=3, kind="request"), llm_event(tokens=4, kind="response")])
    response = admin_client.post("/admin/metering/meter/add/", {
        "slug": "llm_tokens", "name": "Tokens", "event_type": "kong.llm_request", "aggregation": "SUM",
        "value_property": "$.tokens", "group_by": "{}"})
    assert response.status_code == 302
    meter = Meter.objects.get()
    roll_up(meter)
    response = admin_client.post(f"/admin/metering/meter/{meter.pk}/change/", {
        "name": "Tokens", "event_type": "kong.llm_request", "aggregation": "SUM", "value_property": "$.tokens",
        "group_by": '{"type": "$.type"}'}, follow=True)
    assert b"is being rebuilt" in response.content
    roll_up(meter)
    hours = HourlyUsage.objects.filter(series__meter=meter).select_related("series")
    assert sorted(h.series.group_values["type"] for h in hours) == ["request", "response"]


@pytest.mark.django_db(transaction=True)
def test_rebuild_action_confirms_then_runs_a_tracked_job(admin_client):
    meter = make_meter()
    ingest([llm_event(tokens=5) for _ in range(3)])
    roll_up(meter)
    data = {"action": "rebuild_usage", "_selected_action": [meter.pk]}
    assert b"Rebuild usage from raw events?" in admin_client.post("/admin/metering/meter/", data).content
    response = admin_client.post("/admin/metering/meter/", {**data, "confirmed": "yes"})
    run = JobRun.objects.get(kind="rebuild_usage")
    assert response["Location"].endswith(f"/admin/common/jobrun/{run.pk}/change/")
    assert run.status == JobRun.Status.SUCCEEDED and run.progress_done == run.progress_total == 3
    page = admin_client.get(response["Location"])
    assert b"llm_tokens: rebuilt from 3 events" in page.content


@pytest.mark.django_db
def test_usage_explorer_table_chart_and_csv(admin_client):
    meter = make_meter()
    ingest([llm_event(tokens=10, time=iso(utc(2026, 11, 3, 10))), llm_event(tokens=5, time=iso(utc(2026, 11, 4, 9)),
                                                                             kind="response")])
    params = {"meter": meter.pk, "start": "2026-11-01T00:00", "end": "2026-11-10T00:00", "window_size": "DAY",
              "time_zone": "UTC", "group_by": "type", "subjects": "kong-air"}
    page = admin_client.get("/admin/metering/meter/usage/", params)
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and "total 15" in html
    assert "request" in html and "response" in html
    csv = admin_client.get("/admin/metering/meter/usage/", {**params, "format": "csv"})
    assert csv.content.decode().splitlines() == [
        "window_start,window_end,subject,type,value",
        "2026-11-03T00:00:00Z,2026-11-04T00:00:00Z,kong-air,request,10",
        "2026-11-04T00:00:00Z,2026-11-05T00:00:00Z,kong-air,response,5",
    ]


@pytest.mark.django_db
def test_usage_explorer_reports_bad_input_as_form_errors(admin_client):
    meter = make_meter()
    page = admin_client.get("/admin/metering/meter/usage/", {
        "meter": meter.pk, "start": "2026-11-01T00:00", "end": "2026-11-10T00:00", "window_size": "DAY",
        "time_zone": "Mars/Base", "group_by": ""})
    assert "time_zone" in page.context["form"].errors
    page = admin_client.get("/admin/metering/meter/usage/", {
        "meter": meter.pk, "start": "2026-11-01T00:00", "end": "2026-11-10T00:00", "window_size": "DAY",
        "time_zone": "UTC", "group_by": "colour"})
    assert "colour" in str(page.context["form"].errors)


@pytest.mark.django_db(transaction=True)
def test_subjects_and_event_types_seen(admin_client):
    make_meter()
    ingest([llm_event(subject="kong-air"), {"specversion": "1.0", "id": "u1", "source": "s", "type": "custom.thing",
                                            "subject": "other"}])
    roll_up()
    subjects = admin_client.get("/admin/metering/subjectactivity/").content.decode()
    assert "kong-air" in subjects and "other" in subjects
    types = admin_client.get("/admin/metering/eventtypeactivity/").content.decode()
    assert "no meter: these events are not billed" in types and "llm_tokens" in types
