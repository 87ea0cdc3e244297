"""The invoice page's read-only tables: its lines (with tiers), its credit notes and its log."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html_join

from common.formatting import format_amount, format_period, format_quantity, format_unit_price
from common.time import actor_label

from ..models import CreditNote, InvoiceEvent, InvoiceLine


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class LineInline(ReadOnlyInline):
    """Lines of an invoice or a credit note: their period and quantity as people read them."""

    @admin.display(description="period")
    def period(self, line) -> str:
        if line.period_start is None:
            return ""
        return format_period(line.period_start, line.period_end)

    @admin.display(description="quantity")
    def quantity_shown(self, line) -> str:
        return format_quantity(line.quantity)


class InvoiceLineInline(LineInline):
    model = InvoiceLine
    fields = ("kind", "rate_card_key", "description", "period", "quantity_shown", "unit_price_shown", "amount_shown",
              "tier_breakdown")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("invoice")

    @admin.display(description="unit price")
    def unit_price_shown(self, line: InvoiceLine) -> str:
        return "" if line.unit_price is None else format_unit_price(line.unit_price, line.invoice.currency)

    @admin.display(description="amount")
    def amount_shown(self, line: InvoiceLine) -> str:
        return format_amount(line.amount, line.invoice.currency)

    @admin.display(description="tiers")
    def tier_breakdown(self, line: InvoiceLine) -> str:
        if not line.tiers:
            return ""
        return format_html_join(
            "", "<div>tier {}: {} × {}{} = {}</div>",
            ((t["tier"], t["quantity"], t["unit_amount"],
              f" + {t['flat_amount']}" if t["flat_amount"] not in ("0", "0.000000000000000") else "", t["amount"])
             for t in line.tiers),
        )


class InvoiceEventInline(ReadOnlyInline):
    model = InvoiceEvent
    verbose_name_plural = "log (who did what, when)"
    fields = ("at", "action", "by", "detail")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor")

    @admin.display(description="by")
    def by(self, event: InvoiceEvent) -> str:
        """The person's name for an admin action, "scheduled close" for beat."""
        actor = event.actor
        if actor is None:
            return actor_label(event.actor_label)
        return actor_label(event.actor_label, full_name=actor.get_full_name(), username=actor.get_username())


class CreditNoteInline(ReadOnlyInline):
    model = CreditNote
    fk_name = "invoice"
    show_change_link = True
    verbose_name_plural = "credit notes against this invoice"
    fields = ("number", "status", "total_shown", "reason", "issued_at")
    readonly_fields = fields

    def has_view_permission(self, request, obj=None):
        return request.user.has_perm("invoicing.view_invoice")

    @admin.display(description="total")
    def total_shown(self, note: CreditNote) -> str:
        return format_amount(note.total, note.currency)
