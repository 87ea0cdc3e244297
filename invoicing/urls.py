"""API routes of invoicing."""

from django.urls import include, path

from .api.invoices import (
    CreditNoteDetailView,
    CreditNoteListView,
    CreditNotePdfView,
    InvoiceDetailView,
    InvoiceListView,
    InvoicePdfView,
    InvoiceReissueView,
    InvoiceVoidView,
)
from .api.margins import MarginListView
from .api.stripe_webhooks import stripe_webhook

# What hangs off one invoice or credit note is included under that document's path.
urlpatterns = [
    path("api/v1/invoices", InvoiceListView.as_view(), name="invoices"),
    path("api/v1/invoices/<str:invoice_id>", InvoiceDetailView.as_view(), name="invoice"),
    path("api/v1/invoices/<str:invoice_id>/", include([
        path("pdf", InvoicePdfView.as_view(), name="invoice-pdf"),
        path("void", InvoiceVoidView.as_view(), name="invoice-void"),
        path("reissue", InvoiceReissueView.as_view(), name="invoice-reissue"),
    ])),
    path("api/v1/credit-notes", CreditNoteListView.as_view(), name="credit-notes"),
    path("api/v1/credit-notes/<str:credit_note_id>", CreditNoteDetailView.as_view(), name="credit-note"),
    path("api/v1/credit-notes/<str:credit_note_id>/", include([
        path("pdf", CreditNotePdfView.as_view(), name="credit-note-pdf"),
    ])),
    path("api/v1/margins", MarginListView.as_view(), name="margins"),
    path("stripe/webhooks", stripe_webhook, name="stripe-webhooks"),
]
