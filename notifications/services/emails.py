"""Emails to customers through Django's email backend: invoices and credit notes with their PDF, and (when the
customer wants them) usage threshold alerts. Subjects and texts come from the admin-editable
:class:`~notifications.models.EmailTemplate` (Django template syntax), else from the defaults here."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.mail import EmailMessage
from django.template import Context, Template, TemplateSyntaxError

from invoicing.models import CreditNote, Invoice
from invoicing.selectors.settings import company_profile

from .. import transport
from ..models import EmailTemplate, OutboxEvent
from ..pdf import credit_note_pdf, invoice_pdf

DEFAULTS = {
    "invoice.issued": ("Invoice {{ invoice.number }} from {{ company }}",
                       "Hello {{ customer.name }},\n\nyour invoice {{ invoice.number }} for {{ invoice.total }} "
                       "{{ invoice.currency }} is attached.\n\n{{ company }}\n"),
    "credit_note.issued": ("Credit note {{ credit_note.number }} from {{ company }}",
                           "Hello {{ customer.name }},\n\ncredit note {{ credit_note.number }} for "
                           "{{ credit_note.total }} {{ credit_note.currency }} against invoice "
                           "{{ credit_note.invoice }} is attached.\n\n{{ company }}\n"),
    "entitlement.threshold": ("{{ data.threshold_percent }}% of your {{ data.feature }} allowance used",
                              "Hello {{ customer.name }},\n\nyou have used {{ data.usage }} of {{ data.limit }} "
                              "{{ data.feature }} ({{ data.threshold_percent }}%) this period.\n\n{{ company }}\n"),
}


def render(event_type: str, context: dict) -> tuple[str, str]:
    stored = EmailTemplate.objects.filter(key=event_type).first()
    subject, body = (stored.subject, stored.body) if stored else DEFAULTS[event_type]
    try:
        rendered = [Template(text).render(Context(context, autoescape=False)) for text in (subject, body)]
    except TemplateSyntaxError:
        rendered = [Template(text).render(Context(context, autoescape=False)) for text in DEFAULTS[event_type]]
    return " ".join(rendered[0].split())[:300], rendered[1]


def email_send(event: OutboxEvent, recipient: str) -> tuple[dict[str, str], str, transport.Response]:
    """Send the email of one event; the answer in the shape of a webhook attempt for the delivery log."""
    started = time.monotonic()
    context = {"company": str(company_profile()), "customer": event.customer, "data": event.data, **event.data}
    attachments = []
    if event.type == "invoice.issued":
        invoice = Invoice.objects.select_related("customer").filter(pk=int(event.data["invoice"]["id"])).first()
        if invoice is not None:
            pdf = invoice_pdf(invoice)
            if pdf is not None:  # without pango the email goes out without its attachment (logged by documents)
                attachments.append((f"{invoice.number}.pdf", pdf, "application/pdf"))
    elif event.type == "credit_note.issued":
        note = (CreditNote.objects.select_related("customer", "invoice")
                .filter(pk=int(event.data["credit_note"]["id"])).first())
        if note is not None:
            pdf = credit_note_pdf(note)
            if pdf is not None:
                attachments.append((f"{note.number}.pdf", pdf, "application/pdf"))
    subject, body = render(event.type, context)
    headers = {"to": recipient, "subject": subject, "attachments": ", ".join(name for name, *_ in attachments)}
    message = EmailMessage(subject=subject, body=body, from_email=settings.BILLING_FROM_EMAIL, to=[recipient],
                           attachments=attachments, headers={"X-Event-Id": event.uid})
    try:
        message.send()
    except (OSError, ValueError) as exc:
        return headers, body, transport.Response(None, "", f"{type(exc).__name__}: {exc}",
                                                 int((time.monotonic() - started) * 1000))
    return headers, body, transport.Response(250, "accepted by the email backend", "",
                                             int((time.monotonic() - started) * 1000))
