"""Preview invoice: the invoice a customer would get for the current period, computed now, nothing saved."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.utils import timezone

from customers.models import Customer, Subscription

from ..selectors.invoices import preview_json
from ..selectors.previews import invoice_preview

PREVIEW_PERMISSION = "invoicing.preview_invoice"


def preview_page(model_admin, request, customer_id: int | None = None, subscription_id: int | None = None):
    if not request.user.has_perm(PREVIEW_PERMISSION):
        raise PermissionDenied
    if subscription_id is not None:
        customer = get_object_or_404(Subscription, pk=subscription_id).customer
    else:
        customer = get_object_or_404(Customer, pk=customer_id)
    preview = invoice_preview(customer=customer, at=timezone.now())
    period_text = (f"{preview.period_start:%Y-%m-%d %H:%M} – {preview.period_end:%Y-%m-%d %H:%M} UTC"
                   if preview.period_start else "")
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "period_text": period_text,
        "customer": customer,
        "preview": preview_json(preview),
        "title": f"Preview invoice — {customer.name}",
        "now": timezone.now(),
    }
    return TemplateResponse(request, "admin/invoicing/invoice/preview.html", context)
