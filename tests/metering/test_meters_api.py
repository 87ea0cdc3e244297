"""OpenMeter v1 meter API: CRUD, query (JSON and CSV), errors, and events-list validation problems."""

from __future__ import annotations

import json

import pytest

from metering.models import Meter
from tests.builders import bearer, ingest, iso, llm_event, make_meter, roll_up, utc

pytestmark = pytest.mark.django_db

TOKENS = {"slug": "llm_tokens", "name": "AI Gateway Tokens", "eventType": "kong.llm_request",
          "aggregation": "SUM", "valueProperty": "$.tokens",
          "groupBy": {"model": "$.model", "provider": "$.provider", "type": "$.type"}}


@pytest.fixture
def manage_token(make_token):
    return make_token("read", "manage", name="ops")


def problem(response, status):
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    return response.json()


def test_create_get_list_update_delete(api, manage_token):
    created = api.post("/api/v1/meters", TOKENS, format="json", **bearer(manage_token))
    assert created.status_code == 201
    body = created.json()
    assert {k: body[k] for k in TOKENS} == TOKENS
    assert body["id"] == str(Meter.objects.get().pk)
    assert api.get("/api/v1/meters/llm_tokens", **bearer(manage_token)).json()["slug"] == "llm_tokens"
    assert api.get(f"/api/v1/meters/{body['id']}", **bearer(manage_token)).json()["slug"] == "llm_tokens"
    assert [m["slug"] for m in api.get("/api/v1/meters", **bearer(manage_token)).json()] == ["llm_tokens"]
    updated = api.put("/api/v1/meters/llm_tokens", {"name": "Tokens", "groupBy": {"model": "$.model"}},
                      format="json", **bearer(manage_token))
    assert updated.status_code == 200
    assert updated.json()["groupBy"] == {"model": "$.model"} and updated.json()["name"] == "Tokens"
    assert api.delete("/api/v1/meters/llm_tokens", **bearer(manage_token)).status_code == 204
    problem(api.get("/api/v1/meters/llm_tokens", **bearer(manage_token)), 404)


def test_count_meter_has_no_value_property(api, manage_token):
    body = {"slug": "api_requests", "eventType": "kong.api_request", "aggregation": "COUNT"}
    created = api.post("/api/v1/meters", body, format="json", **bearer(manage_token)).json()
    assert "valueProperty" not in created and created["name"] == "api_requests"


@pytest.mark.parametrize("change, field", [
    ({"slug": "LLM-Tokens"}, "slug"),
    ({"slug": "a" * 65}, "slug"),
    ({"aggregation": "MEDIAN"}, "aggregation"),
    ({"valueProperty": "$..tokens"}, "valueProperty"),
    ({"valueProperty": "tokens"}, "valueProperty"),
    ({"valueProperty": "$.items[*]"}, "valueProperty"),
    ({"valueProperty": None}, "valueProperty"),
    ({"aggregation": "COUNT"}, "valueProperty"),
    ({"groupBy": {"model": "$.model[?(@.x)]"}}, "groupBy"),
    ({"groupBy": {"subject": "$.user"}}, "groupBy"),
    ({"groupBy": ["model"]}, "groupBy"),
    ({"eventType": ""}, "eventType"),
    ({"colour": "blue"}, "colour"),
])
def test_invalid_meters_are_400_naming_the_field(api, manage_token, change, field):
    response = api.post("/api/v1/meters", {**TOKENS, **change}, format="json", **bearer(manage_token))
    assert field in [e["field"] for e in problem(response, 400)["errors"]]
    assert Meter.objects.count() == 0


def test_jsonpath_error_says_what_is_supported(api, manage_token):
    response = api.post("/api/v1/meters", {**TOKENS, "valueProperty": "$..tokens"}, format="json",
                        **bearer(manage_token))
    message = problem(response, 400)["errors"][0]["message"]
    assert "recursive descent" in message and "$.tokens" in message


def test_duplicate_slug_is_409(api, manage_token):
    api.post("/api/v1/meters", TOKENS, format="json", **bearer(manage_token))
    response = api.post("/api/v1/meters", TOKENS, format="json", **bearer(manage_token))
    body = problem(response, 409)
    assert body["errors"] == [{"field": "slug", "message": 'a meter with slug "llm_tokens" already exists'}]
    assert Meter.objects.count() == 1


def test_slug_cannot_change(api, manage_token):
    api.post("/api/v1/meters", TOKENS, format="json", **bearer(manage_token))
    response = api.put("/api/v1/meters/llm_tokens", {"slug": "other"}, format="json", **bearer(manage_token))
    assert problem(response, 400)["errors"][0]["field"] == "slug"


def test_write_needs_manage_scope_or_staff(api, read_token, admin_user):
    problem(api.post("/api/v1/meters", TOKENS, format="json", **bearer(read_token)), 403)
    api.force_login(admin_user)
    assert api.post("/api/v1/meters", TOKENS, format="json").status_code == 201


def test_unauthenticated_is_401(api):
    problem(api.get("/api/v1/meters"), 401)


@pytest.fixture
def usage(db):
    meter = make_meter(group_by={"model": "$.model", "type": "$.type"})
    ingest([
        llm_event(subject="kong-air", tokens=10, model="gpt-4o", time=iso(utc(2026, 11, 3, 10))),
        llm_event(subject="kong-air", tokens=5, model="gpt-4o", kind="response", time=iso(utc(2026, 11, 3, 11))),
        llm_event(subject="kong-air", tokens=7, model="llama", time=iso(utc(2026, 11, 4, 9))),
        llm_event(subject="acme", tokens=100, model="gpt-4o", time=iso(utc(2026, 11, 4, 12))),
    ])
    return meter


def query(api, token, slug="llm_tokens", **params):
    return api.get(f"/api/v1/meters/{slug}/query", params, **bearer(token))


def test_query_windows_and_groups(api, read_token, usage):
    response = query(api, read_token, **{"from": "2026-11-03T00:00:00Z", "to": "2026-11-05T00:00:00Z",
                                         "windowSize": "DAY", "groupBy": ["model"]})
    assert response.status_code == 200
    body = response.json()
    assert (body["from"], body["to"], body["windowSize"]) == ("2026-11-03T00:00:00Z", "2026-11-05T00:00:00Z", "DAY")
    assert body["data"] == [
        {"value": 15, "windowStart": "2026-11-03T00:00:00Z", "windowEnd": "2026-11-04T00:00:00Z",
         "subject": None, "groupBy": {"model": "gpt-4o"}},
        {"value": 100, "windowStart": "2026-11-04T00:00:00Z", "windowEnd": "2026-11-05T00:00:00Z",
         "subject": None, "groupBy": {"model": "gpt-4o"}},
        {"value": 7, "windowStart": "2026-11-04T00:00:00Z", "windowEnd": "2026-11-05T00:00:00Z",
         "subject": None, "groupBy": {"model": "llama"}},
    ]


def test_query_subjects_and_filters(api, read_token, usage):
    base = {"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}
    values = lambda **p: [(r["subject"], r["value"]) for r in query(api, read_token, **base, **p).json()["data"]]  # noqa: E731
    assert values(subject=["kong-air"]) == [("kong-air", 22)]
    assert values(groupBy=["subject"]) == [("acme", 100), ("kong-air", 22)]
    assert values(**{"filterGroupBy[model]": "gpt-4o", "groupBy": "subject"}) == [("acme", 100), ("kong-air", 15)]
    assert values(filterGroupBy=json.dumps({"type": "response"})) == [(None, 5)]
    assert values(advancedMeterGroupByFilters=json.dumps({"model": {"$ne": "gpt-4o"}})) == [(None, 7)]
    assert values(advancedMeterGroupByFilters=json.dumps({"model": {"$in": ["llama", "x"]}})) == [(None, 7)]


def test_query_post_variant(api, read_token, usage):
    response = api.post("/api/v1/meters/llm_tokens/query", {
        "from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z", "subject": ["acme"],
        "filterGroupBy": {"model": "gpt-4o"}}, format="json", **bearer(read_token))
    assert [(r["subject"], r["value"]) for r in response.json()["data"]] == [("acme", 100)]


def test_query_csv(api, read_token, usage):
    response = api.get("/api/v1/meters/llm_tokens/query",
                       {"from": "2026-11-03T00:00:00Z", "to": "2026-11-04T00:00:00Z", "windowSize": "DAY",
                        "groupBy": ["type"]}, HTTP_ACCEPT="text/csv", **bearer(read_token))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response.content.decode().splitlines() == [
        "window_start,window_end,subject,type,value",
        "2026-11-03T00:00:00Z,2026-11-04T00:00:00Z,,request,10",
        "2026-11-03T00:00:00Z,2026-11-04T00:00:00Z,,response,5",
    ]


def test_query_sees_events_the_moment_they_are_stored_and_after_rollup(api, read_token, usage):
    before = query(api, read_token, **{"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}).json()
    ingest([llm_event(tokens=1, time=iso(utc(2026, 11, 20)))])
    after = query(api, read_token, **{"from": "2026-11-01T00:00:00Z", "to": "2026-12-01T00:00:00Z"}).json()
    assert after["data"][0]["value"] == before["data"][0]["value"] + 1 == 123


def test_query_defaults_from_to_first_usage(api, read_token, usage):
    body = query(api, read_token, windowSize="DAY").json()
    assert body["from"] == "2026-11-03T00:00:00Z"
    assert sum(r["value"] for r in body["data"]) == 122


@pytest.mark.parametrize("params, field", [
    ({"windowSize": "WEEK"}, "windowSize"),
    ({"windowTimeZone": "Mars/Olympus"}, "windowTimeZone"),
    ({"from": "2026-11-05T00:00:00Z", "to": "2026-11-03T00:00:00Z"}, "to"),
    ({"from": "last week"}, "from"),
    ({"groupBy": "colour"}, "groupBy"),
    ({"advancedMeterGroupByFilters": "{not json"}, "advancedMeterGroupByFilters"),
    ({"advancedMeterGroupByFilters": '{"model": {"$regex": "gpt"}}'}, "advancedMeterGroupByFilters"),
    ({"advancedMeterGroupByFilters": '{"model": {"$in": []}}'}, "advancedMeterGroupByFilters"),
    ({"filterGroupBy": "[1,2]"}, "filterGroupBy"),
])
def test_invalid_query_parameters_are_400(api, read_token, usage, params, field):
    body = problem(query(api, read_token, **params), 400)
    assert body["errors"][0]["field"] == field


def test_query_unknown_meter_is_404(api, read_token):
    problem(query(api, read_token, slug="nope"), 404)


def test_events_list_shows_validation_problems(api, read_token, usage):
    ingest([llm_event(event_id="bad-value", tokens="ten", time=None),
            {"specversion": "1.0", "id": "no-meter", "source": "s", "type": "kong.api_request", "subject": "x"}])
    items = {i["event"]["id"]: i["validationError"] for i in api.get("/api/v1/events", **bearer(read_token)).json()}
    assert items["bad-value"] == "value at $.tokens is not a number"
    assert items["no-meter"] == "no meter found for event type: kong.api_request"


@pytest.mark.django_db(transaction=True)
def test_unique_count_through_the_api(api, read_token, manage_token):
    api.post("/api/v1/meters", {"slug": "models_used", "eventType": "kong.llm_request", "aggregation": "UNIQUE_COUNT",
                                "valueProperty": "$.model"}, format="json", **bearer(manage_token))
    ingest([llm_event(model="gpt-4o"), llm_event(model="llama"), llm_event(model="gpt-4o")])
    roll_up()
    data = query(api, read_token, slug="models_used", **{"from": "2026-11-01T00:00:00Z",
                                                         "to": "2026-12-01T00:00:00Z"}).json()["data"]
    assert [r["value"] for r in data] == [2]
