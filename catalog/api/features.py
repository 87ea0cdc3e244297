"""Read API of the catalog's features: ``GET /api/v1/features`` (read scope)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response

from metering.api.schema import component, date_time
from metering.api.views import ReadView

from ..selectors import feature_list
from ..serializers import feature_json

FEATURE = component("Feature", {
    "type": "object",
    "required": ["id", "key", "name", "meterSlug", "meterGroupByFilters", "createdAt", "updatedAt"],
    "properties": {
        "id": {"type": "string"},
        "key": {"type": "string"},
        "name": {"type": "string"},
        "meterSlug": {"type": ["string", "null"], "description": "null: a feature without usage (entitlements only)."},
        "meterGroupByFilters": {"type": "object", "additionalProperties": {"type": "string"},
                                "description": 'Which of the meter\'s usage it counts, e.g. `{"provider": "openai"}`.'},
        "createdAt": date_time(""),
        "updatedAt": date_time(""),
    },
})


class FeatureListView(ReadView):
    permission_model = "catalog.feature"

    @extend_schema(operation_id="listFeatures", summary="List features", tags=["Catalog"],
                   responses={200: {"type": "array", "items": FEATURE}},
                   parameters=[OpenApiParameter("meterSlug", str, description="Only the features of this meter.")])
    def get(self, request):
        features = feature_list(meter_slug=request.query_params.get("meterSlug"))
        return Response([feature_json(f) for f in features])
