"""Invoices and credit notes as PDF for emails and the portal: the same documents as the admin and the API
(:mod:`invoicing.selectors.documents`, WeasyPrint). ``None`` where PDFs cannot be made on this machine."""

from __future__ import annotations

from invoicing.models import CreditNote, Invoice
from invoicing.selectors.documents import DocumentUnavailable, credit_note_document, document_pdf, invoice_document


def invoice_pdf(invoice: Invoice) -> bytes | None:
    try:
        return document_pdf(invoice_document(invoice))
    except DocumentUnavailable:
        return None


def credit_note_pdf(note: CreditNote) -> bytes | None:
    try:
        return document_pdf(credit_note_document(note))
    except DocumentUnavailable:
        return None
