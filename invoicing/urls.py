"""API routes of invoicing."""

from django.urls import path

from .api import InvoiceDetailView, InvoiceListView
from .webhooks import stripe_webhook

urlpatterns = [
    path("api/v1/invoices", InvoiceListView.as_view(), name="invoices"),
    path("api/v1/invoices/<str:invoice_id>", InvoiceDetailView.as_view(), name="invoice"),
    path("stripe/webhooks", stripe_webhook, name="stripe-webhooks"),
]
