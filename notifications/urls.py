"""Routes of notifications: the webhook endpoint API, the portal's JSON, and the portal pages."""

from django.urls import path

from .api.endpoints import WebhookEndpointDetailView, WebhookEndpointListView
from .api.portal import PortalUsageView
from .views.portal import portal_credit_note_pdf, portal_invoice_pdf, portal_page

urlpatterns = [
    path("api/v1/webhook-endpoints", WebhookEndpointListView.as_view(), name="webhook-endpoints"),
    path("api/v1/webhook-endpoints/<str:endpoint_id>", WebhookEndpointDetailView.as_view(), name="webhook-endpoint"),
    path("api/v1/portal/usage", PortalUsageView.as_view(), name="portal-usage"),
    path("portal/<str:token>/", portal_page, name="portal"),
    path("portal/<str:token>/invoices/<str:invoice_id>.pdf", portal_invoice_pdf, name="portal-invoice-pdf"),
    path("portal/<str:token>/credit-notes/<str:credit_note_id>.pdf", portal_credit_note_pdf,
         name="portal-credit-note-pdf"),
]
