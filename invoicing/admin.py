"""Invoices for finance staff: list and detail with lines and tiers, lifecycle actions with confirmation,
the log of who did what, printable HTML, CSV export, previews, and cycle closes with progress."""

from __future__ import annotations

import csv
from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from catalog.money import format_major, minor_unit_exponent, to_major, to_minor
from common.admin_utils import ViewOnlyAdminMixin, pretty_json
from common.forms import DecimalTextField
from common.jobs import job_run_create
from common.models import JobRun
from customers.admin import CustomerAdmin, CustomerEventAdmin
from customers.models import Customer, Subscription
from metering.models import Event

from .models import CreditNote, CreditNoteLine, CycleClose, Invoice, InvoiceEvent, InvoiceLine, StripeWebhookEvent
from .selectors.invoices import preview_json
from .selectors.previews import invoice_preview
from .selectors.reconcile import reconcile
from .services.credit_notes import CreditNoteError, credit_note_create, credit_note_void, creditable_amounts
from .services.lifecycle import (
    LEGAL,
    InvoiceTransitionError,
    ReissueError,
    invoice_issue,
    invoice_mark_paid,
    invoice_mark_uncollectible,
    invoice_reissue,
    invoice_void,
)
from .services.stripe_push import retry_credit_note_sync, retry_sync
from .stripe_gateway import is_sandbox

ACTIONS = {
    "issue": ("Issue", invoice_issue, "assigns the next invoice number and sends the invoice to Stripe"),
    "void": ("Void", invoice_void, "cancels the invoice for good (also in Stripe); correct it with a reissue"),
    "mark_paid": ("Mark paid", invoice_mark_paid, "records the payment"),
    "mark_uncollectible": ("Mark uncollectible", invoice_mark_uncollectible, "writes the invoice off"),
}


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = (
        "kind",
        "rate_card_key",
        "description",
        "period",
        "quantity_shown",
        "unit_price_shown",
        "amount_shown",
        "tier_breakdown",
    )
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice")

    @admin.display(description="period")
    def period(self, line: InvoiceLine) -> str:
        return f"{line.period_start:%Y-%m-%d %H:%M} – {line.period_end:%Y-%m-%d %H:%M}"

    @admin.display(description="quantity")
    def quantity_shown(self, line: InvoiceLine) -> str:
        return format(line.quantity.normalize(), "f")

    @admin.display(description="unit price")
    def unit_price_shown(self, line: InvoiceLine) -> str:
        return "" if line.unit_price is None else format(line.unit_price.normalize(), "f")

    @admin.display(description="amount")
    def amount_shown(self, line: InvoiceLine) -> str:
        return format_major(line.amount, line.invoice.currency)

    @admin.display(description="tiers")
    def tier_breakdown(self, line: InvoiceLine) -> str:
        if not line.tiers:
            return ""
        return format_html_join(
            "",
            "<div>tier {}: {} × {}{} = {}</div>",
            (
                (
                    t["tier"],
                    t["quantity"],
                    t["unit_amount"],
                    f" + {t['flat_amount']}" if t["flat_amount"] not in ("0", "0.000000000000000") else "",
                    t["amount"],
                )
                for t in line.tiers
            ),
        )


class InvoiceEventInline(admin.TabularInline):
    model = InvoiceEvent
    extra = 0
    can_delete = False
    verbose_name_plural = "log (who did what, when)"
    fields = ("at", "action", "actor_label", "detail")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class CreditNoteInline(admin.TabularInline):
    model = CreditNote
    fk_name = "invoice"
    extra = 0
    can_delete = False
    show_change_link = True
    verbose_name_plural = "credit notes against this invoice"
    fields = ("number", "status", "total_shown", "reason", "issued_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("invoicing.view_invoice")

    @admin.display(description="total")
    def total_shown(self, note: CreditNote) -> str:
        return format_major(note.total, note.currency)


class PeriodFilter(admin.SimpleListFilter):
    title = "period"
    parameter_name = "period"

    def lookups(self, request, model_admin):
        months = Invoice.objects.dates("period_start", "month", order="DESC")[:24]
        return [(f"{m:%Y-%m}", f"{m:%B %Y}") for m in months]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        year, month = (int(part) for part in self.value().split("-"))
        return queryset.filter(period_start__year=year, period_start__month=month)


class IssuedFilter(PeriodFilter):
    title = "issued in"
    parameter_name = "issued"

    def lookups(self, request, model_admin):
        months = Invoice.objects.filter(issued_at__isnull=False).dates("issued_at", "month", order="DESC")[:24]
        return [(f"{m:%Y-%m}", f"{m:%B %Y}") for m in months]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        year, month = (int(part) for part in self.value().split("-"))
        return queryset.filter(issued_at__year=year, issued_at__month=month)


@admin.register(Invoice)
class InvoiceAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "customer",
        "status",
        "period_shown",
        "total_shown",
        "currency",
        "issued_at",
        "due_at",
        "sync_shown",
    )
    list_filter = ("status", "currency", PeriodFilter, IssuedFilter, "sync_status")
    search_fields = ("number", "customer__key", "customer__name", "stripe_invoice_id")
    list_select_related = ("customer",)
    date_hierarchy = "period_start"
    inlines = [InvoiceLineInline, CreditNoteInline, InvoiceEventInline]
    actions = ["issue_invoices", "void_invoices", "mark_paid", "mark_uncollectible", "export_csv"]
    readonly_fields = (
        "number",
        "status",
        "customer",
        "subscription",
        "cycle",
        "currency",
        "period_start",
        "period_end",
        "subtotal_shown",
        "total_shown",
        "issued_at",
        "due_at",
        "paid_at",
        "voided_at",
        "replaces",
        "sync_status",
        "sync_error",
        "stripe_invoice_id",
        "stripe_number",
        "stripe_link",
        "stripe_status",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("number", "status"),
                    ("customer", "subscription", "cycle"),
                    ("period_start", "period_end"),
                    ("currency", "subtotal_shown", "total_shown"),
                    ("issued_at", "due_at", "paid_at", "voided_at"),
                    "replaces",
                )
            },
        ),
        (
            "Stripe",
            {
                "fields": (
                    ("sync_status", "stripe_status"),
                    "sync_error",
                    ("stripe_invoice_id", "stripe_number"),
                    "stripe_link",
                )
            },
        ),
    )
    change_form_template = "admin/invoicing/invoice/change_form.html"
    change_list_template = "admin/invoicing/invoice/change_list.html"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return request.method in ("GET", "HEAD") and super().has_view_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="period", ordering="period_start")
    def period_shown(self, obj: Invoice) -> str:
        return f"{obj.period_start:%Y-%m-%d} – {obj.period_end:%Y-%m-%d}"

    @admin.display(description="total", ordering="total")
    def total_shown(self, obj: Invoice) -> str:
        return format_major(obj.total, obj.currency)

    @admin.display(description="subtotal")
    def subtotal_shown(self, obj: Invoice) -> str:
        return format_major(obj.subtotal, obj.currency)

    @admin.display(description="Stripe")
    def sync_shown(self, obj: Invoice) -> str:
        if obj.sync_status == Invoice.SyncStatus.FAILED:
            short = obj.sync_error if len(obj.sync_error) <= 80 else obj.sync_error[:79] + "…"
            return format_html('<span style="color:#ba2121" title="{}">failed: {}</span>', obj.sync_error, short)
        return obj.get_sync_status_display()

    @admin.display(description="Stripe invoice")
    def stripe_link(self, obj: Invoice) -> str:
        if obj.stripe_hosted_url:
            return format_html(
                '<a href="{}" target="_blank" rel="noopener">{}</a>', obj.stripe_hosted_url, obj.stripe_hosted_url
            )
        return "sandbox mode: invoices stay local" if is_sandbox() else "—"

    def get_urls(self):
        return [
            path(
                "<int:pk>/do/<str:action>/", self.admin_site.admin_view(self.action_view), name="invoicing_invoice_do"
            ),
            path("<int:pk>/print/", self.admin_site.admin_view(self.print_view), name="invoicing_invoice_print"),
            path(
                "preview/customer/<int:customer_id>/",
                self.admin_site.admin_view(self.preview_view),
                name="invoicing_preview_customer",
            ),
            path(
                "preview/subscription/<int:subscription_id>/",
                self.admin_site.admin_view(self.preview_view),
                name="invoicing_preview_subscription",
            ),
            path("close/", self.admin_site.admin_view(self.close_view), name="invoicing_close_cycles"),
            path("<int:pk>/credit-note/", self.admin_site.admin_view(self.credit_note_view),
                 name="invoicing_invoice_credit_note"),
            path("reconciliation/", self.admin_site.admin_view(self.reconciliation_view),
                 name="invoicing_reconciliation"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "sandbox": is_sandbox()}
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        invoice = get_object_or_404(Invoice, pk=object_id)
        allowed = set(LEGAL.get(invoice.status, set()))
        buttons = [
            (key, label)
            for key, (label, _, _) in ACTIONS.items()
            if {"issue": "issued", "void": "void", "mark_paid": "paid", "mark_uncollectible": "uncollectible"}[key]
            in allowed
        ]
        if invoice.status == Invoice.Status.VOID and not invoice.replaced_by.exists():
            buttons.append(("reissue", "Reissue (corrected draft)"))
        if invoice.sync_status == Invoice.SyncStatus.FAILED:
            buttons.append(("retry_sync", "Retry Stripe sync"))
        can_credit = invoice.status in (Invoice.Status.ISSUED, Invoice.Status.PAID, Invoice.Status.UNCOLLECTIBLE)
        buttons = [(key, label) for key, label in buttons if self._may(request, key)]  # each role sees its actions
        extra_context = {
            **(extra_context or {}),
            "invoice_buttons": buttons,
            "can_credit": can_credit and self._may(request, "issue"),
            "sandbox": is_sandbox(),
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def _perform(self, request, invoice: Invoice, action: str) -> Invoice | None:
        try:
            if action == "reissue":
                return invoice_reissue(invoice=invoice, actor=request.user)
            if action == "retry_sync":
                return retry_sync(invoice=invoice, actor=request.user)
            return ACTIONS[action][1](invoice=invoice, actor=request.user)
        except (InvoiceTransitionError, ReissueError, CreditNoteError, ValueError) as exc:
            self.message_user(request, f"{invoice}: {exc}", messages.ERROR)
            return None

    def action_view(self, request, pk: int, action: str):
        """One invoice, one action, with a confirmation page first."""
        invoice = get_object_or_404(Invoice.objects.select_related("customer"), pk=pk)
        known = {**{k: v[0] for k, v in ACTIONS.items()}, "reissue": "Reissue", "retry_sync": "Retry Stripe sync"}
        if action not in known or not self.has_view_permission(request, invoice) or not self._may(request, action):
            self.message_user(request, "You may not do that.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:invoicing_invoice_change", args=[pk]))
        if request.method == "POST":
            result = self._perform(request, invoice, action)
            if result is not None:
                self.message_user(request, f"{known[action]}: {result} — done.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:invoicing_invoice_change", args=[result.pk]))
            return HttpResponseRedirect(reverse("admin:invoicing_invoice_change", args=[pk]))
        explanation = (
            ACTIONS[action][2]
            if action in ACTIONS
            else (
                "creates a new draft for the same cycle from current usage"
                if action == "reissue"
                else "pushes the invoice to Stripe again, continuing where it stopped"
            )
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "invoice": invoice,
            "action": action,
            "label": known[action],
            "explanation": explanation,
            "title": f"{known[action]} {invoice}?",
        }
        return TemplateResponse(request, "admin/invoicing/invoice/confirm.html", context)

    def has_issue_permission(self, request) -> bool:
        return request.user.has_perm("invoicing.issue_invoice")

    def _may(self, request, action: str) -> bool:
        """Issue, void, paid and uncollectible are for Billing admins (the 'issue invoice' permission)."""
        if action in ("issue", "void", "mark_paid", "mark_uncollectible", "reissue", "retry_sync"):
            return request.user.has_perm("invoicing.issue_invoice") or request.user.is_superuser
        return True

    def _bulk(self, request, queryset, action: str):
        label, service, explanation = ACTIONS[action]
        if not self._may(request, action):
            self.message_user(request, "You may not do that.", messages.ERROR)
            return None
        if request.POST.get("confirmed") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "invoices": queryset,
                "label": label,
                "explanation": explanation,
                "action": request.POST.get("action"),
                "title": f"{label} {queryset.count()} invoice(s)?",
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(request, "admin/invoicing/invoice/bulk_confirm.html", context)
        done = 0
        for invoice in queryset:
            try:
                service(invoice=invoice, actor=request.user)
                done += 1
            except InvoiceTransitionError as exc:
                self.message_user(request, str(exc), messages.ERROR)
        self.message_user(request, f"{label}: {done} invoice(s).", messages.SUCCESS)
        return None

    @admin.action(description="Issue selected drafts", permissions=["issue"])
    def issue_invoices(self, request, queryset):
        return self._bulk(request, queryset, "issue")

    @admin.action(description="Void selected invoices", permissions=["issue"])
    def void_invoices(self, request, queryset):
        return self._bulk(request, queryset, "void")

    @admin.action(description="Mark selected invoices paid", permissions=["issue"])
    def mark_paid(self, request, queryset):
        return self._bulk(request, queryset, "mark_paid")

    @admin.action(description="Mark selected invoices uncollectible", permissions=["issue"])
    def mark_uncollectible(self, request, queryset):
        return self._bulk(request, queryset, "mark_uncollectible")

    @admin.action(description="Export selected invoices as CSV (one row per line)")
    def export_csv(self, request, queryset):
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="invoices-{timezone.now():%Y%m%d-%H%M}.csv"'
        writer = csv.writer(response)
        writer.writerow(
            [
                "invoice",
                "status",
                "customer",
                "currency",
                "period_start",
                "period_end",
                "issued_at",
                "line_kind",
                "rate_card",
                "description",
                "quantity",
                "unit_price",
                "amount",
                "invoice_total",
            ]
        )
        for invoice in queryset.select_related("customer").prefetch_related("lines"):
            for line in invoice.lines.all():
                writer.writerow(
                    [
                        str(invoice),
                        invoice.status,
                        invoice.customer.key,
                        invoice.currency,
                        invoice.period_start.isoformat(),
                        invoice.period_end.isoformat(),
                        invoice.issued_at.isoformat() if invoice.issued_at else "",
                        line.kind,
                        line.rate_card_key,
                        line.description,
                        format(line.quantity.normalize(), "f"),
                        "" if line.unit_price is None else format(line.unit_price.normalize(), "f"),
                        format_major(line.amount, invoice.currency),
                        format_major(invoice.total, invoice.currency),
                    ]
                )
        return response

    def print_view(self, request, pk: int):
        invoice = get_object_or_404(Invoice.objects.select_related("customer", "subscription__plan"), pk=pk)
        lines = list(invoice.lines.all())
        context = {
            "invoice": invoice,
            "customer": invoice.customer,
            "lines": [
                {
                    "line": line,
                    "amount": format_major(line.amount, invoice.currency),
                    "quantity": format(line.quantity.normalize(), "f"),
                }
                for line in lines
            ],
            "total": format_major(invoice.total, invoice.currency),
            "seller": "Billing back office",
        }
        return TemplateResponse(request, "invoicing/invoice.html", context)

    def preview_view(self, request, customer_id: int | None = None, subscription_id: int | None = None):
        if not request.user.has_perm("invoicing.preview_invoice"):
            raise PermissionDenied
        if subscription_id is not None:
            customer = get_object_or_404(Subscription, pk=subscription_id).customer
        else:
            customer = get_object_or_404(Customer, pk=customer_id)
        preview = invoice_preview(customer=customer, at=timezone.now())
        body = preview_json(preview)
        period_text = (
            f"{preview.period_start:%Y-%m-%d %H:%M} – {preview.period_end:%Y-%m-%d %H:%M} UTC"
            if preview.period_start
            else ""
        )
        context = {
            "period_text": period_text,
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "customer": customer,
            "preview": body,
            "title": f"Preview invoice — {customer.name}",
            "now": timezone.now(),
        }
        return TemplateResponse(request, "admin/invoicing/invoice/preview.html", context)

    def credit_note_view(self, request, pk: int):
        return credit_note_page(self, request, pk)

    def reconciliation_view(self, request):
        return reconciliation_page(self, request)

    def close_view(self, request):
        """Run a cycle close now, as a tracked background job."""
        if not self._may(request, "issue"):
            self.message_user(request, "Closing cycles issues invoices: Billing admins only.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:invoicing_invoice_changelist"))
        if request.method == "POST":
            from .tasks import close_billing_cycles

            run = job_run_create(kind="close_cycles", trigger=JobRun.Trigger.ADMIN, requested_by=request.user)
            transaction.on_commit(lambda: close_billing_cycles.delay(run.pk))
            self.message_user(request, "Closing due billing cycles; progress below.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:common_jobrun_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Close due billing cycles now?",
        }
        return TemplateResponse(request, "admin/invoicing/invoice/close_confirm.html", context)


@admin.register(StripeWebhookEvent)
class StripeWebhookEventAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    """Settings → Stripe: configuration status and every webhook event received, with what it did."""

    list_display = ("received_at", "type", "event_id", "invoice", "outcome")
    list_filter = ("type",)
    search_fields = ("event_id", "invoice__number")
    list_select_related = ("invoice",)
    readonly_fields = ("event_id", "type", "received_at", "processed_at", "outcome", "invoice", "payload_pretty")
    exclude = ("payload",)
    change_list_template = "admin/invoicing/stripewebhookevent/change_list.html"

    @admin.display(description="payload")
    def payload_pretty(self, obj: StripeWebhookEvent) -> str:
        return pretty_json(obj.payload)

    def changelist_view(self, request, extra_context=None):
        from django.conf import settings

        extra_context = {
            **(extra_context or {}),
            "sandbox": is_sandbox(),
            "webhook_secret_set": bool(settings.STRIPE_WEBHOOK_SECRET),
            "webhook_url": request.build_absolute_uri("/stripe/webhooks"),
            "failed": Invoice.objects.filter(sync_status=Invoice.SyncStatus.FAILED).count(),
        }
        return super().changelist_view(request, extra_context)


class BillingCustomerAdmin(CustomerAdmin):
    """The customer page with what only invoicing knows: the invoice preview, past invoices, Stripe."""

    readonly_fields = (*CustomerAdmin.readonly_fields, "invoice_preview", "past_invoices", "stripe_link")
    fieldsets = (
        *CustomerAdmin.fieldsets,
        ("Invoices", {"fields": ("invoice_preview", "past_invoices", "stripe_link")}),
    )

    def get_readonly_fields(self, request, obj=None):
        fields = super().get_readonly_fields(request, obj)
        if not request.user.has_perm("invoicing.preview_invoice"):
            fields = tuple(f for f in fields if f != "invoice_preview")
        return fields

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if request.user.has_perm("invoicing.preview_invoice"):
            return fieldsets
        return [
            (name, {**options, "fields": tuple(f for f in options["fields"] if f != "invoice_preview")})
            for name, options in fieldsets
        ]

    @admin.display(description="preview of this period's invoice")
    def invoice_preview(self, obj: Customer) -> str:
        if not obj.pk:
            return "—"
        body = preview_json(invoice_preview(customer=obj, at=timezone.now()))
        if not body["lines"]:
            return "Nothing to bill: no active subscription."
        rows = ((line["rate_card"], line["description"], line["amount"]) for line in body["lines"])
        return format_html(
            '<table id="customer-preview"><tr><th>rate card</th><th>line</th><th style="text-align:right">{}</th></tr>'
            '{}<tr><th colspan="2">total</th><th style="text-align:right">{}</th></tr></table>',
            body["currency"],
            format_html_join("", '<tr><td>{}</td><td>{}</td><td style="text-align:right">{}</td></tr>', rows),
            body["total"],
        )

    @admin.display(description="past invoices")
    def past_invoices(self, obj: Customer) -> str:
        if not obj.pk:
            return "—"
        invoices = list(Invoice.objects.filter(customer=obj).order_by("-period_start", "-id")[:24])
        if not invoices:
            return "No invoices yet."
        rows = (
            (
                reverse("admin:invoicing_invoice_change", args=[i.pk]),
                str(i),
                i.status,
                f"{i.period_start:%Y-%m-%d} – {i.period_end:%Y-%m-%d}",
                format_major(i.total, i.currency),
                i.currency,
            )
            for i in invoices
        )
        return format_html(
            "<table><tr><th>invoice</th><th>status</th><th>period</th><th>total</th></tr>{}</table>",
            format_html_join("", '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{} {}</td></tr>', rows),
        )

    @admin.display(description="Stripe")
    def stripe_link(self, obj: Customer) -> str:
        if is_sandbox():
            return "sandbox mode: not pushed to Stripe"
        if not obj.stripe_customer_id:
            return "created in Stripe with the first issued invoice"
        return format_html(
            '<a href="https://dashboard.stripe.com/customers/{}" target="_blank" rel="noopener">{}</a>',
            obj.stripe_customer_id,
            obj.stripe_customer_id,
        )


admin.site.unregister(Customer)
admin.site.register(Customer, BillingCustomerAdmin)


class BillingEventAdmin(CustomerEventAdmin):
    """The event explorer, with the invoice that billed each event (late events: the late-usage invoice)."""

    list_display = ("time", "type", "subject", "customer", "billed_on", "event_id", "data_preview", "problem",
                    "ingested_at")

    @admin.display(description="billed on")
    def billed_on(self, obj: Event) -> str:
        extras = getattr(obj, "extras", {}) or {}
        return extras.get("billedOn") or ""


admin.site.unregister(Event)
admin.site.register(Event, BillingEventAdmin)


# --- credit notes ------------------------------------------------------------------------------------------------


class CreditNoteLineInline(admin.TabularInline):
    model = CreditNoteLine
    extra = 0
    can_delete = False
    fields = ("kind", "rate_card_key", "description", "period", "quantity_shown", "amount_shown")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("credit_note")

    @admin.display(description="period")
    def period(self, line: CreditNoteLine) -> str:
        if line.period_start is None:
            return ""
        return f"{line.period_start:%Y-%m-%d %H:%M} – {line.period_end:%Y-%m-%d %H:%M}"

    @admin.display(description="quantity")
    def quantity_shown(self, line: CreditNoteLine) -> str:
        return format(line.quantity.normalize(), "f")

    @admin.display(description="amount credited")
    def amount_shown(self, line: CreditNoteLine) -> str:
        return format_major(line.amount, line.credit_note.currency)


CREDIT_NOTE_ACTIONS = {
    "void": ("Void", "cancels the credit note for good (also in Stripe); the invoice owes its amount again"),
    "retry_sync": ("Retry Stripe sync", "pushes the credit note to Stripe again, continuing where it stopped"),
}


@admin.register(CreditNote)
class CreditNoteAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    """Credit notes: against the invoice each corrects, numbered, never edited; void with confirmation."""

    list_display = ("number", "customer", "invoice", "total_shown", "currency", "status", "issued_at", "sync_status")
    list_filter = ("status", "currency", "sync_status")
    search_fields = ("number", "invoice__number", "customer__key", "customer__name", "reason")
    list_select_related = ("customer", "invoice")
    date_hierarchy = "issued_at"
    inlines = [CreditNoteLineInline]
    readonly_fields = ("number", "status", "invoice", "customer", "currency", "total_shown", "reason", "issued_at",
                       "voided_at", "sync_status", "sync_error", "stripe_credit_note_id", "stripe_status")
    fieldsets = (
        (None, {"fields": (("number", "status"), ("invoice", "customer"), ("currency", "total_shown"), "reason",
                           ("issued_at", "voided_at"))}),
        ("Stripe", {"fields": (("sync_status", "stripe_status"), "sync_error", "stripe_credit_note_id")}),
    )
    change_form_template = "admin/invoicing/creditnote/change_form.html"

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) or request.user.has_perm("invoicing.view_invoice")

    @admin.display(description="total", ordering="total")
    def total_shown(self, obj: CreditNote) -> str:
        return format_major(obj.total, obj.currency)

    def get_urls(self):
        return [
            path("<int:pk>/do/<str:action>/", self.admin_site.admin_view(self.action_view),
                 name="invoicing_creditnote_do"),
            path("<int:pk>/print/", self.admin_site.admin_view(self.print_view), name="invoicing_creditnote_print"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        note = get_object_or_404(CreditNote, pk=object_id)
        buttons = []
        if request.user.has_perm("invoicing.issue_invoice"):
            if note.status == CreditNote.Status.ISSUED:
                buttons.append(("void", "Void"))
            if note.sync_status == Invoice.SyncStatus.FAILED:
                buttons.append(("retry_sync", "Retry Stripe sync"))
        extra_context = {**(extra_context or {}), "credit_note_buttons": buttons, "show_save": False,
                         "show_save_and_continue": False, "show_save_and_add_another": False}
        return super().change_view(request, object_id, form_url, extra_context)

    def action_view(self, request, pk: int, action: str):
        note = get_object_or_404(CreditNote.objects.select_related("customer", "invoice"), pk=pk)
        back = HttpResponseRedirect(reverse("admin:invoicing_creditnote_change", args=[pk]))
        if action not in CREDIT_NOTE_ACTIONS or not request.user.has_perm("invoicing.issue_invoice"):
            self.message_user(request, "You may not do that.", messages.ERROR)
            return back
        label, explanation = CREDIT_NOTE_ACTIONS[action]
        if request.method == "POST":
            try:
                if action == "void":
                    credit_note_void(credit_note=note, actor=request.user, reason=request.POST.get("reason", ""))
                else:
                    retry_credit_note_sync(credit_note=note, actor=request.user)
            except (CreditNoteError, ValueError) as exc:
                self.message_user(request, f"{note}: {exc}", messages.ERROR)
                return back
            self.message_user(request, f"{label}: {note} — done.", messages.SUCCESS)
            return back
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "credit_note": note,
                   "action": action, "label": label, "explanation": explanation, "title": f"{label} {note}?"}
        return TemplateResponse(request, "admin/invoicing/creditnote/confirm.html", context)

    def print_view(self, request, pk: int):
        note = get_object_or_404(CreditNote.objects.select_related("customer", "invoice"), pk=pk)
        if not self.has_view_permission(request, note):
            raise PermissionDenied
        context = {
            "credit_note": note,
            "customer": note.customer,
            "lines": [{"line": line, "amount": format_major(line.amount, note.currency),
                       "quantity": format(line.quantity.normalize(), "f")} for line in note.lines.all()],
            "total": format_major(note.total, note.currency),
        }
        return TemplateResponse(request, "invoicing/credit_note.html", context)


class CreditNoteForm(forms.Form):
    amount = DecimalTextField(max_digits=20, decimal_places=3, min_value=Decimal("0.001"),
                              help_text="In the invoice's currency, e.g. 12.50")
    reason = forms.CharField(max_length=2000, help_text="Why the customer is credited (shown on the credit note).")
    description = forms.CharField(max_length=500, required=False, help_text="The line's text (default: the reason).")

    def __init__(self, *args, invoice: Invoice, **kwargs):
        super().__init__(*args, **kwargs)
        self.invoice = invoice

    def clean_amount(self):
        amount = self.cleaned_data["amount"]
        try:
            minor = to_minor(amount, self.invoice.currency)
        except (ValueError, ArithmeticError) as exc:
            raise forms.ValidationError(str(exc)) from exc
        if to_major(minor, self.invoice.currency) != amount:
            raise forms.ValidationError(f"{self.invoice.currency} has {minor_unit_exponent(self.invoice.currency)} "
                                        "decimal places")
        return minor


def credit_note_page(model_admin: InvoiceAdmin, request, pk: int):
    """Issue a manual credit note (a correction) against an issued invoice."""
    invoice = get_object_or_404(Invoice.objects.select_related("customer"), pk=pk)
    back = HttpResponseRedirect(reverse("admin:invoicing_invoice_change", args=[pk]))
    if not model_admin._may(request, "issue"):
        model_admin.message_user(request, "You may not do that.", messages.ERROR)
        return back
    form = CreditNoteForm(request.POST or None, invoice=invoice)
    if request.method == "POST" and form.is_valid():
        try:
            note = credit_note_create(invoice=invoice, amount=form.cleaned_data["amount"],
                                      reason=form.cleaned_data["reason"],
                                      description=form.cleaned_data["description"], actor=request.user)
        except CreditNoteError as exc:
            form.add_error(None, str(exc))
        else:
            model_admin.message_user(request, f"Credit note {note} issued against {invoice}.", messages.SUCCESS)
            return back
    context = {**model_admin.admin_site.each_context(request), "opts": Invoice._meta, "invoice": invoice,
               "form": form, "title": f"Credit note against {invoice}",
               "left": format_major(creditable_amounts([invoice.pk]).get(invoice.pk, 0), invoice.currency)}
    return TemplateResponse(request, "admin/invoicing/invoice/credit_note.html", context)


def reconciliation_page(model_admin: InvoiceAdmin, request):
    """Billing → Reconciliation: rated now vs billed for every closed period, with the difference and why."""
    if not request.user.has_perm("invoicing.view_invoice"):
        raise PermissionDenied
    customer = (request.GET.get("customer") or "").strip().replace("\x00", "")
    show_all = request.GET.get("all") == "1"
    rows, periods = [], 0
    for row in reconcile(customer_key=customer or None):
        periods += 1
        if show_all or row.difference:
            rows.append(row)
        if len(rows) >= 1000:
            break
    context = {
        **model_admin.admin_site.each_context(request), "opts": Invoice._meta, "title": "Reconciliation",
        "rows": [{"row": r, "rated": format_major(r.rated, r.currency), "billed": format_major(r.billed, r.currency),
                  "difference": format_major(r.difference, r.currency)} for r in rows],
        "periods": periods, "differences": sum(1 for r in rows if r.difference),
        "unexplained": sum(1 for r in rows if not r.explained), "customer": customer, "show_all": show_all,
    }
    return TemplateResponse(request, "admin/invoicing/reconciliation.html", context)


@admin.register(CycleClose)
class CycleCloseAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    """Operations → Cycle closes: each subscription's cycles, what closing them did, and any held with an error."""

    list_display = ("subscription", "cycle", "boundary", "state", "invoice", "closed_at", "error_shown")
    list_filter = ("state", ("error", admin.EmptyFieldListFilter))
    search_fields = ("subscription__customer__key", "invoice__number", "error")
    list_select_related = ("subscription__customer", "subscription__plan", "invoice")
    readonly_fields = ("subscription", "cycle", "boundary", "state", "invoice", "review_until", "closed_at",
                       "error", "failed_at", "updated_at")

    @admin.display(description="error")
    def error_shown(self, obj: CycleClose) -> str:
        return obj.error if len(obj.error) <= 80 else obj.error[:79] + "…"
