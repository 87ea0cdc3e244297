"""OpenMeter v1 meter API: ``/api/v1/meters`` (list, create), ``/api/v1/meters/{idOrSlug}`` (get, put,
delete) and ``/api/v1/meters/{idOrSlug}/query`` (GET and POST; JSON, or CSV on ``Accept: text/csv``)."""

from __future__ import annotations

import ast
import csv
import io
import json
from typing import Any

import msgspec
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from common.problems import Problem
from common.time import format_rfc3339

from ..enrichment import customer_subjects
from ..models import Meter
from ..selectors.meters import meter_by_id_or_slug, meter_first_usage_time
from ..selectors.usage import FILTER_OPERATORS, GroupFilter, UsageQueryError, meter_query
from ..services.meters import (
    MeterFrozen,
    MeterInUse,
    MeterValidationError,
    meter_create,
    meter_delete,
    meter_update,
)
from ..windows import WINDOW_SIZES, WindowError, floor_to_window, next_window_start, time_zone
from .params import parse_rfc3339

CAMEL = {"slug": "slug", "name": "name", "description": "description", "eventType": "event_type",
         "aggregation": "aggregation", "valueProperty": "value_property", "groupBy": "group_by"}
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
    fields = {CAMEL[key]: value for key, value in data.items() if key in CAMEL}
    if not creating:
        fields.pop("slug", None)
    elif "name" not in fields and isinstance(fields.get("slug"), str):
        fields["name"] = fields["slug"]
    return fields


class MeterListView(APIView):
    required_scopes = {"GET": "read", "POST": "manage"}
    permission_model = "metering.meter"
    parser_classes = [JSONParser]

    @extend_schema(operation_id="listMeters", responses={200: OpenApiTypes.OBJECT})
    def get(self, request):
        return Response([meter_json(meter) for meter in Meter.objects.order_by("slug")])

    @extend_schema(operation_id="createMeter", request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request):
        fields = meter_fields_from_body(request.data, creating=True)
        required = {"slug": "slug is required", "eventType": "eventType is required",
                    "aggregation": "aggregation is required"}
        missing = {k: v for k, v in required.items() if CAMEL[k] not in fields}
        if missing:
            raise validation_problem(missing)
        try:
            meter = meter_create(**fields)
        except MeterValidationError as exc:
            raise validation_problem(exc.errors) from None
        return Response(meter_json(meter), status=201)


class MeterDetailView(APIView):
    required_scopes = {"GET": "read", "PUT": "manage", "DELETE": "manage"}
    permission_model = "metering.meter"
    parser_classes = [JSONParser]

    @extend_schema(operation_id="getMeter", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id_or_slug: str):
        return Response(meter_json(get_meter(id_or_slug)))

    @extend_schema(operation_id="updateMeter", request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def put(self, request, id_or_slug: str):
        meter = get_meter(id_or_slug)
        fields = meter_fields_from_body(request.data, creating=False)
        if "slug" in request.data and request.data["slug"] != meter.slug:
            raise validation_problem({"slug": "the slug of a meter cannot be changed"})
        try:
            meter = meter_update(meter=meter, **fields)
        except MeterFrozen as exc:  # what uses the meter holds it: not the request's shape, the catalog's state
            raise frozen_problem(exc) from None
        except MeterValidationError as exc:
            raise validation_problem(exc.errors) from None
        return Response(meter_json(meter))

    @extend_schema(operation_id="deleteMeter", responses={204: None})
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
        text = query_dict.get("filterGroupBy")
        try:
            parsed = json.loads(text)
        except ValueError:
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise Problem(400, "Invalid query parameter", "filterGroupBy must be filterGroupBy[key]=value "
                              "or a JSON object", errors=[{"field": "filterGroupBy", "message": "not an object"}]
                              ) from None
        if not isinstance(parsed, dict):
            raise Problem(400, "Invalid query parameter", "filterGroupBy must be an object",
                          errors=[{"field": "filterGroupBy", "message": "not an object"}])
        filters.update({str(k): str(v) for k, v in parsed.items()})
    return filters


def _parse_advanced_filters(value: Any) -> list[GroupFilter]:
    if value in (None, ""):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _bad("advancedMeterGroupByFilters", "must be a JSON object") from None
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
                if not isinstance(operand, list) or not operand:
                    raise _bad("advancedMeterGroupByFilters", f"{key}: {operator} needs a non-empty array")
                filters.append(GroupFilter(key, operator, tuple(str(v) for v in operand)))
            else:
                if isinstance(operand, dict | list) or operand is None:
                    raise _bad("advancedMeterGroupByFilters", f"{key}: {operator} needs a string")
                filters.append(GroupFilter(key, operator, (str(operand),)))
    return filters


def _bad(field: str, message: str) -> Problem:
    return Problem(400, "Invalid query parameter", f"{field}: {message}", errors=[{"field": field, "message": message}])


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


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
    parser_classes = [JSONParser]
    renderer_classes = [JSONRenderer, CsvRenderer]

    @extend_schema(operation_id="queryMeter", responses={200: OpenApiTypes.OBJECT})
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

    @extend_schema(operation_id="queryMeterPost", request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, id_or_slug: str):
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise Problem(400, "Bad Request", "The body must be a JSON object of query parameters.")
        filter_group_by = body.get("filterGroupBy") or {}
        if not isinstance(filter_group_by, dict):
            raise _bad("filterGroupBy", "must be an object")
        return self._answer(request, id_or_slug, {
            "from": body.get("from"), "to": body.get("to"), "windowSize": body.get("windowSize"),
            "windowTimeZone": body.get("windowTimeZone"), "subject": _as_list(body.get("subject")),
            "filterCustomerId": _as_list(body.get("filterCustomerId")),
            "filterGroupBy": {str(k): str(v) for k, v in filter_group_by.items()},
            "advancedMeterGroupByFilters": body.get("advancedMeterGroupByFilters"),
            "groupBy": _as_list(body.get("groupBy")),
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
        start = parse_rfc3339("from", query["from"]) if query["from"] else None
        end = parse_rfc3339("to", query["to"]) if query["to"] else None
        if end is None:
            end = timezone.now()
            if window_size and floor_to_window(end, window_size, tz) != end:
                end = next_window_start(floor_to_window(end, window_size, tz), window_size, tz)
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
        if start is None:
            first = meter_first_usage_time(meter)
            start = (floor_to_window(first, window_size, tz) if window_size else first) if first else None
        if start is not None and start < end:
            try:
                data = meter_query(meter=meter, start=start, end=end, window_size=window_size,
                                   window_time_zone=query["windowTimeZone"], subjects=subjects or None,
                                   group_by=query["groupBy"], filters=filters)
            except UsageQueryError as exc:
                raise _bad(exc.field, str(exc)) from None
        elif start is not None:
            raise _bad("to", "to must be after from")
        if "text/csv" in request.headers.get("Accept", ""):
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
        writer = csv.writer(buffer)
        writer.writerow(["window_start", "window_end", "subject", *keys, "value"])
        for row in data:
            writer.writerow([format_rfc3339(row.window_start), format_rfc3339(row.window_end), row.subject or "",
                             *[row.group_by.get(key) or "" for key in keys], format(row.value, "f")])
        response = HttpResponse(buffer.getvalue(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{meter.slug}-usage.csv"'
        return response
