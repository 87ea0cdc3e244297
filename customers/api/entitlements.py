"""The gateway's entitlement check: ``GET /api/v1/customers/{idOrKey}/entitlements/{featureKey}/value``.

The answer is :func:`entitlement_value_body`, shared by :class:`EntitlementValueView` and the fast route in front of
Django (:mod:`customers.api.entitlement_route`), which answers the successes of token requests itself."""

from __future__ import annotations

import msgspec
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema

from catalog.selectors import feature_by_key
from common.problems import Problem
from metering.api.fast_route import raise_handed_refusal
from metering.api.schema import component, problems
from metering.api.views import ReadView

from ..selectors import customer_by_id_or_key, entitlement_check

_encoder = msgspec.json.Encoder(decimal_format="number")

ENTITLEMENT_VALUE = component("EntitlementValue", {
    "type": "object",
    "description": "OpenMeter's entitlement value. Metered: `balance = max(limit - usage, 0)`, `overage = max(usage - "
                   "limit, 0)`, access while `usage < limit` (always, with a soft limit). Static: `config` is the "
                   "JSON configuration as text.",
    "required": ["hasAccess"],
    "properties": {
        "hasAccess": {"type": "boolean"},
        "balance": {"type": ["number", "null"]},
        "usage": {"type": ["number", "null"]},
        "overage": {"type": ["number", "null"]},
        "config": {"type": "string"},
        "creditBalance": {"type": ["number", "null"],
                          "description": "Metered entitlements with a credit mode (`credit_only`, "
                                         "`credit_then_invoice`): the customer's prepaid credit balance, in major "
                                         "units of its currency."},
        "creditAvailable": {"type": ["number", "null"],
                            "description": "The balance less the current period's rated usage not yet invoiced; "
                                           "`credit_only` grants access while it is above zero."},
    },
    "example": {"hasAccess": True, "balance": 9880, "usage": 120, "overage": 0},
})


class EntitlementValueView(ReadView):
    permission_model = "customers.customer"

    @extend_schema(
        operation_id="getCustomerEntitlementValue",
        summary="Check a customer's entitlement",
        tags=["Entitlements"],
        parameters=[
            OpenApiParameter("id_or_key", str, OpenApiParameter.PATH, description="The customer's id or key.",
                             examples=[OpenApiExample("key", value="kong-air")]),
            OpenApiParameter("feature_key", str, OpenApiParameter.PATH, description="The feature's key.",
                             examples=[OpenApiExample("key", value="ai-token")]),
        ],
        responses={200: ENTITLEMENT_VALUE, **problems(404)},
    )
    def get(self, request, id_or_key: str, feature_key: str):
        raise_handed_refusal(request.META)  # what entitlement_value_body raised in the fast route, for this request
        return self.success_response(entitlement_value_body(id_or_key=id_or_key, feature_key=feature_key))

    @classmethod
    def success_response(cls, body: bytes) -> HttpResponse:
        """The 200 with the value's JSON, here and in the fast route (whose headers come from it)."""
        return HttpResponse(body, content_type="application/json")


def entitlement_value_body(*, id_or_key: str, feature_key: str) -> bytes:
    """The entitlement check's JSON body (OpenMeter's entitlement value, now): ``Problem`` 404 for an unknown
    customer or feature."""
    feature = feature_by_key(feature_key)
    value = entitlement_check(id_or_key=id_or_key, feature=feature, at=timezone.now()) if feature else None
    if value is None:
        if feature is None and customer_by_id_or_key(id_or_key) is not None:
            raise Problem(404, "Not Found", f"No feature with key {feature_key!r}.")
        raise Problem(404, "Not Found", f"No customer with id or key {id_or_key!r}.")
    return _encoder.encode(value.as_json())
