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


REFUSED_QUERY_VALUES = {  # parameter: values of it a query is refused for (a 400 naming the parameter)
    "windowSize": ["WEEK"],
    "windowTimeZone": ["Mars/Olympus"],
    "from": ["last week"],
    "groupBy": ["colour"],
    "advancedMeterGroupByFilters": ["{not json", '{"model": {"$regex": "gpt"}}', '{"model": {"$in": []}}',
                                    '{"model": {"$in": ["x", null]}}'],
    "filterGroupBy": ["[1,2]"],
}


@pytest.mark.parametrize("field, value", [(field, value) for field, values in REFUSED_QUERY_VALUES.items()
                                          for value in values])
def test_invalid_query_parameters_are_400(api, read_token, usage, field, value):
    body = problem(query(api, read_token, **{field: value}), 400)
    assert body["errors"][0]["field"] == field


def test_to_before_from_is_400(api, read_token, usage):
    body = problem(query(api, read_token, **{"from": "2026-11-05T00:00:00Z", "to": "2026-11-03T00:00:00Z"}), 400)
    assert body["errors"][0]["field"] == "to"


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


# --- unaligned from/to (answered like OpenMeter: windows clipped to [from, to)) ------------------------------


@pytest.fixture
def spring(db):
    """Events around Berlin's spring-forward night (29 March 2026, 02:00 CET → 03:00 CEST)."""
    meter = make_meter(group_by={"model": "$.model", "type": "$.type"})
    ingest([llm_event(tokens=tokens, time=iso(at)) for tokens, at in [
        (1, utc(2026, 3, 26, 23, 30)),   # Berlin 27 March 00:30: before `from`
        (2, utc(2026, 3, 27, 0, 0)),     # exactly `from`
        (4, utc(2026, 3, 27, 22, 59)),   # last minute of Berlin's 27 March
        (8, utc(2026, 3, 27, 23, 0)),    # Berlin 28 March 00:00
        (16, utc(2026, 3, 29, 21, 59)),  # last minute of the 23-hour 29 March
        (32, utc(2026, 3, 29, 22, 0)),   # Berlin 30 March 00:00
        (64, utc(2026, 3, 30, 11, 59)),  # just before `to`
        (128, utc(2026, 3, 30, 12, 0)),  # exactly `to`: out
    ]])
    return meter


SPRING_QUERY = {"from": "2026-03-27T00:00:00Z", "to": "2026-03-30T12:00:00Z", "windowSize": "DAY",
                "windowTimeZone": "Europe/Berlin"}
SPRING_ANSWER = [
    ("2026-03-27T00:00:00Z", "2026-03-27T23:00:00Z", 6),
    ("2026-03-27T23:00:00Z", "2026-03-28T23:00:00Z", 8),
    ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 16),
    ("2026-03-29T22:00:00Z", "2026-03-30T12:00:00Z", 96),
]


def windows_of(body):
    return [(r["windowStart"], r["windowEnd"], r["value"]) for r in body["data"]]


@pytest.mark.django_db(transaction=True)  # the aggregator folds committed events only
def test_unaligned_query_is_answered_with_clipped_windows(api, read_token, spring):
    response = query(api, read_token, **SPRING_QUERY)
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["from"], body["to"]) == ("2026-03-27T00:00:00Z", "2026-03-30T12:00:00Z")
    assert windows_of(body) == SPRING_ANSWER
    post = api.post("/api/v1/meters/llm_tokens/query", SPRING_QUERY, format="json", **bearer(read_token))
    assert windows_of(post.json()) == SPRING_ANSWER
    roll_up(spring)  # the rollups (whole UTC hours and days) and the raw edges give the same answer
    assert windows_of(query(api, read_token, **SPRING_QUERY).json()) == SPRING_ANSWER


def test_unaligned_month_query(api, read_token, spring):
    body = query(api, read_token, **{"from": "2026-03-27T00:00:00Z", "to": "2026-03-29T22:00:00Z",
                                     "windowSize": "MONTH", "windowTimeZone": "Europe/Berlin"}).json()
    assert windows_of(body) == [("2026-03-27T00:00:00Z", "2026-03-29T22:00:00Z", 30)]


def test_unaligned_query_csv(api, read_token, spring):
    response = api.get("/api/v1/meters/llm_tokens/query", {**SPRING_QUERY, "format": "csv"}, **bearer(read_token))
    assert response["Content-Type"].startswith("text/csv")
    assert response.content.decode().splitlines()[1:3] == [
        "2026-03-27T00:00:00Z,2026-03-27T23:00:00Z,,6", "2026-03-27T23:00:00Z,2026-03-28T23:00:00Z,,8"]


def test_query_out_of_calendar_range_is_400(api, read_token, spring):
    body = problem(query(api, read_token, **{"from": "0001-01-01T01:00:00Z", "to": "0001-01-05T00:00:00Z",
                                             "windowSize": "DAY", "windowTimeZone": "America/New_York"}), 400)
    assert body["errors"][0]["field"] == "from"
    assert query(api, read_token, **{"from": "9999-12-30T00:00:00Z", "to": "9999-12-31T23:00:00Z",
                                     "windowSize": "MONTH"}).status_code == 200


# --- what schemathesis found ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body, field", [
    ({"filterGroupBy": False}, "filterGroupBy"),
    ({"filterGroupBy": {"model": 5}}, "filterGroupBy"),
    ({"from": 5}, "from"),
    ({"windowTimeZone": ["UTC"]}, "windowTimeZone"),
    ({"groupBy": [1]}, "groupBy"),
    ({"subject": {"a": 1}}, "subject"),
])
def test_query_post_body_types_are_checked(api, read_token, usage, body, field):
    response = api.post("/api/v1/meters/llm_tokens/query", body, format="json", **bearer(read_token))
    assert problem(response, 400)["errors"][0]["field"] == field


def test_query_post_nulls_are_absent(api, read_token, usage):
    response = api.post("/api/v1/meters/llm_tokens/query", {
        "from": "2026-11-01T00:00:00Z", "to": None, "groupBy": None, "subject": None, "filterGroupBy": None,
        "windowSize": None, "windowTimeZone": None, "advancedMeterGroupByFilters": None}, format="json",
        **bearer(read_token))
    assert response.status_code == 200 and response.json()["data"][0]["value"] == 122


@pytest.mark.parametrize("body, field", [
    ({"aggregation": "COUNT", "valueProperty": {}}, "valueProperty"),
    ({"aggregation": "COUNT", "valueProperty": False}, "valueProperty"),
    ({"valueProperty": "$.tokens"}, "valueProperty"),
    ({"aggregation": "MAX"}, "valueProperty"),
    ({"name": "x" * 201}, "name"),
    ({"description": 5}, "description"),
    ({"aggregation": "SUM", "valueProperty": "$." + "a" * 300}, "valueProperty"),
    ({"groupBy": {"model": '$["a\\q"]'}}, "groupBy"),
    ({"groupBy": {"model": "$[1234567890]"}}, "groupBy"),
])
def test_meter_update_refusals(api, manage_token, body, field):
    api.post("/api/v1/meters", TOKENS, format="json", **bearer(manage_token))
    before = api.get("/api/v1/meters/llm_tokens", **bearer(manage_token)).json()
    assert problem(api.put("/api/v1/meters/llm_tokens", body, format="json", **bearer(manage_token)), 400)[
        "errors"][0]["field"] == field
    assert api.get("/api/v1/meters/llm_tokens", **bearer(manage_token)).json() == before


def test_meter_update_to_count_clears_the_value_property_and_no_body_changes_nothing(api, manage_token):
    api.post("/api/v1/meters", TOKENS, format="json", **bearer(manage_token))
    response = api.put("/api/v1/meters/llm_tokens", {"aggregation": "COUNT"}, format="json", **bearer(manage_token))
    assert response.status_code == 200 and "valueProperty" not in response.json()
    assert response.json()["aggregation"] == "COUNT"
    unchanged = api.put("/api/v1/meters/llm_tokens", **bearer(manage_token))
    assert unchanged.status_code == 200 and unchanged.json()["aggregation"] == "COUNT"


def test_nul_in_a_meter_body_is_refused_by_the_body_decoder(api, manage_token):
    api.post("/api/v1/meters", TOKENS, format="json", **bearer(manage_token))
    before = api.get("/api/v1/meters/llm_tokens", **bearer(manage_token)).json()
    body = problem(api.put("/api/v1/meters/llm_tokens", {"eventType": "a\x00b"}, format="json",
                           **bearer(manage_token)), 400)
    assert "NUL" in body["detail"]
    assert api.get("/api/v1/meters/llm_tokens", **bearer(manage_token)).json() == before
