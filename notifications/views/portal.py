"""The customer portal: ``/portal/<token>/`` and the PDF downloads under it. No staff login: the signed link is
the credential, and it opens one customer's data only (every read is filtered by the link's customer). Read-only
(GET only), rate-limited, served under the site's Content-Security-Policy (no inline script or style)."""

from __future__ import annotations

from decimal import Decimal

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


def _link(request, token: str) -> PortalLink:
    wait = portal_wait(request, token)
    if wait:
        response = HttpResponse("Too many requests: try again in a minute.", status=429, content_type="text/plain")
        response["Retry-After"] = str(wait)
        raise _Answer(response)
    link = portal_link_resolve(token)
    if link is None:
        raise Http404(NOT_FOUND)
    return link


class _Answer(Exception):  # noqa: N818 - carries a ready response
    def __init__(self, response: HttpResponse) -> None:
        self.response = response


def _headers(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "private, no-store"
    response["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    response["X-Robots-Tag"] = "noindex"
    return response


@require_GET
def portal_page(request, token: str):
    try:
        link = _link(request, token)
    except _Answer as answer:
        return answer.response
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


@require_GET
def portal_invoice_pdf(request, token: str, invoice_id: str):
    try:
        link = _link(request, token)
    except _Answer as answer:
        return answer.response
    invoice = portal_invoice(link.customer, invoice_id)
    if invoice is None:
        raise Http404("No such invoice.")
    return _pdf(invoice_pdf(invoice), invoice.number or f"invoice-{invoice.pk}")


@require_GET
def portal_credit_note_pdf(request, token: str, credit_note_id: str):
    try:
        link = _link(request, token)
    except _Answer as answer:
        return answer.response
    note = portal_credit_note(link.customer, credit_note_id)
    if note is None:
        raise Http404("No such credit note.")
    return _pdf(credit_note_pdf(note), note.number)
