"""Printable invoices and credit notes (HTML pages to print or save as PDF) and the CSV export of invoices."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.utils import timezone

from catalog.money import format_major
from common.csv import csv_writer

from ..models import CreditNote, Invoice

CSV_COLUMNS = ["invoice", "status", "customer", "currency", "period_start", "period_end", "issued_at", "line_kind",
               "rate_card", "description", "quantity", "unit_price", "amount", "invoice_total"]


def _plain(value) -> str:
    return format(value.normalize(), "f")


def _document(model_admin, request, document, template: str, **context):
    """A printable invoice or credit note: its customer, lines and total (amounts in major units)."""
    if not model_admin.has_view_permission(request, document):
        raise PermissionDenied
    lines = [{"line": line, "amount": format_major(line.amount, document.currency), "quantity": _plain(line.quantity)}
             for line in document.lines.all()]
    return TemplateResponse(request, template, {"customer": document.customer, "lines": lines,
                                                "total": format_major(document.total, document.currency), **context})


def invoice_document(model_admin, request, pk: int):
    invoice = get_object_or_404(Invoice.objects.select_related("customer", "subscription__plan"), pk=pk)
    return _document(model_admin, request, invoice, "invoicing/invoice.html", invoice=invoice,
                     seller="Billing back office", subtotal=format_major(invoice.subtotal, invoice.currency),
                     credits_applied=format_major(invoice.total - invoice.subtotal, invoice.currency))


def credit_note_document(model_admin, request, pk: int):
    note = get_object_or_404(CreditNote.objects.select_related("customer", "invoice"), pk=pk)
    return _document(model_admin, request, note, "invoicing/credit_note.html", credit_note=note)


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
