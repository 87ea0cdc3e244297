"""Invoices and credit notes as PDF documents (fpdf2, core fonts): the attachment of invoice emails and the
portal's downloads. Text outside Latin-1 is transliterated to '?' by the core fonts' encoding."""

from __future__ import annotations

from django.conf import settings

from catalog.money import format_major
from invoicing.models import CreditNote, Invoice


def _latin1(text: object) -> str:
    return str(text).encode("latin-1", "replace").decode("latin-1")


def _plain(value) -> str:
    return format(value.normalize(), "f") if value is not None else ""


def _document(title: str, meta: list[str], customer, rows: list[tuple[str, str, str]], total: str) -> bytes:
    from fpdf import FPDF  # noqa: PLC0415 - fpdf imports Pillow and fontTools: loaded only to render

    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for line in [settings.COMPANY_NAME, *meta, "", "Bill to:", customer.name, customer.address_line1,
                 " ".join(filter(None, [customer.postal_code, customer.city])), customer.country, customer.tax_id]:
        if line or line == "":
            pdf.cell(0, 5, _latin1(line), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(110, 6, "Description", border="B")
    pdf.cell(40, 6, "Quantity", border="B", align="R")
    pdf.cell(40, 6, "Amount", border="B", align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=9)
    for description, quantity, amount in rows:
        pdf.cell(110, 6, _latin1(description[:70]))
        pdf.cell(40, 6, _latin1(quantity), align="R")
        pdf.cell(40, 6, _latin1(amount), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(150, 8, "Total", border="T")
    pdf.cell(40, 8, _latin1(total), border="T", align="R", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def invoice_pdf(invoice: Invoice) -> bytes:
    currency = invoice.currency
    meta = [f"Status: {invoice.get_status_display()}",
            f"Issued: {invoice.issued_at:%Y-%m-%d}" if invoice.issued_at else "Issued: -",
            f"Due: {invoice.due_at:%Y-%m-%d}" if invoice.due_at else "Due: -",
            f"Billing period: {invoice.period_start:%Y-%m-%d} - {invoice.period_end:%Y-%m-%d}"]
    rows = [(line.description, _plain(line.quantity), format_major(line.amount, currency))
            for line in invoice.lines.all()]
    return _document(f"Invoice {invoice.number or '(draft)'}", meta, invoice.customer, rows,
                     f"{format_major(invoice.total, currency)} {currency}")


def credit_note_pdf(note: CreditNote) -> bytes:
    currency = note.currency
    meta = [f"Credits invoice {note.invoice.number}", f"Issued: {note.issued_at:%Y-%m-%d}", f"Reason: {note.reason}"]
    rows = [(line.description, _plain(line.quantity), format_major(line.amount, currency))
            for line in note.lines.all()]
    return _document(f"Credit note {note.number}", meta, note.customer, rows,
                     f"{format_major(note.total, currency)} {currency}")
