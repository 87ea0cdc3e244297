"""Invoices: the list (filters, CSV export, bulk actions), the read-only detail page with lines, credit notes and
the log, each action confirmed (:mod:`.actions`), printable HTML, previews and the reconciliation page."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path
from django.utils.html import format_html

from common.admin.confirm import ConfirmActionMixin, confirm_bulk_action
from common.admin.utils import ViewOnlyAdminMixin
from common.formatting import format_amount
from common.time import period_label

from ..models import Invoice
from ..stripe_gateway import is_sandbox
from .actions import ISSUE, MARK_PAID, MARK_UNCOLLECTIBLE, REISSUE, RETRY_SYNC, VOID
from .credit_notes import CREDIT
from .cycles import CLOSE
from .documents import invoice_page, invoices_csv
from .inlines import CreditNoteInline, InvoiceEventInline, InvoiceLineInline
from .margins import margins_page
from .previews import preview_page
from .reconciliation import reconciliation_page


class PeriodFilter(admin.SimpleListFilter):
    title = "period"
    parameter_name = "period"
    field = "period_start"

    def lookups(self, request, model_admin):
        months = Invoice.objects.filter(**{f"{self.field}__isnull": False}).dates(self.field, "month", order="DESC")
        return [(f"{m:%Y-%m}", f"{m:%B %Y}") for m in months[:24]]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        year, month = (int(part) for part in value.split("-"))
        return queryset.filter(**{f"{self.field}__year": year, f"{self.field}__month": month})


class IssuedFilter(PeriodFilter):
    title = "issued in"
    parameter_name = "issued"
    field = "issued_at"


@admin.register(Invoice)
class InvoiceAdmin(ConfirmActionMixin, ViewOnlyAdminMixin, admin.ModelAdmin):
    """Invoices are never edited: the page is read-only for everyone who may view it; what changes an invoice is
    one of its confirmed actions."""

    list_display = ("__str__", "customer", "status", "period_shown", "total_shown", "currency", "issued_at", "due_at",
                    "sync_shown")
    list_filter = ("status", "currency", PeriodFilter, IssuedFilter, "sync_status")
    search_fields = ("number", "customer__key", "customer__name", "stripe_invoice_id")
    list_select_related = ("customer",)
    date_hierarchy = "period_start"
    inlines = [InvoiceLineInline, CreditNoteInline, InvoiceEventInline]
    confirm_actions = (ISSUE, VOID, MARK_PAID, MARK_UNCOLLECTIBLE, REISSUE, RETRY_SYNC, CREDIT, CLOSE)
    confirm_route = ("<int:pk>/do/<str:action>/", "invoicing_invoice_do")
    issue_invoices = confirm_bulk_action("issue", "Issue selected drafts")
    void_invoices = confirm_bulk_action("void", "Void selected invoices")
    mark_paid = confirm_bulk_action("mark_paid", "Mark selected invoices paid")
    mark_uncollectible = confirm_bulk_action("mark_uncollectible", "Mark selected invoices uncollectible")
    actions = ["issue_invoices", "void_invoices", "mark_paid", "mark_uncollectible", "export_csv"]
    readonly_fields = ("number", "status", "customer", "subscription", "cycle_shown", "currency", "period_start",
                       "period_end", "subtotal_shown", "total_shown", "issued_at", "due_at", "paid_at", "voided_at",
                       "replaces", "sync_status", "sync_error", "stripe_invoice_id", "stripe_number", "stripe_link",
                       "stripe_status")
    fieldsets = (
        (None, {"fields": (("number", "status"), ("customer", "subscription"), "cycle_shown",
                           ("period_start", "period_end"),
                           ("currency", "subtotal_shown", "total_shown"), ("issued_at", "due_at", "paid_at",
                                                                           "voided_at"), "replaces")}),
        ("Stripe", {"fields": (("sync_status", "stripe_status"), "sync_error", ("stripe_invoice_id", "stripe_number"),
                               "stripe_link")}),
    )
    change_form_template = "admin/invoicing/invoice/change_form.html"
    change_list_template = "admin/invoicing/invoice/change_list.html"

    def confirm_row(self, obj: Invoice) -> str:
        return f"{obj.customer}, {obj.period_start:%Y-%m-%d} to {obj.period_end:%Y-%m-%d}, {obj.status}"

    @admin.display(description="period", ordering="period_start")
    def period_shown(self, obj: Invoice) -> str:
        return period_label(obj.period_start, obj.period_end)

    @admin.display(description="billing period")
    def cycle_shown(self, obj: Invoice) -> str:
        """The cycle as the period it bills (the boundary number stays in the data, not on the page)."""
        label = period_label(obj.period_start, obj.period_end)
        return f"{label} (opening)" if obj.cycle == 0 else label

    @admin.display(description="total", ordering="total")
    def total_shown(self, obj: Invoice) -> str:
        return format_amount(obj.total, obj.currency)

    @admin.display(description="subtotal")
    def subtotal_shown(self, obj: Invoice) -> str:
        return format_amount(obj.subtotal, obj.currency)

    @admin.display(description="Stripe")
    def sync_shown(self, obj: Invoice) -> str:
        if obj.sync_status == Invoice.SyncStatus.FAILED:
            short = obj.sync_error if len(obj.sync_error) <= 80 else obj.sync_error[:79] + "…"
            return format_html('<span style="color:#ba2121" title="{}">failed: {}</span>', obj.sync_error, short)
        return obj.get_sync_status_display()

    @admin.display(description="Stripe invoice")
    def stripe_link(self, obj: Invoice) -> str:
        if obj.stripe_hosted_url:
            return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', obj.stripe_hosted_url,
                               obj.stripe_hosted_url)
        return "sandbox mode: invoices stay local" if is_sandbox() else "—"

    @admin.action(description="Export selected invoices as CSV (one row per line)")
    def export_csv(self, request, queryset):
        return invoices_csv(queryset)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/print/", view(self.print_view), name="invoicing_invoice_print"),
            path("<int:pk>/pdf/", view(self.pdf_view), name="invoicing_invoice_pdf"),
            path("preview/customer/<int:customer_id>/", view(self.preview_view), name="invoicing_preview_customer"),
            path("preview/subscription/<int:subscription_id>/", view(self.preview_view),
                 name="invoicing_preview_subscription"),
            path("reconciliation/", view(self.reconciliation_view), name="invoicing_reconciliation"),
            path("margins/", view(self.margins_view), name="invoicing_margins"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}), "sandbox": is_sandbox()})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "sandbox": is_sandbox()})

    def print_view(self, request, pk: int):
        return invoice_page(self, request, pk)

    def pdf_view(self, request, pk: int):
        return invoice_page(self, request, pk, pdf=True)

    def preview_view(self, request, customer_id: int | None = None, subscription_id: int | None = None):
        return preview_page(self, request, customer_id, subscription_id)

    def reconciliation_view(self, request):
        return reconciliation_page(self, request)

    def margins_view(self, request):
        return margins_page(self, request)
