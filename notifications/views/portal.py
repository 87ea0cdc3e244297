"""The customer portal: ``/portal/<token>/`` and the PDF downloads under it. No staff login: the signed link is
the credential, and it opens one customer's data only (every read is filtered by the link's customer). Read-only
(GET only), rate-limited, served under the site's Content-Security-Policy (no inline script or style)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.http import Http404, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from catalog.money import format_major
from common.charts import bar_chart_svg
from invoicing.selectors.invoices import preview_json
from invoicing.selectors.previews import invoice_preview

from ..models import PortalLink
from ..pdf import credit_note_pdf, invoice_pdf
from ..selectors.portal import (
    CUSTOMER_FACING_ALERTS,
    customer_alerts,
    portal_credit_note,
    portal_credit_notes,
    portal_invoice,
    portal_invoices,
    portal_page_credits,
    portal_usage,
)
from ..services.portal import portal_link_resolve
from ..throttle import portal_wait

NOT_FOUND = "This portal link is not valid: it may have expired or been revoked. Ask for a new one."


def portal_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A GET view of the portal, called with the link its token opens: 429 while the client is throttled, 404 for
    an unknown, expired or revoked token."""

    @require_GET
    @functools.wraps(view)
    def resolved(request, token: str, **kwargs: Any) -> HttpResponse:
        wait = portal_wait(request, token)
        if wait:
            response = HttpResponse("Too many requests: try again in a minute.", status=429, content_type="text/plain")
            response["Retry-After"] = str(wait)
            return response
        link = portal_link_resolve(token)
        if link is None:
            raise Http404(NOT_FOUND)
        return view(request, token, link, **kwargs)

    return resolved


def _headers(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "private, no-store"
    response["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    response["X-Robots-Tag"] = "noindex"
    return response


@portal_view
def portal_page(request, token: str, link: PortalLink):
    customer = link.customer
    now = timezone.now()
    preview = preview_json(invoice_preview(customer=customer, at=now))
    features = portal_usage(customer, now=now)
    for feature in features:
        points = [(p["date"][5:], Decimal(p["usage"])) for p in feature["daily"]]
        feature["chart"] = bar_chart_svg(points, limit=Decimal(feature["limit"]) if feature["limit"] else None,
                                         width=640, height=160) if points else ""
    invoices = [{"invoice": i, "total": format_major(i.total, i.currency)} for i in portal_invoices(customer)]
    notes = [{"note": n, "total": format_major(n.total, n.currency)} for n in portal_credit_notes(customer)]
    return _headers(TemplateResponse(request, "notifications/portal/page.html", {
        "customer": customer, "token": token, "features": features, "preview": preview, "invoices": invoices,
        "credit_notes": notes, "alerts": customer_alerts(customer, kinds=CUSTOMER_FACING_ALERTS),
        "expires_at": link.expires_at,
        "credits": portal_page_credits(customer, now=now),
    }))


def _pdf(content: bytes | None, name: str) -> HttpResponse:
    if content is None:
        unavailable = HttpResponse("PDF documents are unavailable right now; try again later.", status=503,
                                   content_type="text/plain; charset=utf-8")
        unavailable["Retry-After"] = "3600"
        return _headers(unavailable)
    response = HttpResponse(content, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{name}.pdf"'
    return _headers(response)


@portal_view
def portal_invoice_pdf(request, token: str, link: PortalLink, invoice_id: str):
    invoice = portal_invoice(link.customer, invoice_id)
    if invoice is None:
        raise Http404("No such invoice.")
    return _pdf(invoice_pdf(invoice), invoice.number or f"invoice-{invoice.pk}")


@portal_view
def portal_credit_note_pdf(request, token: str, link: PortalLink, credit_note_id: str):
    note = portal_credit_note(link.customer, credit_note_id)
    if note is None:
        raise Http404("No such credit note.")
    return _pdf(credit_note_pdf(note), note.number)
