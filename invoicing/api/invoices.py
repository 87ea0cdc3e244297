"""Invoices and credit notes over HTTP: read them, and void or reissue an invoice as the admin can.

``GET /api/v1/invoices?customer=KEY&status=…``, ``GET /api/v1/invoices/{id or number}``,
``POST /api/v1/invoices/{id or number}/void`` (``{"reason": "..."}``), ``POST /api/v1/invoices/{id or number}/reissue``
(201 with the new invoice), ``GET /api/v1/credit-notes?customer=KEY``, ``GET /api/v1/credit-notes/{id or number}``,
and the documents a customer receives as PDF: ``GET /api/v1/invoices/{id or number}/pdf``,
``GET /api/v1/credit-notes/{id or number}/pdf``.
Writes need the ``manage`` scope, or a staff session with the permission to issue invoices; an illegal
transition is 409 problem+json.
"""

from __future__ import annotations

import json

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.renderers import BaseRenderer
from rest_framework.response import Response

from common.problems import Problem
from metering.api.params import int_param, json_object_body
from metering.api.schema import NO_NUL, component, date_time, optional_body, problems
from metering.api.views import ReadView, WriteView
from metering.authentication import api_actor

from ..models import CreditNote, CreditNoteLine, Invoice, InvoiceLine
from ..selectors.documents import (
    PDF_CONTENT_TYPE,
    Document,
    DocumentUnavailable,
    credit_note_document,
    document_pdf,
    invoice_document,
)
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


class InvoiceWriteView(WriteView):
    """A change to one invoice: the `manage` scope, or a staff session allowed to issue invoices."""

    permission_model = "invoicing.invoice"
    required_permissions = {"POST": "invoicing.issue_invoice"}


# --- OpenAPI description (schema only) ---------------------------------------------------------------------

_AMOUNT = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$",
           "description": "Major units as an exact decimal string, e.g. `12.34`, `-0.05`, `5` (JPY)."}
_DECIMAL = {**_AMOUNT, "description": "An exact decimal, e.g. `0.000003`."}
_STAMP = date_time("", nullable=True)
_SYNC_STATUS = {"type": "string", "enum": list(Invoice.SyncStatus.values)}
INVOICE_LINE = component("InvoiceLine", {
    "type": "object",
    "required": ["kind", "rate_card", "name", "feature", "description", "quantity", "unit_price", "amount",
                 "period_start", "period_end", "tiers"],
    "properties": {
        "kind": {"type": "string", "enum": list(InvoiceLine.Kind.values)},
        "rate_card": {"type": ["string", "null"], "description": "The rate card's key (null on a credits line)."},
        "grant": {"type": "string", "description": "`credits_applied` lines: the credit grant paying (its id)."},
        "name": {"type": "string"},
        "feature": {"type": ["string", "null"]},
        "description": {"type": "string"},
        "quantity": {**_DECIMAL, "type": ["string", "null"]},
        "unit_price": {**_DECIMAL, "type": ["string", "null"]},
        "amount": _AMOUNT,
        "period_start": date_time(""),
        "period_end": date_time(""),
        "tiers": {"type": "array", "items": {"type": "object"}, "description": "Graduated and volume breakdowns."},
        "dimensions": {"type": ["object", "null"], "additionalProperties": {"type": "string"},
                       "description": "Dimensional prices: the matched row, e.g. `{\"model\": \"gpt-4o\", "
                                      "\"type\": \"request\"}`; null for the default row and other prices."},
    },
})
INVOICE = component("Invoice", {
    "type": "object",
    "required": ["id", "number", "status", "customer", "currency", "period_start", "period_end", "subtotal",
                 "total", "issued_at", "due_at", "paid_at", "voided_at", "replaces", "stripe", "lines",
                 "credit_notes"],
    "properties": {
        "id": {"type": "string"},
        "number": {"type": ["string", "null"], "description": "null while a draft."},
        "status": {"type": "string", "enum": list(Invoice.Status.values)},
        "customer": {"type": "string", "description": "The customer's key."},
        "currency": {"type": "string"},
        "period_start": date_time(""),
        "period_end": date_time(""),
        "subtotal": _AMOUNT,
        "total": _AMOUNT,
        "issued_at": _STAMP, "due_at": _STAMP, "paid_at": _STAMP, "voided_at": _STAMP,
        "replaces": {"type": ["string", "null"], "description": "The number of the voided invoice it corrects."},
        "stripe": {"type": "object", "required": ["sync_status", "invoice_id", "hosted_invoice_url"], "properties": {
            "sync_status": _SYNC_STATUS, "invoice_id": {"type": ["string", "null"]},
            "hosted_invoice_url": {"type": ["string", "null"]}}},
        "lines": {"type": "array", "items": INVOICE_LINE},
        "credit_notes": {"type": "array", "items": {"type": "string"}, "description": "Their numbers."},
    },
})
CREDIT_NOTE = component("CreditNote", {
    "type": "object",
    "required": ["id", "number", "status", "invoice", "customer", "currency", "total", "reason", "issued_at",
                 "voided_at", "stripe", "lines"],
    "properties": {
        "id": {"type": "string"},
        "number": {"type": "string"},
        "status": {"type": "string", "enum": list(CreditNote.Status.values)},
        "invoice": {"type": ["string", "null"], "description": "The number of the invoice it credits."},
        "customer": {"type": "string"},
        "currency": {"type": "string"},
        "total": _AMOUNT,
        "reason": {"type": "string"},
        "issued_at": _STAMP, "voided_at": _STAMP,
        "stripe": {"type": "object", "required": ["sync_status", "credit_note_id"], "properties": {
            "sync_status": _SYNC_STATUS, "credit_note_id": {"type": ["string", "null"]}}},
        "lines": {"type": "array", "items": {
            "type": "object",
            "required": ["kind", "rate_card", "description", "quantity", "amount", "period_start", "period_end"],
            "properties": {
                "kind": {"type": "string", "enum": list(CreditNoteLine.Kind.values)},
                "rate_card": {"type": ["string", "null"]},
                "description": {"type": "string"},
                "quantity": {**_DECIMAL, "type": ["string", "null"]},
                "amount": _AMOUNT,
                "period_start": _STAMP, "period_end": _STAMP,
            },
        }},
    },
})
_STATUS_NAME = "(?:" + "|".join(Invoice.Status.values) + ")"
_ID = {"type": "string", "pattern": NO_NUL}
INVOICE_ID = OpenApiParameter("invoice_id", _ID, OpenApiParameter.PATH, description="The invoice's id or number.",
                              examples=[OpenApiExample("number", value="INV-2026-000001")])
CREDIT_NOTE_ID = OpenApiParameter("credit_note_id", _ID, OpenApiParameter.PATH,
                                  description="The credit note's id or number.",
                                  examples=[OpenApiExample("number", value="CN-2026-000001")])
CUSTOMER = OpenApiParameter("customer", _ID, description="Only this customer's (its key).")
STATUS = OpenApiParameter(
    "status", {"type": "array", "items": {"type": "string", "pattern": f"^{_STATUS_NAME}?(?:,{_STATUS_NAME}?)*$"}},
    explode=True, description=f"Only these statuses ({', '.join(Invoice.Status.values)}): repeat the parameter or "
                              "separate them with commas.")
LIMIT = OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                         description="At most this many, newest first.")
VOID_BODY = component("InvoiceVoid", {
    "type": "object",
    "properties": {"reason": {"type": "string", "maxLength": MAX_REASON, "pattern": NO_NUL,
                              "description": "Why it is voided (kept in the log)."}},
    "example": {"reason": "wrong price"},
})
optional_body("voidInvoice")


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


def _credit_note_or_404(credit_note_id: str) -> CreditNote:
    note = credit_note_by_id_or_number(_no_nul("credit note", credit_note_id) or "")
    if note is None:
        raise Problem(404, "Not Found", f"No credit note {credit_note_id!r}.")
    return note


class InvoiceListView(ReadView):
    permission_model = "invoicing.invoice"

    @extend_schema(operation_id="listInvoices", summary="List invoices", tags=["Invoices"],
                   responses={200: {"type": "array", "items": INVOICE}, **problems(400)},
                   parameters=[CUSTOMER, STATUS, LIMIT])
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


class InvoiceDetailView(ReadView):
    permission_model = "invoicing.invoice"

    @extend_schema(operation_id="getInvoice", summary="Get an invoice", tags=["Invoices"], parameters=[INVOICE_ID],
                   responses={200: INVOICE, **problems(400, 404)})
    def get(self, request, invoice_id: str):
        return Response(invoice_json(_invoice_or_404(invoice_id)))


class InvoiceVoidView(InvoiceWriteView):
    @extend_schema(operation_id="voidInvoice", summary="Void an invoice", tags=["Invoices"],
                   description="Needs the `manage` scope, or a staff session allowed to issue invoices. 409 when "
                               "the invoice cannot be voided (a draft, already void).",
                   parameters=[INVOICE_ID], request={"application/json": VOID_BODY},
                   responses={200: INVOICE, **problems(400, 404, 409)})
    def post(self, request, invoice_id: str):
        invoice = _invoice_or_404(invoice_id)
        reason = json_object_body(request, example='{"reason": "wrong price"}').get("reason", "")
        if not isinstance(reason, str) or "\x00" in reason or len(reason) > MAX_REASON:
            raise Problem(400, "Invalid body", f"reason must be text of at most {MAX_REASON} characters",
                          errors=[{"field": "reason", "message": "invalid"}])
        actor, label = api_actor(request)
        try:
            invoice = invoice_void(invoice=invoice, actor=actor, label=label, reason=reason.strip())
        except InvoiceTransitionError as exc:
            raise Problem(409, "Conflict", str(exc)) from exc
        return Response(invoice_json(_invoice_or_404(str(invoice.pk))))


class InvoiceReissueView(InvoiceWriteView):
    @extend_schema(operation_id="reissueInvoice", summary="Reissue a voided invoice", tags=["Invoices"],
                   description="A new invoice replacing a voided one. Needs the `manage` scope, or a staff session "
                               "allowed to issue invoices. 409 unless the invoice is void and not yet replaced.",
                   parameters=[INVOICE_ID], request=None,
                   responses={201: OpenApiResponse(INVOICE, description="The new invoice."),
                              **problems(400, 404, 409)})
    def post(self, request, invoice_id: str):
        invoice = _invoice_or_404(invoice_id)
        actor, label = api_actor(request)
        try:
            new = invoice_reissue(invoice=invoice, actor=actor, label=label)
        except (ReissueError, InvoiceTransitionError, CreditNoteError) as exc:
            raise Problem(409, "Conflict", str(exc)) from exc
        return Response(invoice_json(_invoice_or_404(str(new.pk))), status=201)


class CreditNoteListView(ReadView):
    permission_model = "invoicing.creditnote"

    @extend_schema(operation_id="listCreditNotes", summary="List credit notes", tags=["Invoices"],
                   responses={200: {"type": "array", "items": CREDIT_NOTE}, **problems(400)},
                   parameters=[CUSTOMER, LIMIT])
    def get(self, request):
        limit = int_param(request.query_params, "limit", default=100, minimum=1, maximum=1000)
        customer = _no_nul("customer", request.query_params.get("customer"))
        return Response([credit_note_json(note) for note in credit_note_list(customer_key=customer, limit=limit)])


class CreditNoteDetailView(ReadView):
    permission_model = "invoicing.creditnote"

    @extend_schema(operation_id="getCreditNote", summary="Get a credit note", tags=["Invoices"],
                   parameters=[CREDIT_NOTE_ID], responses={200: CREDIT_NOTE, **problems(400, 404)})
    def get(self, request, credit_note_id: str):
        return Response(credit_note_json(_credit_note_or_404(credit_note_id)))


# --- The documents as PDF ------------------------------------------------------------------------------------

class PdfRenderer(BaseRenderer):
    """Lets ``Accept: application/pdf`` through content negotiation; the view writes the PDF itself and errors
    stay problem+json."""

    media_type = PDF_CONTENT_TYPE
    format = "pdf"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(data).encode() if data is not None else b""


PDF_RESPONSE = OpenApiResponse({"type": "string", "format": "binary"},
                               description="The document as PDF (`Content-Disposition: attachment`).")


class PdfView(ReadView):
    """A document downloaded as PDF: a read."""

    renderer_classes = [PdfRenderer]

    def options(self, request, *args, **kwargs):
        """The metadata as JSON, labelled so (the PDF renderer only carries it)."""
        response = super().options(request, *args, **kwargs)
        response.content_type = "application/json"
        return response


def _pdf(document: Document) -> HttpResponse:
    try:
        content = document_pdf(document)
    except DocumentUnavailable as exc:
        raise Problem(503, "Service Unavailable", str(exc)) from exc
    response = HttpResponse(content, content_type=PDF_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{document.filename}"'
    return response


def _pdf_schema(operation_id: str, summary: str, *, document: str, parameter: OpenApiParameter):
    """The OpenAPI description of a PDF download of ``document`` (an invoice, a credit note)."""
    return extend_schema(operation_id=operation_id, summary=summary, tags=["Invoices"],
                         description=f"The {document} the customer receives (seller from Settings → Company), as PDF.",
                         parameters=[parameter],
                         responses={(200, PDF_CONTENT_TYPE): PDF_RESPONSE, **problems(400, 404, 406)})


class InvoicePdfView(PdfView):
    permission_model = "invoicing.invoice"

    @_pdf_schema("getInvoicePdf", "Download an invoice as PDF", document="invoice", parameter=INVOICE_ID)
    def get(self, request, invoice_id: str):
        return _pdf(invoice_document(_invoice_or_404(invoice_id)))


class CreditNotePdfView(PdfView):
    permission_model = "invoicing.creditnote"

    @_pdf_schema("getCreditNotePdf", "Download a credit note as PDF", document="credit note", parameter=CREDIT_NOTE_ID)
    def get(self, request, credit_note_id: str):
        return _pdf(credit_note_document(_credit_note_or_404(credit_note_id)))
