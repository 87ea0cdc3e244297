"""The gateway's entitlement check: ``GET /api/v1/customers/{idOrKey}/entitlements/{featureKey}/value``."""

from __future__ import annotations

import time

import msgspec
from django.http import HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.views import APIView

from billing_site.problems import Problem
from catalog.models import Feature

from .selectors import customer_by_id_or_key, entitlement_check

_encoder = msgspec.json.Encoder(decimal_format="number")
FEATURE_CACHE_SECONDS = 5.0
_features: dict[str, tuple[float, Feature]] = {}


def forget_cached_features() -> None:
    _features.clear()


def feature_by_key(key: str) -> Feature | None:
    """Features by key, remembered for a few seconds per process (a changed feature applies within 5 s)."""
    now = time.monotonic()
    hit = _features.get(key)
    if hit is not None and now - hit[0] < FEATURE_CACHE_SECONDS:
        return hit[1]
    feature = Feature.objects.select_related("meter").filter(key=key).first()
    if feature is None:
        _features.pop(key, None)
        return None
    if len(_features) > 10_000:
        _features.clear()
    _features[key] = (now, feature)
    return feature


class EntitlementValueView(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(operation_id="getCustomerEntitlementValue", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, id_or_key: str, feature_key: str):
        feature = feature_by_key(feature_key)
        value = entitlement_check(id_or_key=id_or_key, feature=feature, at=timezone.now()) if feature else None
        if value is None:
            if feature is None and customer_by_id_or_key(id_or_key) is not None:
                raise Problem(404, "Not Found", f"No feature with key {feature_key!r}.")
            raise Problem(404, "Not Found", f"No customer with id or key {id_or_key!r}.")
        return HttpResponse(_encoder.encode(value.as_json()), content_type="application/json")
