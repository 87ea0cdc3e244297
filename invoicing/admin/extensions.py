"""What invoicing adds to the admins of the apps below it (registered from ``InvoicingConfig.ready()``):

- the customer page: its invoice preview, past invoices and Stripe customer, and a "Preview invoice" button;
- the subscription page: a "Preview invoice" button;
- the event explorer: the invoice that billed each event (late events: the late-usage invoice).
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from catalog.money import format_major
from common.admin.extensions import ListColumn, ObjectTool, Panel, PanelField, register_admin_extension
from common.admin.utils import saved_only
from customers.models import Customer, Subscription
from metering.admin.events import event_extra
from metering.models import Event

from ..models import Invoice
from ..selectors.invoices import preview_json
from ..selectors.previews import invoice_preview
from ..stripe_gateway import is_sandbox
from .previews import PREVIEW_PERMISSION

PAST_INVOICES_SHOWN = 24


@admin.display(description="preview of this period's invoice")
@saved_only
def invoice_preview_panel(customer: Customer) -> str:
    body = preview_json(invoice_preview(customer=customer, at=timezone.now()))
    if not body["lines"]:
        return "Nothing to bill: no active subscription."
    rows = ((line["rate_card"] or line["name"], line["description"], line["amount"]) for line in body["lines"])
    warnings = ((u["rate_card"], u["warning"], u["quantity"]) for u in body.get("unpriced", []))
    return format_html(
        '{}<table id="customer-preview"><tr><th>rate card</th><th>line</th><th style="text-align:right">{}</th></tr>'
        '{}<tr><th colspan="2">total</th><th style="text-align:right">{}</th></tr></table>',
        format_html_join("", '<p class="unpriced"><strong>{}: {}</strong> — {} not billed</p>', warnings),
        body["currency"],
        format_html_join("", '<tr><td>{}</td><td>{}</td><td style="text-align:right">{}</td></tr>', rows),
        body["total"],
    )


@admin.display(description="past invoices")
@saved_only
def past_invoices(customer: Customer) -> str:
    invoices = list(Invoice.objects.filter(customer=customer).order_by("-period_start", "-id")[:PAST_INVOICES_SHOWN])
    if not invoices:
        return "No invoices yet."
    rows = ((reverse("admin:invoicing_invoice_change", args=[i.pk]), str(i), i.status,
             f"{i.period_start:%Y-%m-%d} – {i.period_end:%Y-%m-%d}", format_major(i.total, i.currency), i.currency)
            for i in invoices)
    return format_html(
        "<table><tr><th>invoice</th><th>status</th><th>period</th><th>total</th></tr>{}</table>",
        format_html_join("", '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{} {}</td></tr>', rows),
    )


@admin.display(description="Stripe")
def stripe_link(customer: Customer) -> str:
    if is_sandbox():
        return "sandbox mode: not pushed to Stripe"
    if not customer.stripe_customer_id:
        return "created in Stripe with the first issued invoice"
    return format_html('<a href="https://dashboard.stripe.com/customers/{}" target="_blank" rel="noopener">{}</a>',
                       customer.stripe_customer_id, customer.stripe_customer_id)


@admin.display(description="billed on")
def billed_on(event: Event) -> str:
    return event_extra(event, "billedOn")


def register() -> None:
    register_admin_extension(
        Customer, "invoicing",
        panels=[Panel("Invoices", [PanelField(invoice_preview_panel, permission=PREVIEW_PERMISSION),
                                   PanelField(past_invoices), PanelField(stripe_link)])],
        object_tools=[ObjectTool("Preview invoice", lambda customer: reverse("admin:invoicing_preview_customer",
                                                                             args=[customer.pk]),
                                 element_id="preview-invoice", permission=PREVIEW_PERMISSION)],
    )
    register_admin_extension(
        Subscription, "invoicing",
        object_tools=[ObjectTool("Preview invoice", lambda subscription: reverse(
            "admin:invoicing_preview_subscription", args=[subscription.pk]), element_id="preview-invoice",
            permission=PREVIEW_PERMISSION)],
    )
    register_admin_extension(Event, "invoicing", columns=[ListColumn(billed_on, after="customer")])
