"""Invoices and credit notes over HTTP: read them, and void or reissue an invoice as the admin can.

``GET /api/v1/invoices?customer=KEY&status=…``, ``GET /api/v1/invoices/{id or number}``,
``POST /api/v1/invoices/{id or number}/void`` (``{"reason": "..."}``), ``POST /api/v1/invoices/{id or number}/reissue``
(201 with the new invoice), ``GET /api/v1/credit-notes?customer=KEY``, ``GET /api/v1/credit-notes/{id or number}``.
Writes need the ``manage`` scope, or a staff session with the permission to issue invoices; an illegal
transition is 409 problem+json.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from common.problems import Problem
from metering.api.params import int_param

from ..models import Invoice
from ..selectors.invoices import (
    credit_note_by_id_or_number,
    credit_note_json,
    credit_note_list,
    invoice_by_id_or_number,
    invoice_json,
    invoice_list,
)
from ..services.credit_notes import CreditNoteError
from ..services.lifecycle import InvoiceTransitionError, ReissueError, invoice_reissue, invoice_void

MAX_REASON = 2000
WRITE = {"POST": "manage"}
WRITE_PERMISSION = {"POST": "invoicing.issue_invoice"}


def _no_nul(name: str, value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise Problem(400, "Invalid parameter", f"{name} must not contain NUL characters",
                      errors=[{"field": name, "message": "NUL character"}])
    return value


def _invoice_or_404(invoice_id: str) -> Invoice:
    invoice = invoice_by_id_or_number(_no_nul("invoice", invoice_id) or "")
    if invoice is None:
        raise Problem(404, "Not Found", f"No invoice {invoice_id!r}.")
    return invoice


class InvoiceListView(APIView):
    required_scopes = {"GET": "read"}
    permission_model = "invoicing.invoice"

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
        customer = _no_nul("customer", request.query_params.get("customer"))
        invoices = invoice_list(customer_key=customer, statuses=statuses, limit=limit)
        return Response([invoice_json(invoice) for invoice in invoices])


class InvoiceDetailView(APIView):
    required_scopes = {"GET": "read"}
    permission_model = "invoicing.invoice"

    @extend_schema(operation_id="getInvoice", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, invoice_id: str):
        return Response(invoice_json(_invoice_or_404(invoice_id)))


class InvoiceVoidView(APIView):
    required_scopes = WRITE
    permission_model = "invoicing.invoice"
    required_permissions = WRITE_PERMISSION

    @extend_schema(operation_id="voidInvoice", request=OpenApiTypes.OBJECT, responses={200: OpenApiTypes.OBJECT})
    def post(self, request, invoice_id: str):
        invoice = _invoice_or_404(invoice_id)
        body = request.data if isinstance(request.data, dict) else None
        if body is None:
            raise Problem(400, "Invalid body", 'send a JSON object such as {"reason": "wrong price"}')
        reason = body.get("reason", "")
        if not isinstance(reason, str) or "\x00" in reason or len(reason) > MAX_REASON:
            raise Problem(400, "Invalid body", f"reason must be text of at most {MAX_REASON} characters",
                          errors=[{"field": "reason", "message": "invalid"}])
        user = request.user if getattr(request.user, "is_authenticated", False) and request.auth is None else None
        try:
            invoice = invoice_void(invoice=invoice, actor=user, label="" if user else "api", reason=reason.strip())
        except InvoiceTransitionError as exc:
            raise Problem(409, "Conflict", str(exc)) from exc
        return Response(invoice_json(_invoice_or_404(str(invoice.pk))))


class InvoiceReissueView(APIView):
    required_scopes = WRITE
    permission_model = "invoicing.invoice"
    required_permissions = WRITE_PERMISSION

    @extend_schema(operation_id="reissueInvoice", request=None, responses={201: OpenApiTypes.OBJECT})
    def post(self, request, invoice_id: str):
        invoice = _invoice_or_404(invoice_id)
        user = request.user if getattr(request.user, "is_authenticated", False) and request.auth is None else None
        try:
            new = invoice_reissue(invoice=invoice, actor=user, label="" if user else "api")
        except (ReissueError, InvoiceTransitionError, CreditNoteError) as exc:
            raise Problem(409, "Conflict", str(exc)) from exc
        return Response(invoice_json(_invoice_or_404(str(new.pk))), status=201)


class CreditNoteListView(APIView):
    required_scopes = {"GET": "read"}
    permission_model = "invoicing.creditnote"

    @extend_schema(operation_id="listCreditNotes", responses={200: OpenApiTypes.OBJECT},
                   parameters=[OpenApiParameter("customer", str), OpenApiParameter("limit", int)])
    def get(self, request):
        limit = int_param(request.query_params, "limit", default=100, minimum=1, maximum=1000)
        customer = _no_nul("customer", request.query_params.get("customer"))
        return Response([credit_note_json(note) for note in credit_note_list(customer_key=customer, limit=limit)])


class CreditNoteDetailView(APIView):
    required_scopes = {"GET": "read"}
    permission_model = "invoicing.creditnote"

    @extend_schema(operation_id="getCreditNote", responses={200: OpenApiTypes.OBJECT})
    def get(self, request, credit_note_id: str):
        note = credit_note_by_id_or_number(_no_nul("credit note", credit_note_id) or "")
        if note is None:
            raise Problem(404, "Not Found", f"No credit note {credit_note_id!r}.")
        return Response(credit_note_json(note))
