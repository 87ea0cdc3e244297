"""Read API of invoices: ``GET /api/v1/invoices?customer=KEY&status=…`` and ``GET /api/v1/invoices/{id}``."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from common.problems import Problem
from metering.api.params import int_param

from .models import Invoice
from .selectors import invoice_by_id_or_number, invoice_json, invoice_list


class InvoiceListView(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(
        operation_id="listInvoices",
        responses={200: OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("customer", str), OpenApiParameter("status", str), OpenApiParameter("limit", int)],
    )
    def get(self, request):
        statuses = [s for value in request.query_params.getlist("status") for s in value.split(",") if s]
        unknown = sorted(set(statuses) - set(Invoice.Status.values))
        if unknown:
            raise Problem(
                400,
                "Invalid query parameter",
                f"status: unknown {', '.join(unknown)}; use {', '.join(Invoice.Status.values)}",
                errors=[{"field": "status", "message": "unknown"}],
            )
        limit = int_param(request.query_params, "limit", default=100, minimum=1, maximum=1000)
        invoices = invoice_list(customer_key=request.query_params.get("customer"), statuses=statuses, limit=limit)
        return Response([invoice_json(invoice) for invoice in invoices])


class InvoiceDetailView(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(operation_id="getInvoice", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, invoice_id: str):
        invoice = invoice_by_id_or_number(invoice_id)
        if invoice is None:
            raise Problem(404, "Not Found", f"No invoice {invoice_id!r}.")
        return Response(invoice_json(invoice))
