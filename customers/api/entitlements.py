"""The gateway's entitlement check: ``GET /api/v1/customers/{idOrKey}/entitlements/{featureKey}/value``."""

from __future__ import annotations

import msgspec
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.views import APIView

from catalog.selectors import feature_by_key
from common.problems import Problem

from ..selectors import customer_by_id_or_key, entitlement_check

_encoder = msgspec.json.Encoder(decimal_format="number")


class EntitlementValueView(APIView):
    required_scopes = {"GET": "read"}
    permission_model = "customers.customer"

    @extend_schema(operation_id="getCustomerEntitlementValue", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id_or_key: str, feature_key: str):
        feature = feature_by_key(feature_key)
        value = entitlement_check(id_or_key=id_or_key, feature=feature, at=timezone.now()) if feature else None
        if value is None:
            if feature is None and customer_by_id_or_key(id_or_key) is not None:
                raise Problem(404, "Not Found", f"No feature with key {feature_key!r}.")
            raise Problem(404, "Not Found", f"No customer with id or key {id_or_key!r}.")
        return HttpResponse(_encoder.encode(value.as_json()), content_type="application/json")
