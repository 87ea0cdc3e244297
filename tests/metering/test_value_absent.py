"""``value_absent``: an event without the value property counts nothing (``zero``) or is an event problem
(``invalid``, the default). The same rule on the live path (raw events), after the rollups, and in the event
explanation; a present value that is not a number stays a problem. The llm_tokens preset's companion meters
(cache read / write and reasoning tokens) use it. Run with DATABASE_URL too (PostgreSQL's SQL is its own)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from metering import jsonpath
from metering.meter_rules import KONG_PRESETS, PRESET_COMPANIONS, adds_nothing, meter_definition, validate_meter
from metering.models import Event, HourlyUsage, Meter
from metering.selectors.event_problems import meter_problems
from metering.selectors.usage import meter_query, usage_total
from metering.services.meters import MeterSlugTaken, MeterValidationError, meter_create_from_preset, meter_update
from metering.services.rollups import meter_rollups_reset
from tests.builders import bearer, ingest, llm_event, make_meter, roll_up

CACHE = "$.cache_read_tokens"


def window() -> tuple[dt.datetime, dt.datetime]:
    now = timezone.now()
    return now - dt.timedelta(days=1), now + dt.timedelta(hours=1)


def cache_meter(**overrides) -> Meter:
    fields = {"slug": "llm_cache_read_tokens", "name": "Cache reads", "value_property": CACHE,
              "value_absent": "zero", "group_by": {"model": "$.model", "type": "$.type"}, **overrides}
    return make_meter(**fields)


# --- the rule ------------------------------------------------------------------------------------------------


def test_the_python_rule():
    path = jsonpath.parse(CACHE)
    for data in ({}, {"cache_read_tokens": None}, None, {"other": 1}):
        assert jsonpath.numeric_value(path, data, absent_zero=True) == (Decimal(0), None)
        assert jsonpath.numeric_value(path, data) == (None, f"value at {CACHE} is missing")
    assert jsonpath.numeric_value(path, {"cache_read_tokens": 7}, absent_zero=True) == (Decimal(7), None)
    assert jsonpath.numeric_value(path, {"cache_read_tokens": "8"}, absent_zero=True) == (Decimal(8), None)
    for bad, why in (("many", "is not a number"), (True, "is not a number"), ({}, "is not a number"),
                     ([], "is not a number"), ("1e400000", "is out of range"), (10**19, "is out of range"),
                     ("\x00", "is not a number")):
        assert jsonpath.numeric_value(path, {"cache_read_tokens": bad}, absent_zero=True) == (
            None, f"value at {CACHE} {why}"), bad
    deeper = jsonpath.parse("$.usage.cache.read")
    assert jsonpath.numeric_value(deeper, {"usage": 5}, absent_zero=True) == (Decimal(0), None)  # leads nowhere


def test_validation():
    base: dict[str, Any] = {"slug": "m", "name": "m", "event_type": "t", "group_by": {}}
    assert validate_meter(**base, aggregation="SUM", value_property=CACHE, value_absent="zero") == {}
    for aggregation in ("AVG", "MIN", "MAX", "LATEST"):
        assert validate_meter(**base, aggregation=aggregation, value_property=CACHE, value_absent="zero") == {}
    assert validate_meter(**base, aggregation="SUM", value_property=CACHE) == {}  # the default: invalid
    assert validate_meter(**base, aggregation="COUNT", value_property="", value_absent="zero") == {
        "value_absent": "an absent value can count as zero only for SUM, AVG, MIN, MAX, LATEST, not COUNT"}
    assert set(validate_meter(**base, aggregation="UNIQUE_COUNT", value_property="$.id", value_absent="zero")) == {
        "value_absent"}
    for wrong in ("maybe", "", None, 0, True, "zero\x00", ["zero"]):
        assert validate_meter(**base, aggregation="SUM", value_property=CACHE, value_absent=wrong) == {
            "value_absent": "value absent must be one of invalid, zero"}, wrong


# --- live path and rollups agree -----------------------------------------------------------------------------


def _events() -> list[dict]:
    return [
        llm_event(event_id="read-10", time=None, cache_read_tokens=10),
        llm_event(event_id="no-field", time=None),
        llm_event(event_id="null", time=None, cache_read_tokens=None),
        llm_event(event_id="text-5", time=None, cache_read_tokens="5", kind="response"),
        llm_event(event_id="bad", time=None, cache_read_tokens="lots"),
        llm_event(event_id="negative", time=None, cache_read_tokens=-1),  # a number: counted, as any meter's
    ]


def _values(meter: Meter, **params) -> list:
    start, end = window()
    rows = meter_query(meter=meter, start=start, end=end, subjects=["kong-air"], **params)
    return [(row.group_by, row.value) for row in rows]


@pytest.mark.django_db(transaction=True)
def test_absent_counts_zero_live_and_after_rollup():
    zero = cache_meter()
    strict = cache_meter(slug="strict_cache", value_absent="invalid")
    averaged = cache_meter(slug="avg_cache", aggregation="AVG")
    strict_avg = cache_meter(slug="strict_avg_cache", aggregation="AVG", value_absent="invalid")
    minimum = cache_meter(slug="min_cache", aggregation="MIN")
    ingest(_events())
    start, end = window()

    def measured() -> dict:
        return {
            "sum": usage_total(meter=zero, subjects=["kong-air"], start=start, end=end),
            "strict sum": usage_total(meter=strict, subjects=["kong-air"], start=start, end=end),
            "avg": _values(averaged), "strict avg": _values(strict_avg), "min": _values(minimum),
            "by type": _values(zero, group_by=["type"]),
        }

    expected = {
        "sum": 14, "strict sum": 14,  # absent adds nothing either way to a sum
        "avg": [({}, Decimal(14) / 5)],  # 10, 0, 0, 5, -1: the absent ones count as 0
        "strict avg": [({}, Decimal(14) / 3)],  # 10, 5, -1
        "min": [({}, -1)],
        "by type": [({"type": "request"}, 9), ({"type": "response"}, 5)],
    }
    live = measured()
    assert _close(live, expected)
    roll_up()
    folded = HourlyUsage.objects.filter(series__meter=zero)
    assert sum(row.event_count for row in folded) == 6 and sum(row.value_count for row in folded) == 5
    assert sum(row.value_sum for row in folded) == 14
    strict_folded = HourlyUsage.objects.filter(series__meter=strict)
    assert sum(row.value_count for row in strict_folded) == 3  # only the present numbers
    assert _close(measured(), expected)  # the same answers from the rollups
    # and again after a rebuild from the raw events
    meter_rollups_reset(meter=averaged)
    roll_up(Meter.objects.get(pk=averaged.pk))
    assert _close(_values(Meter.objects.get(pk=averaged.pk)), expected["avg"])


def _close(actual, expected) -> bool:
    """Equal, numbers compared to 10 significant digits (AVG divides)."""
    if isinstance(expected, dict):
        return actual.keys() == expected.keys() and all(_close(actual[k], expected[k]) for k in expected)
    if isinstance(expected, list | tuple):
        return len(actual) == len(expected) and all(_close(a, e) for a, e in zip(actual, expected, strict=True))
    if isinstance(expected, int | Decimal | float) and not isinstance(expected, bool):
        assert abs(Decimal(str(actual)) - Decimal(str(expected))) < Decimal("1e-9"), (actual, expected)
        return True
    assert actual == expected, (actual, expected)
    return True


@pytest.mark.django_db(transaction=True)
def test_absent_is_no_event_problem_but_a_bad_value_is():
    cache_meter()
    ingest(_events())
    problems = meter_problems(list(Event.objects.order_by("id")))
    by_id = {Event.objects.get(pk=pk).event_id: p["validationError"] for pk, p in problems.items()}
    assert by_id == {"bad": f"value at {CACHE} is not a number"}
    Meter.objects.filter(slug="llm_cache_read_tokens").update(value_absent="invalid")
    problems = meter_problems(list(Event.objects.order_by("id")))
    by_id = {Event.objects.get(pk=pk).event_id: p["validationError"] for pk, p in problems.items()}
    assert by_id == {"no-field": f"value at {CACHE} is missing", "null": f"value at {CACHE} is missing",
                     "bad": f"value at {CACHE} is not a number"}


@pytest.mark.django_db
def test_the_events_list_shows_it(api, read_token):
    cache_meter()
    ingest(_events())
    response = api.get("/api/v1/events", {"limit": 100}, **bearer(read_token))
    assert response.status_code == 200
    errors = {row["event"]["id"]: row["validationError"] for row in response.json()}
    assert errors["bad"] == f"value at {CACHE} is not a number"
    for counted in ("no-field", "null", "read-10"):  # no value problem (the customers layer's remark is all)
        assert errors[counted] == "no customer found for event subject: kong-air"


def test_adds_nothing():
    zero = meter_definition(Meter(event_type="t", aggregation="SUM", value_property=CACHE, value_absent="zero"))
    assert adds_nothing(zero, {}) and adds_nothing(zero, {"cache_read_tokens": 0})
    assert not adds_nothing(zero, {"cache_read_tokens": 3}) and not adds_nothing(zero, {"cache_read_tokens": "x"})
    strict = meter_definition(Meter(event_type="t", aggregation="SUM", value_property=CACHE))
    assert not adds_nothing(strict, {})  # a problem, reported as one
    count = meter_definition(Meter(event_type="t", aggregation="COUNT", value_property=""))
    assert not adds_nothing(count, {})


@pytest.mark.django_db
def test_changing_it_rebuilds_and_is_refused_on_a_mismatched_aggregation():
    meter = cache_meter()
    version = meter.definition_version
    meter = meter_update(meter=meter, value_absent="invalid")
    assert meter.definition_version == version + 1 and meter.value_absent == "invalid"
    with pytest.raises(MeterValidationError) as info:
        meter_update(meter=meter, aggregation="COUNT", value_property="", value_absent="zero")
    assert set(info.value.errors) == {"value_absent"}
    with pytest.raises(MeterValidationError):
        meter_update(meter=meter, value_absent="nothing")
    meter.refresh_from_db()
    assert meter.value_absent == "invalid" and meter.definition_version == version + 1


# --- the llm_tokens preset and its companions ----------------------------------------------------------------


def test_the_companions_are_the_presets_events_with_another_value():
    main = KONG_PRESETS["llm_tokens"]
    companions = PRESET_COMPANIONS["llm_tokens"]
    assert [(c["slug"], c["value_property"]) for c in companions] == [
        ("llm_cache_read_tokens", "$.cache_read_tokens"), ("llm_cache_write_tokens", "$.cache_write_tokens"),
        ("llm_reasoning_tokens", "$.reasoning_tokens")]
    for companion in companions:
        assert (companion["event_type"], companion["aggregation"], companion["group_by"]) == (
            main["event_type"], main["aggregation"], main["group_by"])
        assert companion["value_absent"] == "zero"
        assert validate_meter(**companion) == {}
    assert "value_absent" not in main  # llm_tokens itself: a missing $.tokens is still an event problem


@pytest.mark.django_db
def test_the_preset_creates_its_companions_once():
    created = meter_create_from_preset(preset="llm_tokens")
    assert [m.slug for m in created] == ["llm_tokens", "llm_cache_read_tokens", "llm_cache_write_tokens",
                                         "llm_reasoning_tokens"]
    assert [m.value_absent for m in created] == ["invalid", "zero", "zero", "zero"]
    with pytest.raises(MeterSlugTaken):
        meter_create_from_preset(preset="llm_tokens")
    Meter.objects.filter(slug="llm_cache_write_tokens").delete()
    assert [m.slug for m in meter_create_from_preset(preset="llm_tokens")] == ["llm_cache_write_tokens"]
    with pytest.raises(MeterValidationError):
        meter_create_from_preset(preset="nope")
    assert [m.slug for m in meter_create_from_preset(preset="api_requests")] == ["api_requests"]


@pytest.mark.django_db(transaction=True)
def test_companions_count_the_fields_kong_events_may_carry():
    meter_create_from_preset(preset="llm_tokens")
    ingest([llm_event(event_id="in", time=None, tokens=100, cache_read_tokens=60, cache_write_tokens=20),
            llm_event(event_id="out", time=None, tokens=40, kind="response", reasoning_tokens=25),
            llm_event(event_id="plain", time=None, tokens=7)])
    start, end = window()

    def totals() -> dict:
        return {m.slug: usage_total(meter=m, subjects=["kong-air"], start=start, end=end)
                for m in Meter.objects.order_by("slug")}

    expected = {"llm_tokens": 147, "llm_cache_read_tokens": 60, "llm_cache_write_tokens": 20,
                "llm_reasoning_tokens": 25}
    assert totals() == expected
    roll_up()
    assert totals() == expected
    assert meter_problems(list(Event.objects.all())) == {}


# --- admin and API -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_preset_adds_missing_companions(admin_client):
    make_meter()  # llm_tokens exists, its companions do not (an installation from before them)
    page = admin_client.get("/admin/metering/meter/").content.decode()
    assert "Add its companion meters" in page and "llm_cache_read_tokens ($.cache_read_tokens" in page
    response = admin_client.post("/admin/metering/meter/presets/llm_tokens/", follow=True)
    assert "Companion meters llm_cache_read_tokens, llm_cache_write_tokens, llm_reasoning_tokens of llm_tokens " \
           "added" in response.content.decode()
    assert Meter.objects.count() == 4


@pytest.mark.django_db
def test_admin_form_edits_it(admin_client):
    fields = {"slug": "cache", "name": "Cache", "event_type": "kong.llm_request", "aggregation": "SUM",
              "value_property": CACHE, "value_absent": "zero", "group_by": '{"model": "$.model"}'}
    response = admin_client.post("/admin/metering/meter/add/", fields)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Meter.objects.get(slug="cache").value_absent == "zero"
    page = admin_client.get(f"/admin/metering/meter/{Meter.objects.get(slug='cache').pk}/change/").content.decode()
    assert 'name="value_absent"' in page and "cache_read_tokens" in page  # the field and its help text
    for wrong, error in (({"aggregation": "COUNT", "value_property": ""}, "only for SUM"),
                         ({"value_absent": "maybe"}, "Select a valid choice")):
        response = admin_client.post("/admin/metering/meter/add/", {**fields, "slug": "other", **wrong})
        assert response.status_code == 200
        assert error in str(response.context["adminform"].form.errors)
    assert not Meter.objects.filter(slug="other").exists()


@pytest.fixture
def manage_token(make_token):
    return make_token("read", "manage", name="ops")


@pytest.mark.django_db
def test_api_create_read_and_change(api, manage_token):
    body = {"slug": "cache", "eventType": "kong.llm_request", "aggregation": "SUM", "valueProperty": CACHE,
            "valueAbsent": "zero", "groupBy": {"model": "$.model"}}
    response = api.post("/api/v1/meters", body, format="json", **bearer(manage_token))
    assert response.status_code == 201, response.content
    assert response.json()["valueAbsent"] == "zero"
    assert api.get("/api/v1/meters/cache", **bearer(manage_token)).json()["valueAbsent"] == "zero"
    count = api.post("/api/v1/meters", {"slug": "calls", "eventType": "x", "aggregation": "COUNT"}, format="json",
                     **bearer(manage_token)).json()
    assert "valueAbsent" not in count and "valueProperty" not in count
    # a body means the same whatever the stored meter: valueAbsent goes with aggregation, "invalid" unless sent
    changed = api.put("/api/v1/meters/cache", {"aggregation": "MAX", "valueProperty": CACHE}, format="json",
                      **bearer(manage_token))
    assert changed.status_code == 200 and changed.json()["valueAbsent"] == "invalid"
    renamed = api.put("/api/v1/meters/cache", {"name": "Cache reads"}, format="json", **bearer(manage_token))
    assert renamed.json()["valueAbsent"] == "invalid"


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "body", "field"), [
    ("post", {"aggregation": "SUM", "valueProperty": CACHE, "valueAbsent": "maybe"}, "valueAbsent"),
    ("post", {"aggregation": "SUM", "valueProperty": CACHE, "valueAbsent": 0}, "valueAbsent"),
    ("post", {"aggregation": "SUM", "valueProperty": CACHE, "valueAbsent": ["zero"]}, "valueAbsent"),
    ("post", {"aggregation": "SUM", "valueProperty": CACHE, "valueAbsent": "zero\u0000"}, "valueAbsent"),
    ("post", {"aggregation": "COUNT", "valueAbsent": "zero"}, "valueAbsent"),
    ("post", {"aggregation": "UNIQUE_COUNT", "valueProperty": "$.id", "valueAbsent": "zero"}, "valueAbsent"),
    ("put", {"valueAbsent": "zero"}, "valueAbsent"),
    ("put", {"aggregation": "COUNT", "valueProperty": "", "valueAbsent": "zero"}, "valueAbsent"),
])
def test_api_refuses_bad_values(api, manage_token, method, body, field):
    make_meter()
    before = list(Meter.objects.values_list("slug", "aggregation", "value_absent", "definition_version"))
    if method == "post":
        response = api.post("/api/v1/meters", {"slug": "cache", "eventType": "kong.llm_request", **body},
                            format="json", **bearer(manage_token))
    else:
        response = api.put("/api/v1/meters/llm_tokens", body, format="json", **bearer(manage_token))
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert field in [error["field"] for error in problem["errors"]] if "errors" in problem else "NUL" in str(problem)
    assert list(Meter.objects.values_list("slug", "aggregation", "value_absent", "definition_version")) == before
