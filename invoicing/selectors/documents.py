"""The invoice and the credit note a customer receives: one context per document, rendered as HTML (the admin's
printable page) and as PDF (WeasyPrint) from the same templates (``templates/invoicing/``).

The seller is Settings → Company; the buyer the customer's billing details. Every amount, quantity, date, period
and address is written by :mod:`common.formatting` in the company's locale. Lines are named by their rate card,
with the feature below it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.template.loader import render_to_string

from catalog.display import unit_label, unit_name
from common.formatting import (
    format_address,
    format_amount,
    format_date,
    format_period,
    format_quantity,
    format_unit_price,
)
from customers.models import Customer

from ..models import CompanyProfile, CreditNote, CreditNoteLine, Invoice, InvoiceLine
from .settings import company_profile, logo_data_uri

logger = logging.getLogger(__name__)

INVOICE_TEMPLATE = "invoicing/invoice.html"
CREDIT_NOTE_TEMPLATE = "invoicing/credit_note.html"
PDF_CONTENT_TYPE = "application/pdf"


class DocumentUnavailable(RuntimeError):
    """The PDF cannot be made on this machine (WeasyPrint's system libraries are missing)."""


@dataclass(frozen=True)
class Party:
    name: str
    address: list[str]
    tax_id: str = ""
    email: str = ""


@dataclass(frozen=True)
class DocumentLine:
    name: str
    feature: str
    detail: str
    breakdown: list[str]
    period: str
    amount: str


@dataclass(frozen=True)
class Document:
    kind: str  # "invoice" or "credit_note"
    title: str
    number: str
    locale: str
    currency: str
    seller: Party
    buyer: Party
    logo: str
    facts: list[tuple[str, str]]
    lines: list[DocumentLine]
    totals: list[tuple[str, str]]
    payment_instructions: str
    footer: str
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def safe_number(self) -> str:
        """The number with only letters, digits, ``-`` and ``_`` (for file names and the page footer's CSS)."""
        return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in self.number)[:60] or "draft"

    @property
    def filename(self) -> str:
        return f"{'invoice' if self.kind == 'invoice' else 'credit-note'}-{self.safe_number}.pdf"


def _seller(company: CompanyProfile) -> Party:
    return Party(
        name=company.legal_name or "Your company (Settings → Company)",
        address=format_address(street=[company.street_line1, company.street_line2], postal_code=company.postal_code,
                               city=company.city, region=company.region, country=company.country,
                               locale=company.locale),
        tax_id=company.tax_id, email=company.email)


def _buyer(customer: Customer, locale: str) -> Party:
    return Party(
        name=customer.name,
        address=format_address(street=[customer.address_line1, customer.address_line2],
                               postal_code=customer.postal_code, city=customer.city, region=customer.state,
                               country=customer.country, locale=locale),
        tax_id=customer.tax_id, email=customer.email or "")


def _names(rate_card, feature, fallback: str) -> tuple[str, str]:
    """(the rate card's name, the feature's name below it when it says something more)."""
    if rate_card is None:
        return fallback, ""
    name = rate_card.display_name
    feature_name = feature.name if feature is not None else ""
    return name, (feature_name if feature_name and feature_name != name else "")


def _quantity_text(rate_card, quantity: Decimal, locale: str) -> str:
    unit = unit_label(rate_card) if rate_card is not None else "units"
    return f"{format_quantity(quantity, locale)} {unit_name(unit, quantity)}"


def _tier_rows(tiers: list[dict[str, Any]], currency: str, locale: str) -> list[str]:
    rows: list[str] = []
    for tier in tiers or []:
        try:
            quantity, unit_amount = Decimal(tier["quantity"]), Decimal(tier["unit_amount"])
            flat = Decimal(tier.get("flat_amount") or 0)
            up_to = None if tier.get("up_to") is None else Decimal(tier["up_to"])
        except (KeyError, TypeError, ArithmeticError):
            continue
        if not quantity and not flat:
            continue
        label = f"tier {tier.get('tier', len(rows) + 1)}"
        if up_to is not None:
            label += f" (up to {format_quantity(up_to, locale)})"
        text = f"{label}: {format_quantity(quantity, locale)} × {format_unit_price(unit_amount, currency, locale)}"
        if flat:
            text += f" + {format_unit_price(flat, currency, locale)}"
        rows.append(text)
    return rows


def _invoice_line(line: InvoiceLine, currency: str, locale: str) -> DocumentLine:
    rate_card = line.rate_card
    name, feature = _names(rate_card, line.feature, line.rate_card_key)
    kind, detail = line.kind, ""
    period = format_period(line.period_start, line.period_end, locale)
    K = InvoiceLine.Kind
    if kind in (K.CREDITS_APPLIED, K.CREDIT_TOP_UP):  # prepaid credits: no rate card; the line says what it is
        return DocumentLine(name=line.description, feature="", detail="", breakdown=[], period=period,
                            amount=format_amount(line.amount, currency, locale))
    usage_priced = rate_card is not None and rate_card.price_type != "flat"
    if kind == K.CREDIT and not usage_priced:
        # The line's period is the part that was used; what it credits runs from its end.
        detail, period = f"Unused part of the fee, from {format_date(line.period_end, locale)}", ""
    elif kind in (K.USAGE, K.LATE_USAGE, K.CREDIT) and usage_priced:
        detail = _quantity_text(rate_card, line.quantity, locale)
        if line.unit_price is not None and kind != K.CREDIT:
            detail += f" × {format_unit_price(line.unit_price, currency, locale)}"
        if kind == K.LATE_USAGE:
            detail = f"Late usage: {detail}"
        elif kind == K.CREDIT:
            detail = f"Usage rated lower than billed: {detail}"
    elif kind == K.FLAT_FEE and line.quantity != 1:
        share = format_quantity((line.quantity * 100).quantize(Decimal("0.01")), locale)
        detail = f"Prorated: {share}% of the period"
    elif kind == K.MINIMUM_SPEND:
        detail = "Minimum spend top-up"
    elif kind == K.DISCOUNT:
        detail = "Maximum spend cap"
    return DocumentLine(name=name, feature=feature, detail=detail,
                        breakdown=_tier_rows(line.tiers, currency, locale), period=period,
                        amount=format_amount(line.amount, currency, locale))


def _credit_line(line: CreditNoteLine, currency: str, locale: str) -> DocumentLine:
    rate_card = line.rate_card
    name, feature = _names(rate_card, rate_card.feature if rate_card else None, line.description)
    has_period = line.period_start is not None and line.period_end is not None
    period = format_period(line.period_start, line.period_end, locale) if has_period else ""  # type: ignore[arg-type]
    if line.kind == CreditNoteLine.Kind.ADJUSTMENT or rate_card is None:
        detail = line.description if rate_card is not None else ""
    elif rate_card.price_type == "flat":
        detail = f"Unused part of the fee, from {format_date(line.period_end, locale)}" if has_period else \
            "Unused part of the fee"
        period = ""
    else:
        detail = f"Usage rated lower than billed: {_quantity_text(rate_card, line.quantity, locale)}"
    return DocumentLine(name=name, feature=feature, detail=detail, breakdown=[], period=period,
                        amount=format_amount(line.amount, currency, locale))


_LINE_RELATED = ("rate_card__feature__meter", "feature")


def invoice_document(invoice: Invoice, company: CompanyProfile | None = None) -> Document:
    company = company or company_profile()
    locale, currency = company.locale, invoice.currency
    lines = [_invoice_line(line, currency, locale)
             for line in invoice.lines.select_related(*_LINE_RELATED).order_by("position", "id")]
    totals = []
    if invoice.subtotal != invoice.total:  # prepaid credits paid part of it ("Credits applied" lines)
        totals.append(("Subtotal", format_amount(invoice.subtotal, currency, locale)))
        totals.append(("Prepaid credits applied", format_amount(invoice.total - invoice.subtotal, currency, locale)))
    totals.append(("Total due" if invoice.status in (Invoice.Status.ISSUED, Invoice.Status.DRAFT) else "Total",
                   format_amount(invoice.total, currency, locale)))
    facts = [
        ("Invoice number", invoice.number or "Draft"),
        ("Status", invoice.get_status_display()),
        ("Issued", format_date(invoice.issued_at, locale) or "—"),
        ("Due", format_date(invoice.due_at, locale) or "—"),
        ("Billing period", format_period(invoice.period_start, invoice.period_end, locale)),
        ("Plan", invoice.subscription.plan.name if invoice.subscription is not None else "Prepaid credits"),
    ]
    if invoice.replaces_id and invoice.replaces is not None:
        facts.append(("Replaces", str(invoice.replaces)))
    return Document(
        kind="invoice", title=f"Invoice {invoice.number or '(draft)'}", number=invoice.number or f"draft-{invoice.pk}",
        locale=locale, currency=currency, seller=_seller(company), buyer=_buyer(invoice.customer, locale),
        logo=logo_data_uri(company), facts=facts, lines=lines, totals=totals,
        payment_instructions=company.payment_instructions, footer=company.invoice_footer,
        extra={"pay_url": invoice.stripe_hosted_url})


def credit_note_document(note: CreditNote, company: CompanyProfile | None = None) -> Document:
    company = company or company_profile()
    locale, currency = company.locale, note.currency
    lines = [_credit_line(line, currency, locale)
             for line in note.lines.select_related("rate_card__feature__meter").order_by("position", "id")]
    facts = [
        ("Credit note number", note.number),
        ("Status", note.get_status_display()),
        ("Issued", format_date(note.issued_at, locale)),
        ("Corrects invoice", str(note.invoice)),
    ]
    return Document(
        kind="credit_note", title=f"Credit note {note.number}", number=note.number, locale=locale,
        currency=currency, seller=_seller(company), buyer=_buyer(note.customer, locale), logo=logo_data_uri(company),
        facts=facts, lines=lines, totals=[("Total credited", format_amount(note.total, currency, locale))],
        payment_instructions="", footer=company.invoice_footer, note=note.reason)


def document_html(document: Document, *, request=None, pdf: bool = False) -> str:
    template = INVOICE_TEMPLATE if document.kind == "invoice" else CREDIT_NOTE_TEMPLATE
    return render_to_string(template, {"doc": document, "pdf": pdf}, request=request)


def document_pdf(document: Document) -> bytes:
    """The document as PDF bytes (WeasyPrint). :class:`DocumentUnavailable` when pango is missing."""
    try:
        import weasyprint
    except OSError as exc:  # pango / its libraries are not installed
        logger.error("PDF documents are unavailable: %s", exc)
        raise DocumentUnavailable("PDF rendering needs pango (apt-get install libpango-1.0-0 libpangoft2-1.0-0)") \
            from exc
    html = document_html(document, pdf=True)
    # Nothing is fetched from outside: the logo is a data: URI and the styles are inline.
    fetcher = weasyprint.URLFetcher(allowed_protocols={"data"}, timeout=5)
    return bytes(weasyprint.HTML(string=html, base_url=None, url_fetcher=fetcher).write_pdf() or b"")
