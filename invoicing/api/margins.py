"""``GET /api/v1/margins?from=&to=&groupBy=customer|model&customer=KEY`` (read scope; staff sessions that may view
invoices): revenue of dimensional (per model) prices, billed and previewed, against provider cost from the cost
table, with margin and margin %, per customer × model × period (see :mod:`invoicing.selectors.margins`)."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from catalog.money import format_major
from common.problems import Problem
from common.time import format_rfc3339
from metering.api.params import bad_parameter, parse_rfc3339, query_bound
from metering.api.schema import NO_NUL, component, date_time, problems
from metering.api.views import ReadView

from ..selectors.margins import GROUPS, MarginRow, margin_report

# Both ends of the range are required RFC 3339 times: the shortest is 20 characters ("2026-01-01T00:00:00Z").
RANGE_TIME = {"type": "string", "format": "date-time", "minLength": 20, "pattern": NO_NUL}

_AMOUNT = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$",
           "description": "Major units as an exact decimal string, e.g. `12.34`."}
MARGIN_ROW = component("MarginRow", {
    "type": "object",
    "required": ["customer", "model", "periodStart", "periodEnd", "currency", "revenueBilled", "revenuePreviewed",
                 "revenue", "cost", "costMissing", "margin", "marginPercent"],
    "properties": {
        "customer": {"type": ["string", "null"], "description": "The customer's key (null when grouped by model)."},
        "model": {"type": ["string", "null"],
                  "description": "The row's model; `(any model)` for rows naming none (the default, spend limits); "
                                 "`<model> (unpriced)` for usage no row prices (null when grouped by customer)."},
        "periodStart": date_time(""),
        "periodEnd": date_time(""),
        "currency": {"type": "string"},
        "revenueBilled": _AMOUNT,
        "revenuePreviewed": {**_AMOUNT, "description": "What the running period's preview adds (not billed yet)."},
        "revenue": _AMOUNT,
        "cost": {**_AMOUNT, "description": "Provider cost (USD, from the cost table), exact."},
        "costMissing": {"type": "array", "items": {"type": "string"},
                        "description": "`model/type` pairs with usage but no cost in the cost table."},
        "margin": _AMOUNT,
        "marginPercent": {"type": ["string", "null"], "pattern": r"^-?[0-9]+(\.[0-9]+)?$",
                          "description": "margin / revenue × 100, two decimals; null without revenue."},
    },
})
MARGINS = component("Margins", {
    "type": "object",
    "required": ["from", "to", "groupBy", "data"],
    "properties": {"from": date_time(""), "to": date_time(""),
                   "groupBy": {"type": ["string", "null"], "enum": [*GROUPS, None]},
                   "data": {"type": "array", "items": MARGIN_ROW}},
})


def margin_json(row: MarginRow) -> dict:
    currency = row.currency
    return {
        "customer": row.customer,
        "model": row.model,
        "periodStart": format_rfc3339(row.period_start),
        "periodEnd": format_rfc3339(row.period_end),
        "currency": currency,
        "revenueBilled": format_major(row.revenue_billed, currency),
        "revenuePreviewed": format_major(row.revenue_previewed, currency),
        "revenue": format_major(row.revenue, currency),
        "cost": format(row.cost.normalize(), "f") if row.cost else "0",
        "costMissing": sorted(row.cost_missing),
        "margin": format_major(row.margin, currency),
        "marginPercent": None if row.margin_percent is None else format(row.margin_percent, "f"),
    }


class MarginListView(ReadView):
    permission_model = "invoicing.invoice"

    @extend_schema(
        operation_id="listMargins",
        summary="Margins of per-model prices",
        description="Revenue (billed, and previewed for the running period) against provider cost from the cost "
                    "table, per customer × model × period whose period starts in [from, to).",
        tags=["Invoices"],
        parameters=[
            OpenApiParameter("from", RANGE_TIME, required=True,
                             description="Periods starting at or after this time."),
            OpenApiParameter("to", RANGE_TIME, required=True,
                             description="Periods starting before this time; must be after `from`."),
            OpenApiParameter("groupBy", {"type": "string", "enum": list(GROUPS)},
                             description="Sum over models (`customer`) or over customers (`model`)."),
            OpenApiParameter("customer", {"type": "string", "pattern": NO_NUL},
                             description="Only this customer's (its key)."),
        ],
        responses={200: MARGINS, **problems(400)},
    )
    def get(self, request):
        params = request.query_params
        for name in ("from", "to"):
            if not params.get(name):
                raise bad_parameter(name, "is required (an RFC 3339 date-time)")
        start = query_bound("from", parse_rfc3339("from", params["from"]))
        end = query_bound("to", parse_rfc3339("to", params["to"]))
        if start >= end:
            raise bad_parameter("to", "must be after from")
        group_by = params.get("groupBy") or None
        if group_by is not None and group_by not in GROUPS:
            raise bad_parameter("groupBy", f"must be one of {', '.join(GROUPS)}")
        customer = params.get("customer") or None
        if customer is not None and "\x00" in customer:
            raise Problem(400, "Invalid query parameter", "customer: must not contain NUL characters",
                          errors=[{"field": "customer", "message": "NUL character"}])
        rows = margin_report(start=start, end=end, now=timezone.now(), group_by=group_by, customer_key=customer)
        return Response({"from": format_rfc3339(start), "to": format_rfc3339(end), "groupBy": group_by,
                         "data": [margin_json(row) for row in rows]})
