"""Printable invoices and credit notes (HTML pages), their PDFs, and the CSV export of invoices. The documents
themselves are :mod:`invoicing.selectors.documents`."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone

from catalog.money import format_major
from common.csv import csv_writer

from ..models import CreditNote, Invoice
from ..selectors.documents import (
    PDF_CONTENT_TYPE,
    Document,
    DocumentUnavailable,
    credit_note_document,
    document_html,
    document_pdf,
    invoice_document,
)

CSV_COLUMNS = ["invoice", "status", "customer", "currency", "period_start", "period_end", "issued_at", "line_kind",
               "rate_card", "description", "quantity", "unit_price", "amount", "invoice_total"]


def _plain(value) -> str:
    return format(value.normalize(), "f")


def pdf_response(document: Document, *, inline: bool = False) -> HttpResponse:
    """The document's PDF as a download (or shown in the browser with ``inline``)."""
    response = HttpResponse(document_pdf(document), content_type=PDF_CONTENT_TYPE)
    disposition = "inline" if inline else "attachment"
    response["Content-Disposition"] = f'{disposition}; filename="{document.filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _show(model_admin, request, obj, build, pdf: bool, change_url: str) -> HttpResponse:
    if not model_admin.has_view_permission(request, obj):
        raise PermissionDenied
    document = build(obj)
    if not pdf:
        return HttpResponse(document_html(document, request=request))
    try:
        return pdf_response(document)
    except DocumentUnavailable as exc:
        messages.error(request, f"The PDF cannot be made on this server: {exc}.")
        return HttpResponseRedirect(reverse(change_url, args=[obj.pk]))


def invoice_page(model_admin, request, pk: int, *, pdf: bool = False) -> HttpResponse:
    invoice = get_object_or_404(Invoice.objects.select_related("customer", "subscription__plan", "replaces"), pk=pk)
    return _show(model_admin, request, invoice, invoice_document, pdf, "admin:invoicing_invoice_change")


def credit_note_page(model_admin, request, pk: int, *, pdf: bool = False) -> HttpResponse:
    note = get_object_or_404(CreditNote.objects.select_related("customer", "invoice"), pk=pk)
    return _show(model_admin, request, note, credit_note_document, pdf, "admin:invoicing_creditnote_change")


def invoices_csv(queryset) -> HttpResponse:
    """One row per invoice line, with its invoice's number, status, customer, period and total."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="invoices-{timezone.now():%Y%m%d-%H%M}.csv"'
    writer = csv_writer(response)
    writer.writerow(CSV_COLUMNS)
    for invoice in queryset.select_related("customer").prefetch_related("lines"):
        for line in invoice.lines.all():
            writer.writerow([
                str(invoice), invoice.status, invoice.customer.key, invoice.currency, invoice.period_start.isoformat(),
                invoice.period_end.isoformat(), invoice.issued_at.isoformat() if invoice.issued_at else "", line.kind,
                line.rate_card_key, line.description, _plain(line.quantity),
                "" if line.unit_price is None else _plain(line.unit_price), format_major(line.amount, invoice.currency),
                format_major(invoice.total, invoice.currency),
            ])
    return response
