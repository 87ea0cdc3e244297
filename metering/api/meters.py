"""OpenMeter v1 meter API: ``/api/v1/meters`` (list, create), ``/api/v1/meters/{idOrSlug}`` (get, put,
delete) and ``/api/v1/meters/{idOrSlug}/query`` (GET and POST; JSON, or CSV on ``Accept: text/csv``)."""

from __future__ import annotations

import ast
import io
import json
from typing import Any

import msgspec
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from common.csv import csv_writer
from common.json_body import MAX_DEPTH, JsonBodyError, decode_json, deeper_than
from common.parsers import JsonBodyParser
from common.problems import Problem
from common.time import format_rfc3339

from ..enrichment import customer_subjects
from ..jsonpath import PATTERN as JSONPATH_PATTERN
from ..meter_rules import (
    ABSENT_ZERO_AGGREGATIONS,
    AGGREGATIONS,
    EVENT_TYPE_MAX,
    GROUP_NAME_RE,
    MAX_GROUP_BY,
    NAME_MAX,
    RESERVED_GROUP_NAMES,
    SLUG_MAX,
    SLUG_RE,
    VALUE_ABSENT,
)
from ..models import Meter
from ..selectors.meters import meter_by_id_or_slug, meter_first_usage_time
from ..selectors.usage import FILTER_OPERATORS, GroupFilter, UsageQueryError, meter_query
from ..services.meters import (
    MeterFrozen,
    MeterInUse,
    MeterSlugTaken,
    MeterValidationError,
    meter_create,
    meter_delete,
    meter_update,
)
from ..windows import (
    MAX_WINDOWS,
    WINDOW_SIZES,
    WindowError,
    floor_to_window,
    next_window_start,
    time_zone,
    time_zone_names,
)
from .params import json_parameter, parse_rfc3339, query_bound
from .schema import DATE_TIME_DESCRIPTION, JSON_CONTENT, NO_NUL, component, date_time, optional_body, problems

# --- OpenAPI description (schema only: the handlers validate with metering.meter_rules) ----------------------

_NOT_BLANK = r"^[^\u0000]*[^\s\u0000][^\u0000]*$"  # some text, no NUL
_JSONPATH = {"type": "string", "pattern": JSONPATH_PATTERN, "maxLength": 255,
             "description": 'JSONPath into the event\'s `data`: `$` then `.name`, `["any name"]` or `[index]` '
                            "steps, e.g. `$.tokens`, `$.usage.input_tokens`, `$.choices[0].tokens`."}
_FIELDS = {
    "slug": {"type": "string", "pattern": SLUG_RE.pattern, "maxLength": SLUG_MAX,
             "description": "Lowercase words joined by single underscores; unique (409 when taken)."},
    "name": {"type": "string", "minLength": 1, "maxLength": NAME_MAX, "pattern": _NOT_BLANK,
             "description": "Display name (default: the slug)."},
    "description": {"type": ["string", "null"], "pattern": NO_NUL},
    "eventType": {"type": "string", "minLength": 1, "maxLength": EVENT_TYPE_MAX, "pattern": _NOT_BLANK,
                  "description": "The CloudEvent `type` the meter counts, e.g. `kong.llm_request`."},
    "groupBy": {
        "type": ["object", "null"],
        "description": f"Group name → JSONPath (at most {MAX_GROUP_BY}); names are letters, digits and `_`; "
                       f"{', '.join(sorted(RESERVED_GROUP_NAMES))} are reserved.",
        "maxProperties": MAX_GROUP_BY,
        "propertyNames": {"pattern": GROUP_NAME_RE.pattern, "not": {"enum": sorted(RESERVED_GROUP_NAMES)}},
        "additionalProperties": {"type": "string", "pattern": JSONPATH_PATTERN},
        "example": {"model": "$.model", "type": "$.type"},
    },
    **{name: {"description": "Accepted and ignored (OpenMeter clients send it)."}
       for name in ("id", "createdAt", "updatedAt", "metadata", "eventFrom")},
}
_NUMBER_AGGREGATIONS = list(ABSENT_ZERO_AGGREGATIONS)
_ABSENT_DESCRIPTION = ("Not OpenMeter's: what an event without `valueProperty` (missing or null) means. `invalid` "
                       "(the default): an event problem, not counted. `zero`: it counts nothing, for a field the "
                       "gateway sends only when it has one (e.g. `$.cache_read_tokens`); only for "
                       f"{', '.join(ABSENT_ZERO_AGGREGATIONS)}.")
_ABSENT_INVALID = {"type": ["string", "null"], "enum": [Meter.ValueAbsent.INVALID, None],
                   "description": _ABSENT_DESCRIPTION}
_ABSENT_ANY = {"type": ["string", "null"], "enum": [*VALUE_ABSENT, None], "description": _ABSENT_DESCRIPTION}
_COUNT = {"aggregation": {"type": "string", "enum": [Meter.Aggregation.COUNT]},
          "valueProperty": {"enum": ["", None], "description": "COUNT counts events: no value property."},
          "valueAbsent": _ABSENT_INVALID}
_UNIQUE = {"aggregation": {"type": "string", "enum": [Meter.Aggregation.UNIQUE_COUNT]}, "valueProperty": _JSONPATH,
           "valueAbsent": _ABSENT_INVALID}
_VALUE = {"aggregation": {"type": "string", "enum": _NUMBER_AGGREGATIONS}, "valueProperty": _JSONPATH,
          "valueAbsent": _ABSENT_ANY}


def _meter_body(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return component(name, {"type": "object", "description": description, "properties": properties,
                            "required": required, "additionalProperties": False})


METER_CREATE = component("MeterCreate", {
    "description": "A new meter: COUNT counts events; the other aggregations read `valueProperty`.",
    "oneOf": [
        _meter_body("MeterCreateCount", "A COUNT meter.", {**_FIELDS, **_COUNT}, ["slug", "eventType", "aggregation"]),
        _meter_body("MeterCreateValue", "A meter of a number (SUM, AVG, MIN, MAX, LATEST).",
                    {**_FIELDS, **_VALUE}, ["slug", "eventType", "aggregation", "valueProperty"]),
        _meter_body("MeterCreateUniqueCount", "A meter of distinct values (UNIQUE_COUNT).",
                    {**_FIELDS, **_UNIQUE}, ["slug", "eventType", "aggregation", "valueProperty"]),
    ],
    "example": {"slug": "llm_tokens", "name": "AI Gateway Tokens", "eventType": "kong.llm_request",
                "aggregation": "SUM", "valueProperty": "$.tokens",
                "groupBy": {"model": "$.model", "provider": "$.provider", "type": "$.type"}},
})
_UPDATE_FIELDS = {k: v for k, v in _FIELDS.items() if k != "slug"}
METER_UPDATE = component("MeterUpdate", {
    "description": "The fields to change (others keep their values; the slug cannot change). `aggregation`, "
                   "`valueProperty` and `valueAbsent` go together: `valueProperty` and `valueAbsent` only with "
                   "`aggregation`, an aggregation other than COUNT with its `valueProperty`, and `valueAbsent` "
                   "is `invalid` unless sent. A changed definition rebuilds the meter's usage; a meter a "
                   "published plan bills keeps its definition (409).",
    "oneOf": [
        _meter_body("MeterUpdateNames", "Name, description, event type or group-bys.", _UPDATE_FIELDS, []),
        _meter_body("MeterUpdateCount", "Make it a COUNT meter.", {**_UPDATE_FIELDS, **_COUNT}, ["aggregation"]),
        _meter_body("MeterUpdateValue", "Make it a meter of a number.", {**_UPDATE_FIELDS, **_VALUE},
                    ["aggregation", "valueProperty"]),
        _meter_body("MeterUpdateUniqueCount", "Make it a meter of distinct values.", {**_UPDATE_FIELDS, **_UNIQUE},
                    ["aggregation", "valueProperty"]),
    ],
    "example": {"name": "Tokens", "groupBy": {"model": "$.model", "provider": "$.provider", "type": "$.type"}},
})
METER = component("Meter", {
    "type": "object",
    "required": ["id", "slug", "name", "description", "aggregation", "eventType", "groupBy", "createdAt",
                 "updatedAt"],
    "properties": {
        "id": {"type": "string"},
        "slug": {"type": "string"},
        "name": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "aggregation": {"type": "string", "enum": list(AGGREGATIONS)},
        "eventType": {"type": "string"},
        "valueProperty": {"type": "string", "description": "Absent for COUNT."},
        "valueAbsent": {"type": "string", "enum": list(VALUE_ABSENT),
                        "description": "Absent for COUNT. " + _ABSENT_DESCRIPTION},
        "groupBy": {"type": "object", "additionalProperties": {"type": "string"}},
        "createdAt": date_time(""),
        "updatedAt": date_time(""),
    },
})
METER_ID = OpenApiParameter("id_or_slug", str, OpenApiParameter.PATH, description="The meter's id or slug.",
                            examples=[OpenApiExample("slug", value="llm_tokens")])

_FILTER_OPERATORS = {
    "type": "object", "minProperties": 1, "additionalProperties": False,
    "properties": {
        "$eq": {"type": ["string", "number", "boolean"]}, "$ne": {"type": ["string", "number", "boolean"]},
        "$in": {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]}},
        "$nin": {"type": "array", "minItems": 1, "items": {"type": ["string", "number", "boolean"]}},
    },
}
ADVANCED_FILTERS = component("AdvancedMeterGroupByFilters", {
    "type": "object",
    "description": 'Group name → operators: `{"model": {"$eq": "gpt-4o"}, "provider": {"$in": ["openai"]}}`; the '
                   "names must be group-bys of the meter.",
    "additionalProperties": _FILTER_OPERATORS,
})
_STRINGS = {"type": "array", "items": {"type": "string"}}
_STRING_OR_LIST = {"oneOf": [{"type": "string"}, _STRINGS, {"type": "null"}]}
QUERY_RULES = (f"`to` must be after `from`; a query spans at most {MAX_WINDOWS:,} windows; `groupBy` and "
               "filter names must be group-bys of the meter (or `subject`); `filterCustomerId` names existing "
               "customers. `from`/`to` need not be aligned to the window size: the first and last windows are "
               "clipped to [from, to) (their `windowStart`/`windowEnd` are the clipped bounds).")
def _OR_EMPTY(schema: dict) -> dict:  # noqa: N802 - reads like a type
    return {"anyOf": [schema, {"type": "string", "maxLength": 0}]}


METER_QUERY_BODY = component("MeterQueryRequest", {
    "type": "object",
    "description": "The query parameters as a JSON object (null or empty text: as if absent). " + QUERY_RULES,
    "properties": {
        "from": _OR_EMPTY(date_time(nullable=True)), "to": _OR_EMPTY(date_time(nullable=True)),
        "windowSize": {"type": ["string", "null"], "enum": [*WINDOW_SIZES, "", None]},
        "windowTimeZone": {"type": ["string", "null"], "enum": [*time_zone_names(), "", None]},
        "subject": _STRING_OR_LIST, "filterCustomerId": _STRING_OR_LIST, "groupBy": _STRING_OR_LIST,
        "filterGroupBy": {"type": ["object", "null"], "additionalProperties": {"type": "string"}},
        "advancedMeterGroupByFilters": {"oneOf": [ADVANCED_FILTERS, {"type": "null"}]},
    },
    "example": {"from": "2026-03-27T00:00:00Z", "to": "2026-03-30T00:00:00Z", "windowSize": "DAY",
                "windowTimeZone": "Europe/Berlin", "groupBy": ["model"]},
})
METER_QUERY_RESULT = component("MeterQueryResult", {
    "type": "object",
    "required": ["from", "to", "windowSize", "data"],
    "properties": {
        "from": date_time("The start of the period (null when there is no usage and no `from`).", nullable=True),
        "to": date_time("The end of the period."),
        "windowSize": {"type": ["string", "null"], "enum": [*WINDOW_SIZES, None]},
        "data": {"type": "array", "items": component("MeterQueryRow", {
            "type": "object",
            "required": ["value", "windowStart", "windowEnd", "subject", "groupBy"],
            "properties": {
                "value": {"type": "number"},
                "windowStart": date_time("The window's start (or `from`, for the first window)."),
                "windowEnd": date_time("The window's end (or `to`, for the last window)."),
                "subject": {"type": ["string", "null"]},
                "groupBy": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
            },
        })},
    },
})
optional_body("queryMeterPost")  # no body: the defaults of every parameter
optional_body("updateMeter")  # no body: nothing changes
QUERY_RESPONSES = {
    (200, "application/json"): OpenApiResponse(METER_QUERY_RESULT, description="Usage per window and group."),
    (200, "text/csv"): OpenApiResponse(
        {"type": "string"},
        description="With `Accept: text/csv` (or `?format=csv`): `window_start,window_end,subject,<group-bys>,value`."),
    **problems(400, 404, 406),
}
QUERY_PARAMETERS = [
    METER_ID,
    OpenApiParameter("from", OpenApiTypes.DATETIME,
                     description="Start, inclusive (default: the first usage). " + DATE_TIME_DESCRIPTION),
    OpenApiParameter("to", OpenApiTypes.DATETIME, description="End, exclusive (default: now, or the end of its "
                                                              "window). " + DATE_TIME_DESCRIPTION),
    OpenApiParameter("windowSize", str, enum=list(WINDOW_SIZES),
                     description="Usage per window of this size (none: one total per group)."),
    OpenApiParameter("windowTimeZone", str, enum=time_zone_names(), default="UTC",
                     description="IANA time zone of the windows: a Berlin DAY is 23 or 25 hours around DST."),
    OpenApiParameter("subject", {"type": "array", "items": {"type": "string"}}, explode=True,
                     description="Only these subjects (repeat the parameter); rows then carry the subject."),
    OpenApiParameter("filterCustomerId", {"type": "array", "items": {"type": "string"}}, explode=True,
                     description="Only the subjects of these customers (ids or keys; repeat the parameter)."),
    OpenApiParameter("filterGroupBy", {"type": "object", "additionalProperties": {"type": "string"}},
                     style="deepObject", explode=True,
                     description="Equality filters: `filterGroupBy[model]=gpt-4o&filterGroupBy[type]=request`."),
    OpenApiParameter("advancedMeterGroupByFilters", ADVANCED_FILTERS, extensions=JSON_CONTENT,
                     description="Operator filters as one JSON object (`$eq`, `$ne`, `$in`, `$nin`)."),
    OpenApiParameter("groupBy", {"type": "array", "items": {"type": "string"}}, explode=True,
                     description="Group rows by these group-bys (`subject` allowed; repeat the parameter)."),
]


CAMEL = {"slug": "slug", "name": "name", "description": "description", "eventType": "event_type",
         "aggregation": "aggregation", "valueProperty": "value_property", "valueAbsent": "value_absent",
         "groupBy": "group_by"}
SNAKE_TO_CAMEL = {snake: camel for camel, snake in CAMEL.items()}
_encoder = msgspec.json.Encoder(decimal_format="number")


def meter_json(meter: Meter) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(meter.pk),
        "slug": meter.slug,
        "name": meter.name,
        "description": meter.description or None,
        "aggregation": meter.aggregation,
        "eventType": meter.event_type,
        "groupBy": meter.group_by or {},
        "createdAt": format_rfc3339(meter.created_at),
        "updatedAt": format_rfc3339(meter.updated_at),
    }
    if meter.value_property:
        body["valueProperty"] = meter.value_property
        body["valueAbsent"] = meter.value_absent
    return body


def validation_problem(errors: dict[str, str]) -> Problem:
    items = [{"field": SNAKE_TO_CAMEL.get(field, field), "message": message} for field, message in errors.items()]
    return Problem(400, "Invalid meter", "; ".join(f"{e['field']}: {e['message']}" for e in items), errors=items)


def frozen_problem(exc: MeterFrozen) -> Problem:
    items = [{"field": SNAKE_TO_CAMEL.get(field, field), "message": message} for field, message in exc.errors.items()]
    return Problem(409, "Meter in use", exc.detail(lambda field: SNAKE_TO_CAMEL.get(field, field)), errors=items)


def get_meter(id_or_slug: str) -> Meter:
    meter = meter_by_id_or_slug(id_or_slug)
    if meter is None:
        raise Problem(404, "Not Found", f"No meter with id or slug {id_or_slug!r}.")
    return meter


def meter_fields_from_body(data: Any, *, creating: bool) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Problem(400, "Invalid meter", "The body must be a JSON object.")
    unknown = sorted(set(data) - set(CAMEL) - {"id", "createdAt", "updatedAt", "metadata", "eventFrom"})
    if unknown:
        raise validation_problem(dict.fromkeys(unknown, "unknown field"))
    wrong = {key: "must be a string" for key in ("slug", "name", "description", "eventType", "aggregation",
                                                  "valueProperty", "valueAbsent")
             if data.get(key) is not None and not isinstance(data[key], str)}
    group_by = data.get("groupBy")
    if group_by is not None and not (isinstance(group_by, dict)
                                     and all(isinstance(path, str) for path in group_by.values())):
        wrong["groupBy"] = 'must be an object of name → JSONPath, e.g. {"model": "$.model"}'
    if wrong:
        raise validation_problem({CAMEL[key]: message for key, message in wrong.items()})
    fields = {CAMEL[key]: value for key, value in data.items() if key in CAMEL}
    if not creating:
        fields.pop("slug", None)
    elif "name" not in fields and isinstance(fields.get("slug"), str):
        fields["name"] = fields["slug"]
    return fields


class MeterListView(APIView):
    required_scopes = {"GET": "read", "POST": "manage"}
    permission_model = "metering.meter"
    parser_classes = [JsonBodyParser]

    @extend_schema(operation_id="listMeters", summary="List meters", tags=["Meters"],
                   responses={200: {"type": "array", "items": METER}})
    def get(self, request):
        return Response([meter_json(meter) for meter in Meter.objects.order_by("slug")])

    @extend_schema(operation_id="createMeter", summary="Create a meter", tags=["Meters"],
                   description="Needs the `manage` scope (or a staff session with the permission).",
                   request={"application/json": METER_CREATE}, responses={201: METER, **problems(400, 409)})
    def post(self, request):
        fields = meter_fields_from_body(request.data, creating=True)
        required = {"slug": "slug is required", "eventType": "eventType is required",
                    "aggregation": "aggregation is required"}
        missing = {k: v for k, v in required.items() if CAMEL[k] not in fields}
        if missing:
            raise validation_problem(missing)
        try:
            meter = meter_create(**fields)
        except MeterSlugTaken as exc:
            raise Problem(409, "Conflict", str(exc), errors=[{"field": "slug", "message": exc.errors["slug"]}]
                          ) from None
        except MeterValidationError as exc:
            raise validation_problem(exc.errors) from None
        return Response(meter_json(meter), status=201)


class MeterDetailView(APIView):
    required_scopes = {"GET": "read", "PUT": "manage", "DELETE": "manage"}
    permission_model = "metering.meter"
    parser_classes = [JsonBodyParser]

    @extend_schema(operation_id="getMeter", summary="Get a meter", tags=["Meters"], parameters=[METER_ID],
                   responses={200: METER, **problems(404)})
    def get(self, request, id_or_slug: str):
        return Response(meter_json(get_meter(id_or_slug)))

    @extend_schema(operation_id="updateMeter", summary="Change a meter", tags=["Meters"], parameters=[METER_ID],
                   description="Needs the `manage` scope (or a staff session with the permission).",
                   request={"application/json": METER_UPDATE}, responses={200: METER, **problems(400, 404, 409)})
    def put(self, request, id_or_slug: str):
        meter = get_meter(id_or_slug)
        fields = meter_fields_from_body(request.data, creating=False)
        if "slug" in request.data and request.data["slug"] != meter.slug:
            raise validation_problem({"slug": "the slug of a meter cannot be changed"})
        # aggregation and valueProperty go together, so a body means the same whatever the stored meter is
        for name in ("value_property", "value_absent"):
            if name in fields and "aggregation" not in fields:
                raise validation_problem({name: f"send {SNAKE_TO_CAMEL[name]} together with aggregation"})
        if "aggregation" in fields:
            fields.setdefault("value_property", "")
            fields.setdefault("value_absent", Meter.ValueAbsent.INVALID)
        try:
            meter = meter_update(meter=meter, **fields)
        except MeterFrozen as exc:  # what uses the meter holds it: not the request's shape, the catalog's state
            raise frozen_problem(exc) from None
        except MeterValidationError as exc:
            raise validation_problem(exc.errors) from None
        return Response(meter_json(meter))

    @extend_schema(operation_id="deleteMeter", summary="Delete a meter", tags=["Meters"], parameters=[METER_ID],
                   description="409 while a feature uses the meter.",
                   responses={204: OpenApiResponse(description="Deleted."), **problems(404, 409)})
    def delete(self, request, id_or_slug: str):
        meter = get_meter(id_or_slug)
        try:
            meter_delete(meter=meter)
        except MeterInUse as exc:
            raise Problem(409, "Conflict", str(exc)) from None
        return Response(status=204)


def _parse_filter_group_by(raw: dict[str, str], query_dict=None) -> dict[str, str]:
    """``filterGroupBy[key]=value`` (OpenMeter REST), or one ``filterGroupBy`` JSON/dict literal (what
    OpenMeter's Python client sends)."""
    filters = dict(raw)
    if query_dict is not None and "filterGroupBy" in query_dict:
        filters.update(_group_by_values(_object_parameter("filterGroupBy", query_dict.get("filterGroupBy"))))
    return filters


def _object_parameter(name: str, text: str) -> Any:
    """A JSON object in a query parameter, or a Python dict literal (``{'model': 'gpt-4o'}``, as OpenMeter's Python
    client writes one); decoded under the request-body rules (nested at most 64 levels, no NUL)."""
    if deeper_than(text.replace("'", '"').encode(errors="replace")):
        raise _bad(name, f"nested deeper than {MAX_DEPTH} levels")
    try:
        return decode_json(text)
    except JsonBodyError as exc:
        if not text.lstrip().startswith("{"):
            raise _bad(name, f"must be {name}[key]=value or a JSON object: {exc}") from None
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise _bad(name, f"must be {name}[key]=value or a JSON object") from None


def _group_by_values(parsed: Any, name: str = "filterGroupBy") -> dict[str, str]:
    """``{key: value}`` with text (or number, boolean) values, as strings."""
    if not isinstance(parsed, dict):
        raise _bad(name, "must be an object")
    values: dict[str, str] = {}
    for key, value in parsed.items():
        if isinstance(value, dict | list | tuple | set) or value is None:
            raise _bad(name, f"{key}: the value must be a string")
        if "\x00" in str(key) or "\x00" in str(value):
            raise _bad(name, f"{key}: must not contain NUL characters")
        values[str(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return values


def _parse_advanced_filters(value: Any) -> list[GroupFilter]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        value = json_parameter("advancedMeterGroupByFilters", value)
    if not isinstance(value, dict):
        raise _bad("advancedMeterGroupByFilters", 'must be an object like {"model": {"$eq": "gpt-4o"}}')
    filters = []
    for key, condition in value.items():
        if not isinstance(condition, dict) or not condition:
            raise _bad("advancedMeterGroupByFilters", f'{key}: expected an operator object like {{"$eq": "x"}}')
        for operator, operand in condition.items():
            if operator not in FILTER_OPERATORS:
                raise _bad("advancedMeterGroupByFilters",
                           f"{key}: unsupported operator {operator}; supported: {', '.join(FILTER_OPERATORS)}")
            if operator in ("$in", "$nin"):
                if not isinstance(operand, list) or not operand or any(
                        isinstance(v, dict | list) or v is None for v in operand):
                    raise _bad("advancedMeterGroupByFilters", f"{key}: {operator} needs a non-empty array of strings")
                filters.append(GroupFilter(key, operator, tuple(str(v) for v in operand)))
            else:
                if isinstance(operand, dict | list) or operand is None:
                    raise _bad("advancedMeterGroupByFilters", f"{key}: {operator} needs a string")
                filters.append(GroupFilter(key, operator, (str(operand),)))
    return filters


def _bad(field: str, message: str) -> Problem:
    return Problem(400, "Invalid query parameter", f"{field}: {message}", errors=[{"field": field, "message": message}])


def _optional_text(body: dict[str, Any], field: str) -> str | None:
    """A text member of the POST query body (absent or null: None)."""
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise _bad(field, "must be text")
    return value or None


def _text_list(body: dict[str, Any], field: str) -> list[str]:
    """A member of the POST query body that is one text or a list of texts."""
    value = body.get(field)
    if value is None:
        return []
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise _bad(field, "must be text or a list of texts")
    return values


class CsvRenderer(BaseRenderer):
    """Lets ``Accept: text/csv`` through content negotiation; the view writes the CSV itself and errors
    stay problem+json."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode() if data is not None else b""


class MeterQueryView(APIView):
    required_scopes = {"GET": "read", "POST": "read"}  # the POST query reads: view_meter
    permission_model = "metering.meter"
    parser_classes = [JsonBodyParser]
    renderer_classes = [JSONRenderer, CsvRenderer]

    @extend_schema(operation_id="queryMeter", summary="Query a meter's usage", tags=["Meters"],
                   description=QUERY_RULES, parameters=QUERY_PARAMETERS, responses=QUERY_RESPONSES)
    def get(self, request, id_or_slug: str):
        params = request.query_params
        bracketed = {key[len("filterGroupBy["):-1]: value for key, value in params.items()
                     if key.startswith("filterGroupBy[") and key.endswith("]")}
        return self._answer(request, id_or_slug, {
            "from": params.get("from"), "to": params.get("to"), "windowSize": params.get("windowSize") or None,
            "windowTimeZone": params.get("windowTimeZone") or None, "subject": params.getlist("subject"),
            "filterCustomerId": params.getlist("filterCustomerId"),
            "filterGroupBy": _parse_filter_group_by(bracketed, params),
            "advancedMeterGroupByFilters": params.get("advancedMeterGroupByFilters"),
            "groupBy": params.getlist("groupBy"),
        })

    @extend_schema(operation_id="queryMeterPost", summary="Query a meter's usage (JSON body)", tags=["Meters"],
                   description=QUERY_RULES, parameters=[METER_ID], request={"application/json": METER_QUERY_BODY},
                   responses=QUERY_RESPONSES)
    def post(self, request, id_or_slug: str):
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise Problem(400, "Bad Request", "The body must be a JSON object of query parameters.")
        filter_group_by = body.get("filterGroupBy")
        if filter_group_by is None:
            filter_group_by = {}
        if not isinstance(filter_group_by, dict) or not all(isinstance(v, str) for v in filter_group_by.values()):
            raise _bad("filterGroupBy", "must be an object of group name → value (text)")
        return self._answer(request, id_or_slug, {
            "from": _optional_text(body, "from"), "to": _optional_text(body, "to"),
            "windowSize": _optional_text(body, "windowSize"), "windowTimeZone": _optional_text(body, "windowTimeZone"),
            "subject": _text_list(body, "subject"), "filterCustomerId": _text_list(body, "filterCustomerId"),
            "filterGroupBy": dict(filter_group_by),
            "advancedMeterGroupByFilters": body.get("advancedMeterGroupByFilters"),
            "groupBy": _text_list(body, "groupBy"),
        })

    def _answer(self, request, id_or_slug: str, query: dict[str, Any]):
        meter = get_meter(id_or_slug)
        window_size = query["windowSize"]
        if window_size is not None and window_size not in WINDOW_SIZES:
            raise _bad("windowSize", f"must be one of {', '.join(WINDOW_SIZES)}")
        try:
            tz = time_zone(query["windowTimeZone"])
        except WindowError as exc:
            raise _bad(exc.field, str(exc)) from None
        start = query_bound("from", parse_rfc3339("from", query["from"])) if query["from"] else None
        end = query_bound("to", parse_rfc3339("to", query["to"])) if query["to"] else None
        subjects = list(query["subject"])
        if query["filterCustomerId"]:
            resolved = customer_subjects(query["filterCustomerId"])
            if resolved is None:
                raise _bad("filterCustomerId", "customers are not available")
            unknown = [c for c in query["filterCustomerId"] if c not in resolved]
            if unknown:
                raise _bad("filterCustomerId", f"unknown customer(s): {', '.join(unknown)}")
            subjects += [s for c in query["filterCustomerId"] for s in resolved[c]]
        filters = [GroupFilter(k, "$eq", (v,)) for k, v in query["filterGroupBy"].items()]
        filters += _parse_advanced_filters(query["advancedMeterGroupByFilters"])
        data: list = []
        try:
            if end is None:  # now, or the end of the window now is in
                end = timezone.now()
                if window_size and floor_to_window(end, window_size, tz) != end:
                    end = next_window_start(floor_to_window(end, window_size, tz), window_size, tz)
            if start is None:  # the start of the window of the first usage
                first = meter_first_usage_time(meter)
                if first is not None:
                    query_bound("from", first)  # events dated in year 1 need an explicit from
                start = (floor_to_window(first, window_size, tz) if window_size else first) if first else None
        except WindowError as exc:
            raise _bad(exc.field, str(exc)) from None
        if start is not None and start < end:
            try:
                data = meter_query(meter=meter, start=start, end=end, window_size=window_size,
                                   window_time_zone=query["windowTimeZone"], subjects=subjects or None,
                                   group_by=query["groupBy"], filters=filters)
            except UsageQueryError as exc:
                raise _bad(exc.field, str(exc)) from None
        elif start is not None:
            raise _bad("to", "to must be after from")
        if getattr(request, "accepted_renderer", None) is not None and request.accepted_renderer.format == "csv":
            return self._csv(meter, data, query["groupBy"])
        payload = {
            "from": format_rfc3339(start) if start else None,
            "to": format_rfc3339(end),
            "windowSize": window_size,
            "data": [{"value": row.value, "windowStart": format_rfc3339(row.window_start),
                      "windowEnd": format_rfc3339(row.window_end), "subject": row.subject, "groupBy": row.group_by}
                     for row in data],
        }
        return HttpResponse(_encoder.encode(payload), content_type="application/json")

    def _csv(self, meter: Meter, data, group_by: list[str]) -> HttpResponse:
        keys = [key for key in dict.fromkeys(group_by) if key != "subject"]
        buffer = io.StringIO()
        writer = csv_writer(buffer)
        writer.writerow(["window_start", "window_end", "subject", *keys, "value"])
        for row in data:
            writer.writerow([format_rfc3339(row.window_start), format_rfc3339(row.window_end), row.subject or "",
                             *[row.group_by.get(key) or "" for key in keys], format(row.value, "f")])
        response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{meter.slug}-usage.csv"'
        return response
