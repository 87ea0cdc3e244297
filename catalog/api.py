"""Read API of the catalog: ``GET /api/v1/features`` and ``GET /api/v1/plans`` (read scope)."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_site.problems import Problem

from .models import Feature, Plan, RateCard
from .serializers import feature_json, plan_json


class FeatureListView(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(
        operation_id="listFeatures",
        responses={200: OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("meterSlug", str)],
    )
    def get(self, request):
        features = Feature.objects.select_related("meter").order_by("key")
        meter = request.query_params.get("meterSlug")
        if meter:
            features = features.filter(meter__slug=meter)
        return Response([feature_json(f) for f in features])


class PlanListView(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(
        operation_id="listPlans",
        responses={200: OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("key", str), OpenApiParameter("status", str)],
    )
    def get(self, request):
        plans = Plan.objects.prefetch_related(
            Prefetch("rate_cards", RateCard.objects.select_related("feature").prefetch_related("tiers"))
        ).order_by("key", "-version")
        status = request.query_params.get("status")
        if status:
            if status not in Plan.Status.values:
                raise Problem(
                    400,
                    "Invalid query parameter",
                    f"status must be one of {', '.join(Plan.Status.values)}",
                    errors=[{"field": "status", "message": "unknown status"}],
                )
            plans = plans.filter(status=status)
        if request.query_params.get("key"):
            plans = plans.filter(key=request.query_params["key"])
        return Response([plan_json(p) for p in plans])
