"""The OpenAPI schema tells the truth: its declarations, and real responses validated against it.

(The whole API is fuzzed against the same schema by schemathesis in CI: .ci/schemathesis.)
"""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from drf_spectacular.validation import validate_schema
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # drf-spectacular's dependency

from metering import jsonpath
from metering.windows import time_zone_names
from tests.builders import (
    bearer,
    cancelled_in_december,
    ingest,
    iso,
    llm_event,
    make_meter,
    utc,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(api, read_token):
    response = api.get("/api/schema/", {"format": "json"}, **bearer(read_token))
    assert response.status_code == 200
    return response.json()


def operations(schema):
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            yield f"{method.upper()} {path}", operation


def parameter(operation, name):
    return next(p for p in operation["parameters"] if p["name"] == name)


def test_schema_is_valid_openapi_31(schema):
    assert schema["openapi"] == "3.1.0"
    validate_schema(schema)
    assert {op["operationId"] for _, op in operations(schema)} >= {
        "ingestEvents", "listEvents", "listMeters", "createMeter", "getMeter", "updateMeter", "deleteMeter",
        "queryMeter", "queryMeterPost", "listFeatures", "listPlans", "getCustomerEntitlementValue", "listInvoices",
        "getInvoice", "voidInvoice", "reissueInvoice", "listCreditNotes", "getCreditNote", "ingestEventsKong"}


def test_every_error_is_problem_json(schema):
    for label, operation in operations(schema):
        codes = {code for code in operation["responses"] if code.startswith(("4", "5"))}
        assert {"401", "403", "429", "503"} <= codes, label
        assert not any(code.startswith("5") and code != "503" for code in codes), label
        for code in codes:
            content = operation["responses"][code]["content"]
            assert content == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}, (
                label, code)
    problem = schema["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) == {"type", "title", "status", "detail", "errors"}


def test_lists_are_arrays_and_shapes_are_named(schema):
    refs = {"listEvents": "IngestedEvent", "listMeters": "Meter", "listFeatures": "Feature", "listPlans": "Plan",
            "listInvoices": "Invoice", "listCreditNotes": "CreditNote"}
    for _, operation in operations(schema):
        if operation["operationId"] in refs:
            body = operation["responses"]["200"]["content"]["application/json"]["schema"]
            name = refs[operation["operationId"]]
            assert body == {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}
    singles = {"getMeter": "Meter", "getInvoice": "Invoice", "getCreditNote": "CreditNote",
               "getCustomerEntitlementValue": "EntitlementValue", "voidInvoice": "Invoice"}
    for _, operation in operations(schema):
        if operation["operationId"] in singles:
            body = operation["responses"]["200"]["content"]["application/json"]["schema"]
            assert body == {"$ref": f"#/components/schemas/{singles[operation['operationId']]}"}


def test_query_parameters_are_typed(schema):
    query = schema["paths"]["/api/v1/meters/{id_or_slug}/query"]["get"]
    typed = {name: parameter(query, name)["schema"]["anyOf"][0] for name in ("from", "to", "windowSize",
                                                                            "windowTimeZone")}
    assert typed["from"] == typed["to"] == {"type": "string", "format": "date-time"}
    assert typed["windowSize"]["enum"] == ["DAY", "HOUR", "MINUTE", "MONTH"]
    assert typed["windowTimeZone"]["enum"] == list(time_zone_names())
    for name in ("subject", "groupBy", "filterCustomerId"):
        declared = parameter(query, name)
        assert declared["schema"] == {"type": "array", "items": {"type": "string"}} and declared["explode"] is True
    filter_group_by = parameter(query, "filterGroupBy")
    assert (filter_group_by["style"], filter_group_by["explode"]) == ("deepObject", True)
    assert parameter(query, "advancedMeterGroupByFilters")["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AdvancedMeterGroupByFilters"}
    assert set(query["responses"]["200"]["content"]) == {"application/json", "text/csv"}
    status = parameter(schema["paths"]["/api/v1/invoices"]["get"], "status")
    assert status["schema"]["type"] == "array" and status["explode"] is True
    limit = parameter(schema["paths"]["/api/v1/events"]["get"], "limit")["schema"]["anyOf"][0]
    assert (limit["type"], limit["minimum"], limit["maximum"]) == ("integer", 1, 100)


def test_request_bodies(schema):
    ingest_body = schema["paths"]["/api/v1/events"]["post"]["requestBody"]
    assert ingest_body["required"] is True
    assert set(ingest_body["content"]) == {"application/cloudevents+json", "application/cloudevents-batch+json",
                                           "application/json"}
    responses = schema["paths"]["/api/v1/events"]["post"]["responses"]
    assert "204" in responses and "content" not in responses["204"]
    assert "202" in schema["paths"]["/api/v3/openmeter/events"]["post"]["responses"]
    components = schema["components"]["schemas"]
    create = components["MeterCreateValue"]
    assert create["additionalProperties"] is False and "valueProperty" in create["required"]
    assert create["properties"]["valueProperty"]["pattern"] == jsonpath.PATTERN
    assert components["MeterCreateCount"]["properties"]["aggregation"]["enum"] == ["COUNT"]
    void = schema["paths"]["/api/v1/invoices/{invoice_id}/void"]["post"]["requestBody"]
    assert void["required"] is False


@pytest.mark.parametrize("path", ['$.tokens', '$.usage.input_tokens', '$.choices[0].tokens', '$["x.y"]',
                                  '$["a\\"b"]', ' $.a ', '$..a', '$', '$.a[*]', '$["a\\q"]', '$[1234567890]',
                                  '$.1a', '$["\t"]', '$.a-b', '$[ "a" ]'])
def test_jsonpath_pattern_is_the_parser(path):
    try:
        jsonpath.parse(path)
        parsed = True
    except jsonpath.JsonPathError:
        parsed = False
    assert bool(re.match(jsonpath.PATTERN, path)) == parsed


def test_spectacular_command_writes_a_valid_schema(tmp_path):
    target = tmp_path / "openapi.yaml"
    call_command("spectacular", "--file", str(target), "--validate", "--fail-on-warn")
    assert target.read_text().startswith("openapi: 3.1.0")


# --- real responses against the schema -----------------------------------------------------------------------


def validate(schema, name_or_schema, instance):
    target = {"$ref": f"#/components/schemas/{name_or_schema}"} if isinstance(name_or_schema, str) else name_or_schema
    validator = Draft202012Validator({**target, "components": schema["components"]},
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(instance), key=str)
    assert not errors, errors[0]


def test_responses_match_the_schema(api, make_token, schema):
    token = make_token("read", "ingest", "manage")
    credit_note = cancelled_in_december()
    ingest([llm_event(tokens=5, time=iso(utc(2026, 11, 3, 10)))])
    make_meter(slug="requests", event_type="kong.api_request", aggregation="COUNT", value_property="")

    def get(path, **params):
        response = api.get(path, params, **bearer(token))
        assert response.status_code == 200, (path, response.content)
        return response.json()

    array = lambda name: {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}}  # noqa: E731
    validate(schema, array("Meter"), get("/api/v1/meters"))
    validate(schema, array("IngestedEvent"), get("/api/v1/events", **{"from": "2026-01-01T00:00:00Z"}))
    validate(schema, array("Feature"), get("/api/v1/features"))
    validate(schema, array("Plan"), get("/api/v1/plans"))
    invoices = get("/api/v1/invoices")
    assert invoices
    validate(schema, array("Invoice"), invoices)
    validate(schema, array("CreditNote"), get("/api/v1/credit-notes"))
    validate(schema, "CreditNote", get(f"/api/v1/credit-notes/{credit_note.number}"))
    validate(schema, "EntitlementValue", get("/api/v1/customers/kong-air/entitlements/ai-token/value"))
    for params in ({}, {"windowSize": "DAY", "windowTimeZone": "Europe/Berlin", "groupBy": ["model", "subject"]},
                   {"from": "2026-11-03T09:30:00Z", "to": "2026-11-04T00:00:00Z", "windowSize": "HOUR"}):
        validate(schema, "MeterQueryResult", get("/api/v1/meters/llm_tokens/query", **params))
    validate(schema, "MeterQueryResult", get("/api/v1/meters/requests/query"))
    error = api.get("/api/v1/meters/nope", **bearer(token))
    assert error.status_code == 404 and error["Content-Type"] == "application/problem+json"
    validate(schema, "Problem", error.json())
    bad = api.post("/api/v1/events", [{"id": ""}], format="json", **bearer(token))
    assert bad.status_code == 400
    validate(schema, "Problem", bad.json())
