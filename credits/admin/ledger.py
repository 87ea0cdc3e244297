"""The ledger: every entry, read-only, filtered by kind, customer, grant and time."""

from __future__ import annotations

from django.contrib import admin

from catalog.money import format_major
from common.admin.utils import ViewOnlyAdminMixin

from ..models import LedgerEntry


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("at", "customer", "grant", "kind", "amount_shown", "invoice_id", "actor_label", "reason")
    list_filter = ("kind", "grant__source", "grant__currency")
    search_fields = ("customer__key", "customer__name", "reason", "actor_label")
    list_select_related = ("customer", "grant")
    date_hierarchy = "at"
    raw_id_fields = ("customer", "grant", "actor", "returns")

    @admin.display(description="amount", ordering="amount")
    def amount_shown(self, obj: LedgerEntry) -> str:
        return format_major(obj.amount, obj.grant.currency)

    def lookup_allowed(self, lookup, value, request=None):
        return lookup in ("grant__id__exact", "customer__id__exact") or super().lookup_allowed(lookup, value, request)
