"""Read API of the catalog's plans: ``GET /api/v1/plans`` (read scope), every version."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from common.problems import Problem
from metering.api.schema import component, date_time, problems
from metering.api.views import ReadView

from ..models import Plan, RateCard
from ..selectors import plan_list
from ..serializers import plan_json

_DECIMAL = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "An exact decimal, e.g. `0.000003`."}
_CADENCE = {"type": "string", "enum": list(Plan.Cadence.values)}
_TIERS = {"type": "array", "items": {
    "type": "object", "required": ["up_to", "unit_amount"],
    "properties": {"up_to": {**_DECIMAL, "type": ["string", "null"], "description": "null: the last tier."},
                   "unit_amount": {**_DECIMAL, "type": ["string", "null"]},
                   "flat_amount": _DECIMAL},
}}
ROW_PRICE = component("RowPrice", {
    "type": "object",
    "description": "A usage price of a dimensional table's row: `unit`, `graduated`, `volume` or `package`.",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["unit", "graduated", "volume", "package"]},
        "amount": _DECIMAL,
        "unit_amount": _DECIMAL,
        "quantity_per_package": _DECIMAL,
        "tiers": _TIERS,
    },
})
PRICE = component("Price", {
    "type": "object",
    "description": "`flat`: `amount` per period; `unit`: `unit_amount` per unit; `package`: `amount` per started "
                   "`quantity_per_package`; `graduated`/`volume`: `tiers`; `dimensional`: a table of `rows` keyed "
                   "by some of the meter's group-by values (`dimensions`), the most specific `match` winning, "
                   "`default` for the rest (null: unpriced).",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": [t for t in RateCard.PriceType.values if t]},
        "amount": _DECIMAL,
        "unit_amount": _DECIMAL,
        "quantity_per_package": _DECIMAL,
        "tiers": _TIERS,
        "dimensions": {"type": "array", "items": {"type": "string"}},
        "rows": {"type": "array", "items": {
            "type": "object", "required": ["price"],
            "properties": {
                "match": {"type": "object", "additionalProperties": {"type": "string"},
                          "description": "Dimension → value; a dimension left out matches any value."},
                "default": {"type": "boolean", "description": "A scheduled version of the default price."},
                "price": ROW_PRICE,
                "effective_from": date_time("A scheduled version of the row takes effect then."),
            },
        }},
        "default": {"oneOf": [ROW_PRICE, {"type": "null"}]},
    },
})
ENTITLEMENT_TEMPLATE = component("EntitlementTemplate", {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": [t for t in RateCard.EntitlementType.values if t]},
        "config": {"description": "static: any JSON."},
        "limit": {**_DECIMAL, "type": ["string", "null"]},
        "soft": {"type": "boolean"},
        "usage_period": _CADENCE,
        "credits": {"type": "string", "enum": [m for m in RateCard.CreditMode.values if m],
                    "description": "metered: prepaid credits decide access (absent: they do not)."},
    },
})
RATE_CARD = component("RateCard", {
    "type": "object",
    "required": ["key", "price"],
    "properties": {
        "key": {"type": "string"},
        "name": {"type": "string"},
        "feature": {"type": "string", "description": "The feature's key (absent: a plain fee)."},
        "payment_term": {"type": "string", "enum": list(RateCard.PaymentTerm.values),
                         "description": "Absent: in arrears."},
        "free_quantity": _DECIMAL,
        "minimum_spend": _DECIMAL,
        "maximum_spend": _DECIMAL,
        "price": {"oneOf": [PRICE, {"type": "null"}]},
        "entitlement": ENTITLEMENT_TEMPLATE,
        "credit_grant": {"type": "object", "description": "Recurring prepaid credits each period, e.g. "
                                                          '`{"amount": "10.00", "every": "P1M", '
                                                          '"expires_after": "P1M", "priority": 10}`.'},
    },
})
PLAN = component("Plan", {
    "type": "object",
    "required": ["id", "key", "version", "name", "description", "currency", "billingCadence", "status",
                 "publishedAt", "archivedAt", "rateCards"],
    "properties": {
        "id": {"type": "string"},
        "key": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "name": {"type": "string"},
        "description": {"type": ["string", "null"]},
        "currency": {"type": "string", "description": "ISO 4217 code."},
        "billingCadence": _CADENCE,
        "status": {"type": "string", "enum": list(Plan.Status.values)},
        "publishedAt": date_time("", nullable=True),
        "archivedAt": date_time("", nullable=True),
        "rateCards": {"type": "array", "items": RATE_CARD},
    },
})


class PlanListView(ReadView):
    permission_model = "catalog.plan"

    @extend_schema(operation_id="listPlans", summary="List plans (every version)", tags=["Catalog"],
                   responses={200: {"type": "array", "items": PLAN}, **problems(400)},
                   parameters=[OpenApiParameter("key", str, description="Only the versions of this plan."),
                               OpenApiParameter("status", str, enum=list(Plan.Status.values))])
    def get(self, request):
        status = request.query_params.get("status")
        if status and status not in Plan.Status.values:
            raise Problem(
                400,
                "Invalid query parameter",
                f"status must be one of {', '.join(Plan.Status.values)}",
                errors=[{"field": "status", "message": "unknown status"}],
            )
        plans = plan_list(key=request.query_params.get("key"), status=status)
        return Response([plan_json(p) for p in plans])
