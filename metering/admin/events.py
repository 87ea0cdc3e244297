"""The event explorer: every ingested event, read-only (events are evidence for invoices), with each shown
event's validation problem and what higher apps add (the customer, the invoice that billed it)."""

from __future__ import annotations

import datetime as dt

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.utils import timezone

from common.admin.extensions import ExtensibleAdminMixin
from common.admin.utils import CappedCountPaginator, ViewOnlyAdminMixin, pretty_json, short_json

from ..enrichment import enrich_events
from ..models import Event
from ..selectors.events import event_types_seen


class EventTypeFilter(admin.SimpleListFilter):
    title = "type"
    parameter_name = "type"

    def lookups(self, request, model_admin):
        return [(t, t) for t in event_types_seen(now=timezone.now())]

    def queryset(self, request, queryset):
        return queryset.filter(type=self.value()) if self.value() else queryset


class RecentTimeFilter(admin.SimpleListFilter):
    """Time windows instead of a date hierarchy, which would scan every event for its dates."""

    title = "time"
    parameter_name = "within"
    windows = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(days=1), "7d": dt.timedelta(days=7),
               "30d": dt.timedelta(days=30)}

    def lookups(self, request, model_admin):
        return [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")]

    def queryset(self, request, queryset):
        window = self.windows.get(self.value() or "")
        return queryset.filter(time__gte=timezone.now() - window) if window else queryset


class EnrichedChangeList(ChangeList):
    """Looks up each shown event's validation problem (and what higher layers know of it: its customer, the
    invoice that billed it) once per page, not once per row: ``event.extras``."""

    def get_results(self, request):
        super().get_results(request)
        extras = enrich_events(self.result_list)
        for event in self.result_list:
            event.extras = extras.get(event.pk, {})


def event_extra(event: Event, key: str) -> str:
    """What an enricher (``metering.enrichment``) said of a listed event, e.g. ``customerId``; for the columns
    higher apps add to the explorer."""
    extras = getattr(event, "extras", None)
    if extras is None:
        extras = enrich_events([event]).get(event.pk, {})
    return extras.get(key) or ""


@admin.register(Event)
class EventAdmin(ExtensibleAdminMixin, ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("time", "type", "subject", "event_id", "data_preview", "problem", "ingested_at")
    list_filter = (EventTypeFilter, RecentTimeFilter)
    search_fields = ("=event_id", "^subject")
    search_help_text = "Exact CloudEvent id, or the start of a subject (e.g. kong-air or consumer:8f3c…)."
    ordering = ("-time", "-id")
    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    fields = ("event_id", "source", "type", "subject", "time", "ingested_at", "ingest_tx", "problem", "data_pretty")
    readonly_fields = fields

    def get_changelist(self, request, **kwargs):
        return EnrichedChangeList

    @admin.display(description="data")
    def data_preview(self, obj: Event) -> str:
        return short_json(obj.data, 60)

    @admin.display(description="data")
    def data_pretty(self, obj: Event) -> str:
        return pretty_json(obj.data)

    @admin.display(description="problem")
    def problem(self, obj: Event) -> str:
        return event_extra(obj, "validationError")
