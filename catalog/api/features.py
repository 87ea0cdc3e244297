"""Read API of the catalog's features: ``GET /api/v1/features`` (read scope)."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from ..selectors import feature_list
from ..serializers import feature_json


class FeatureListView(APIView):
    required_scopes = {"GET": "read"}
    permission_model = "catalog.feature"

    @extend_schema(
        operation_id="listFeatures",
        responses={200: OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("meterSlug", str)],
    )
    def get(self, request):
        features = feature_list(meter_slug=request.query_params.get("meterSlug"))
        return Response([feature_json(f) for f in features])
