"""Meters: Kong presets in one click, validation as form errors, each meter's rollup status, "Rebuild usage
from raw events" (confirmed, then a tracked job) and the usage explorer."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from common.admin.confirm import ConfirmAction, ConfirmActionMixin, confirm_bulk_action
from common.admin.refusals import ServiceErrorsMixin, refusals
from common.admin.utils import ConditionFilter
from common.jobs import job_run_queue

from .. import forms
from ..meter_rules import KONG_PRESETS, PRESET_COMPANIONS
from ..models import Meter
from ..services.meters import meter_create, meter_create_from_preset, meter_delete, meter_update, preset_missing
from ..services.rollups import ROLLUP_ERROR_MAX
from ..tasks import rebuild_usage
from .usage import usage_page


def _jobs_page(outcome) -> str:
    runs = [run for _, run in outcome.done]
    if len(runs) == 1:
        return reverse("admin:common_jobrun_change", args=[runs[0].pk])
    return reverse("admin:common_jobrun_changelist") + "?kind=rebuild_usage"


REBUILD = ConfirmAction(
    name="rebuild", label="Rebuild", scope="bulk", permission="metering.change_meter",
    bulk_title="Rebuild usage from raw events?",
    explanation="The rollups of these meters are thrown away and recomputed from every stored event. Queries stay "
                "correct meanwhile (they read the raw events not yet rolled up), only slower until the rebuild "
                "finishes.",
    service=lambda request, meter, data: job_run_queue(
        kind="rebuild_usage", task_name=rebuild_usage.name, params={"meter": meter.slug},
        requested_by=request.user, meter_id=meter.pk),
    done=lambda outcome: f"Rebuilding usage of {len(outcome.done)} meter(s); progress is shown below.",
    redirect=_jobs_page,
)


class RollupErrorFilter(ConditionFilter):
    title = "rollups"
    parameter_name = "rollup"
    conditions = {"failing": ("Failing", ~Q(rollup_error="")), "ok": ("OK", Q(rollup_error=""))}


@admin.register(Meter)
class MeterAdmin(ConfirmActionMixin, ServiceErrorsMixin, admin.ModelAdmin):
    form = forms.MeterForm
    list_display = ("slug", "name", "event_type", "aggregation", "value_property", "group_by_names",
                    "rollup_status", "usage_link")
    list_filter = ("aggregation", "event_type", RollupErrorFilter)
    search_fields = ("slug", "name", "event_type")
    confirm_actions = (REBUILD,)
    rebuild_usage = confirm_bulk_action("rebuild", "Rebuild usage from raw events")
    actions = ["rebuild_usage"]
    change_list_template = "admin/metering/meter/change_list.html"
    fieldsets = (
        (None, {"fields": ("slug", "name", "description")}),
        ("What to count", {"fields": ("event_type", "aggregation", "value_property", "value_absent", "group_by")}),
    )

    def get_readonly_fields(self, request, obj=None):
        return ("slug", "rollup_status_full") if obj else ()

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None:
            return fieldsets
        return (*fieldsets, ("Rollups", {"fields": ("rollup_status_full",),
                                         "description": "The aggregator folds new events into hourly and daily "
                                                        "rollups every few seconds, each meter on its own."}))

    def confirm_row(self, obj: Meter) -> str:
        return obj.name

    @admin.display(description="rollups")
    def rollup_status(self, obj: Meter, *, limit: int = 160) -> str:
        """OK, or the aggregator's last error on this meter (cleared by its next successful run)."""
        if not obj.rollup_error:
            return "OK"
        error = obj.rollup_error if len(obj.rollup_error) <= limit else obj.rollup_error[:limit] + "…"
        return format_html('<strong style="color:#ba2121">failing</strong> since {}: {}',
                           obj.rollup_failed_at.strftime("%Y-%m-%d %H:%M UTC") if obj.rollup_failed_at else "?",
                           error)

    @admin.display(description="rollups")
    def rollup_status_full(self, obj: Meter) -> str:
        return self.rollup_status(obj, limit=ROLLUP_ERROR_MAX)

    @admin.display(description="group by")
    def group_by_names(self, obj: Meter) -> str:
        return ", ".join(obj.group_by or {})

    @admin.display(description="usage")
    def usage_link(self, obj: Meter) -> str:
        return format_html('<a href="{}?meter={}">explore</a>', reverse("admin:metering_meter_usage"), obj.pk)

    def get_urls(self):
        return [
            path("presets/<str:preset>/", self.admin_site.admin_view(self.preset_view), name="metering_meter_preset"),
            path("usage/", self.admin_site.admin_view(self.usage_view), name="metering_meter_usage"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "presets": [
            {"key": key, "name": preset["name"], "missing": [m["slug"] for m in preset_missing(key)],
             "exists": Meter.objects.filter(slug=preset["slug"]).exists(),
             "summary": f"{preset['aggregation']} of {preset['event_type']}"
                        + (f" {preset['value_property']}" if preset["value_property"] else ""),
             "companions": [f"{c['slug']} ({c['value_property']}, absent counts 0)"
                            for c in PRESET_COMPANIONS.get(key, ())]}
            for key, preset in KONG_PRESETS.items()
        ]}
        return super().changelist_view(request, extra_context)

    def save_model(self, request, obj, form, change):
        """Through the meter services; a refusal after the form's checks (a race) is a form error."""
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields if name in form.cleaned_data}
        fields["group_by"] = fields.get("group_by") or {}
        with refusals():
            if change:
                fields.pop("slug", None)
                before = Meter.objects.get(pk=obj.pk)
                saved = meter_update(meter=before, **fields)
            else:
                saved = meter_create(**fields)
        if change and saved.definition_version != before.definition_version:
            self.message_user(request, f"The definition of {saved.slug} changed: its usage is being "
                                       "rebuilt from the raw events.", messages.WARNING)
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        with refusals():  # the delete page lists what protects the meter first, so this is a race
            meter_delete(meter=obj)

    def preset_view(self, request, preset: str):
        if request.method != "POST" or not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:metering_meter_changelist"))
        try:
            created = meter_create_from_preset(preset=preset)
        except ValueError as exc:
            self.message_user(request, f"Preset not added: {exc}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:metering_meter_changelist"))
        main, companions = created[0], [m.slug for m in created[1:]]
        if main.slug == KONG_PRESETS[preset]["slug"]:
            what = f"Meter {main.slug} added from the Kong preset" + (
                f", with its companion meters {', '.join(companions)}" if companions else "")
        else:  # the preset's own meter was there already: only companions were missing
            what = f"Companion meters {', '.join(m.slug for m in created)} of {KONG_PRESETS[preset]['slug']} added"
        self.message_user(request, f"{what}; usage of existing {main.event_type} events is being rolled up.",
                          messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:metering_meter_change", args=[main.pk]))

    def usage_view(self, request):
        return usage_page(self, request)
