"""Read API of invoices: ``GET /api/v1/invoices?customer=KEY&status=…`` and ``GET /api/v1/invoices/{id}``."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from billing_site.problems import Problem
from metering.api.params import int_param

from .models import Invoice, InvoiceLine
from .selectors import invoice_json


def invoices_with_lines():
    return Invoice.objects.select_related("customer").prefetch_related(
        Prefetch("lines", InvoiceLine.objects.select_related("rate_card", "rate_card__feature", "feature"))
    )


class InvoiceListView(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(
        operation_id="listInvoices",
        responses={200: OpenApiTypes.OBJECT},
        parameters=[OpenApiParameter("customer", str), OpenApiParameter("status", str), OpenApiParameter("limit", int)],
    )
    def get(self, request):
        invoices = invoices_with_lines().order_by("-period_start", "-id")
        customer = request.query_params.get("customer")
        if customer:
            invoices = invoices.filter(customer__key=customer)
        statuses = [s for value in request.query_params.getlist("status") for s in value.split(",") if s]
        unknown = sorted(set(statuses) - set(Invoice.Status.values))
        if unknown:
            raise Problem(
                400,
                "Invalid query parameter",
                f"status: unknown {', '.join(unknown)}; use {', '.join(Invoice.Status.values)}",
                errors=[{"field": "status", "message": "unknown"}],
            )
        if statuses:
            invoices = invoices.filter(status__in=statuses)
        limit = int_param(request.query_params, "limit", default=100, minimum=1, maximum=1000)
        return Response([invoice_json(invoice) for invoice in invoices[:limit]])


class InvoiceDetailView(APIView):
    required_scopes = {"GET": "read"}

    @extend_schema(operation_id="getInvoice", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, invoice_id: str):
        numeric = invoice_id.isascii() and invoice_id.isdigit()
        invoice = invoices_with_lines().filter(pk=int(invoice_id)).first() if numeric else None
        if invoice is None:
            invoice = invoices_with_lines().filter(number=invoice_id).first()
        if invoice is None:
            raise Problem(404, "Not Found", f"No invoice {invoice_id!r}.")
        return Response(invoice_json(invoice))
