"""Subjects and event types the gateways have sent, with counts kept by the usage aggregator (view only)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.db.models import Q

from common.admin.utils import CappedCountPaginator, ConditionFilter, ViewOnlyAdminMixin

from ..models import EventTypeActivity, Meter, SubjectActivity


@admin.register(SubjectActivity)
class SubjectActivityAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    """Every subject the gateway has sent, with counts (kept by the usage aggregator)."""

    list_display = ("subject", "event_count", "first_seen", "last_seen")
    search_fields = ("^subject",)
    ordering = ("-last_seen",)
    paginator = CappedCountPaginator
    show_full_result_count = False


class MetersOfTypesChangeList(ChangeList):
    """One query for the meters of every listed event type, not one per row."""

    def get_results(self, request):
        super().get_results(request)
        slugs: dict[str, list[str]] = {}
        types = [item.type for item in self.result_list]
        for event_type, slug in Meter.objects.filter(event_type__in=types).order_by("slug").values_list(
                "event_type", "slug"):
            slugs.setdefault(event_type, []).append(slug)
        for item in self.result_list:
            item.meter_slugs = slugs.get(item.type, [])


class MeteredFilter(ConditionFilter):
    """Event types with or without a meter (the dashboard's "Events no meter counts" links to ``metered=no``)."""

    title = "counted by a meter"
    parameter_name = "metered"
    conditions = {
        "yes": ("Yes", Q(type__in=Meter.objects.values("event_type"))),
        "no": ("No: not billed", ~Q(type__in=Meter.objects.values("event_type"))),
    }


@admin.register(EventTypeActivity)
class EventTypeActivityAdmin(SubjectActivityAdmin):
    list_display = ("type", "event_count", "last_seen", "meters")
    search_fields = ("type",)
    list_filter = (MeteredFilter,)

    def get_changelist(self, request, **kwargs):
        return MetersOfTypesChangeList

    @admin.display(description="meters")
    def meters(self, obj: EventTypeActivity) -> str:
        return ", ".join(getattr(obj, "meter_slugs", [])) or "— no meter: these events are not billed"
