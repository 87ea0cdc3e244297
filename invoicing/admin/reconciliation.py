"""Billing → Reconciliation: rated now vs billed for every closed period, with the difference and why."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse

from catalog.money import format_major

from ..models import Invoice
from ..selectors.reconcile import reconcile

ROWS_SHOWN = 1000


def reconciliation_page(model_admin, request):
    if not request.user.has_perm("invoicing.view_invoice"):
        raise PermissionDenied
    customer = (request.GET.get("customer") or "").strip().replace("\x00", "")
    show_all = request.GET.get("all") == "1"
    rows, periods = [], 0
    for row in reconcile(customer_key=customer or None):
        periods += 1
        if show_all or row.difference:
            rows.append(row)
        if len(rows) >= ROWS_SHOWN:
            break
    context = {
        **model_admin.admin_site.each_context(request), "opts": Invoice._meta, "title": "Reconciliation",
        "rows": [{"row": r, "rated": format_major(r.rated, r.currency), "billed": format_major(r.billed, r.currency),
                  "difference": format_major(r.difference, r.currency)} for r in rows],
        "periods": periods, "differences": sum(1 for r in rows if r.difference),
        "unexplained": sum(1 for r in rows if not r.explained), "customer": customer, "show_all": show_all,
    }
    return TemplateResponse(request, "admin/invoicing/reconciliation.html", context)
