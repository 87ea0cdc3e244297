"""Features: a meter, optionally filtered on its group-by values, that rate cards price."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count

from common.admin.refusals import ServiceErrorsMixin, refusals

from ..forms import FeatureForm
from ..models import Feature
from ..services.features import feature_create, feature_update


@admin.register(Feature)
class FeatureAdmin(ServiceErrorsMixin, admin.ModelAdmin):
    form = FeatureForm
    list_display = ("key", "name", "meter", "filters", "used_by")
    list_select_related = ("meter",)
    search_fields = ("key", "name")
    list_filter = ("meter",)

    def get_readonly_fields(self, request, obj=None):
        return ("key",) if obj else ()

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(rate_card_count=Count("rate_cards"))

    @admin.display(description="filters")
    def filters(self, obj: Feature) -> str:
        return ", ".join(f"{k} = {v}" for k, v in sorted((obj.meter_group_by_filters or {}).items()))

    @admin.display(description="rate cards")
    def used_by(self, obj: Any) -> int:  # annotated by get_queryset
        return obj.rate_card_count

    def save_model(self, request, obj, form, change):
        """Through the feature services; a refusal (a race with the form's checks) is a form error."""
        data = form.cleaned_data
        filters = data.get("meter_group_by_filters") or {}
        with refusals():
            if change:
                saved = feature_update(feature=Feature.objects.get(pk=obj.pk), name=data["name"], meter=data["meter"],
                                       filters=filters)
            else:
                saved = feature_create(key=data["key"], name=data["name"], meter=data["meter"], filters=filters)
        obj.pk = saved.pk
        obj.refresh_from_db()
