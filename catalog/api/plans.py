"""Read API of the catalog's plans: ``GET /api/v1/plans`` (read scope), every version."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from common.problems import Problem

from ..models import Plan
from ..selectors import plan_list
from ..serializers import plan_json


class PlanListView(APIView):
    required_scopes = {"GET": "read"}
    permission_model = "catalog.plan"

    @extend_schema(
        operation_id="listPlans",
        responses={200: OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("key", str), OpenApiParameter("status", str)],
    )
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
