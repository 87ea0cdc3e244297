"""Admin screens of the metering app: the event explorer and API tokens."""

from __future__ import annotations

import csv
import datetime as dt

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from common.admin_utils import CappedCountPaginator, ViewOnlyAdminMixin, pretty_json, short_json
from common.charts import bar_chart_svg
from common.jobs import job_run_create
from common.models import JobRun
from common.time import format_rfc3339

from . import forms
from .enrichment import enrich_events
from .meter_rules import KONG_PRESETS
from .models import ApiToken, Event, EventTypeActivity, Meter, SubjectActivity
from .selectors.events import event_types_seen
from .selectors.usage import UsageQueryError, meter_query
from .services.meters import (
    MeterInUse,
    MeterValidationError,
    meter_create,
    meter_create_from_preset,
    meter_delete,
    meter_update,
)
from .services.rollups import ROLLUP_ERROR_MAX
from .services.tokens import api_token_create, api_token_revoke
from .windows import floor_to_window, next_window_start, time_zone


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
    """Looks up each shown event's validation problem and customer once per page, not once per row."""

    def get_results(self, request):
        super().get_results(request)
        extras = enrich_events(self.result_list)
        for event in self.result_list:
            event.extras = extras.get(event.pk, {})


@admin.register(Event)
class EventAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):  # append-only: events are evidence for invoices
    list_display = ("time", "type", "subject", "event_id", "source", "data_preview", "problem", "ingested_at")
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
        extras = getattr(obj, "extras", None)
        if extras is None:
            extras = enrich_events([obj]).get(obj.pk, {})
        return extras.get("validationError") or ""


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "scope_list", "created_at", "created_by", "last_used_at", "status")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    list_select_related = ("created_by",)
    actions = ["revoke_tokens"]
    readonly_fields = ("name", "prefix", "scopes", "created_at", "created_by", "last_used_at", "revoked_at",
                       "revoked_by")

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = forms.ApiTokenCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_urls(self):
        return [path("connect/", self.admin_site.admin_view(self.connect_view), name="metering_apitoken_connect"),
                *super().get_urls()]

    def connect_view(self, request):
        """"Connect a gateway": an ingest token, the meters to enable, and Kong's plugin configuration to copy."""
        if not self.has_add_permission(request):
            self.message_user(request, "Creating gateway tokens is for Billing admins.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:index"))
        form = forms.ConnectGatewayForm(request.POST or None)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form,
                   "title": "Connect a gateway", "presets": KONG_PRESETS}
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            created_meters = []
            for preset, wanted in (("llm_tokens", data["meter_ai_token_usage"]),
                                   ("api_requests", data["meter_api_requests"])):
                if wanted and not Meter.objects.filter(slug=KONG_PRESETS[preset]["slug"]).exists():
                    created_meters.append(meter_create_from_preset(preset=preset).slug)
            token, plain = api_token_create(name=data["name"], scopes=["ingest"], created_by=request.user)
            endpoint = data["public_url"].rstrip("/") + "/api/v3/openmeter/events"
            context.update({"token": token, "plain_token": plain, "endpoint": endpoint,
                            "created_meters": created_meters, "config": data})
        elif request.method != "POST":
            form.initial.setdefault("public_url", request.build_absolute_uri("/").rstrip("/"))
        return TemplateResponse(request, "admin/metering/apitoken/connect.html", context)

    def get_fields(self, request, obj=None):
        return ("name", "scopes") if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        return request.method in ("GET", "HEAD") and super().has_view_permission(request, obj)

    def save_model(self, request, obj, form, change):
        token, plain = api_token_create(
            name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"], created_by=request.user
        )
        obj.pk = token.pk
        obj.prefix = token.prefix
        obj._plain_token = plain

    def save_related(self, request, form, formsets, change):
        pass

    def log_addition(self, request, obj, message):
        return super().log_addition(request, ApiToken.objects.get(pk=obj.pk), message)

    def response_add(self, request, obj, post_url_continue=None):
        # Shown once, on this page only: never stored in a message cookie or the session.
        context = {**self.admin_site.each_context(request), "token": ApiToken.objects.get(pk=obj.pk),
                   "plain_token": obj._plain_token, "opts": self.model._meta, "title": "API token created"}
        return TemplateResponse(request, "admin/metering/apitoken/created.html", context)

    @admin.display(description="scopes")
    def scope_list(self, obj: ApiToken) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="status")
    def status(self, obj: ApiToken) -> str:
        return "revoked" if obj.revoked_at else "active"

    @admin.action(description="Revoke selected tokens", permissions=["delete"])
    def revoke_tokens(self, request, queryset):
        if request.POST.get("confirmed") != "yes":
            context = {**self.admin_site.each_context(request), "tokens": queryset, "opts": self.model._meta,
                       "title": "Revoke these API tokens?", "action": "revoke_tokens",
                       "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME}
            return TemplateResponse(request, "admin/metering/apitoken/revoke_confirmation.html", context)
        count = 0
        for token in queryset:
            api_token_revoke(token=token, revoked_by=request.user)
            count += 1
        self.message_user(request, f"Revoked {count} token(s). Requests using them now get 401.", messages.SUCCESS)
        return None


class _Refused(Exception):
    """A service refused an admin write after the form validated (a race): shown as an error message, the
    request's transaction rolled back, no success message."""


class RollupErrorFilter(admin.SimpleListFilter):
    title = "rollups"
    parameter_name = "rollup"

    def lookups(self, request, model_admin):
        return [("failing", "Failing"), ("ok", "OK")]

    def queryset(self, request, queryset):
        if self.value() == "failing":
            return queryset.exclude(rollup_error="")
        if self.value() == "ok":
            return queryset.filter(rollup_error="")
        return queryset


@admin.register(Meter)
class MeterAdmin(admin.ModelAdmin):
    form = forms.MeterForm
    list_display = ("slug", "name", "event_type", "aggregation", "value_property", "group_by_names",
                    "rollup_status", "usage_link")
    list_filter = ("aggregation", "event_type", RollupErrorFilter)
    search_fields = ("slug", "name", "event_type")
    actions = ["rebuild_usage"]
    change_list_template = "admin/metering/meter/change_list.html"
    fieldsets = (
        (None, {"fields": ("slug", "name", "description")}),
        ("What to count", {"fields": ("event_type", "aggregation", "value_property", "group_by")}),
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

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except _Refused as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except _Refused as exc:  # rolled back with the deletion's log entry
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:metering_meter_change", args=[object_id]))

    def changelist_view(self, request, extra_context=None):
        if request.method == "POST":  # actions (bulk delete): all or nothing, like the single-object views
            try:
                with transaction.atomic():
                    return self._changelist_view(request, extra_context)
            except _Refused as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return HttpResponseRedirect(request.get_full_path())
        return self._changelist_view(request, extra_context)

    def get_urls(self):
        return [
            path("presets/<str:preset>/", self.admin_site.admin_view(self.preset_view), name="metering_meter_preset"),
            path("usage/", self.admin_site.admin_view(self.usage_view), name="metering_meter_usage"),
            *super().get_urls(),
        ]

    def _changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "presets": [
            {"key": key, "name": preset["name"], "exists": Meter.objects.filter(slug=preset["slug"]).exists(),
             "summary": f"{preset['aggregation']} of {preset['event_type']}"
                        + (f" {preset['value_property']}" if preset["value_property"] else "")}
            for key, preset in KONG_PRESETS.items()
        ]}
        return super().changelist_view(request, extra_context)

    @admin.display(description="group by")
    def group_by_names(self, obj: Meter) -> str:
        return ", ".join(obj.group_by or {})

    @admin.display(description="usage")
    def usage_link(self, obj: Meter) -> str:
        return format_html('<a href="{}?meter={}">explore</a>', reverse("admin:metering_meter_usage"), obj.pk)

    def save_model(self, request, obj, form, change):
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields if name in form.cleaned_data}
        fields["group_by"] = fields.get("group_by") or {}
        try:
            if change:
                fields.pop("slug", None)
                before = Meter.objects.get(pk=obj.pk)
                saved = meter_update(meter=before, **fields)
                if saved.definition_version != before.definition_version:
                    self.message_user(request, f"The definition of {saved.slug} changed: its usage is being "
                                               "rebuilt from the raw events.", messages.WARNING)
            else:
                saved = meter_create(**fields)
        except MeterValidationError as exc:  # form validation runs the same rules, so this is a race
            raise _Refused(f"{obj.slug or 'The meter'} was not saved: {exc}") from exc
        obj.pk = saved.pk
        obj.refresh_from_db()

    def delete_model(self, request, obj):
        try:
            meter_delete(meter=obj)
        except MeterInUse as exc:  # the delete page checks this first, so this is a race: error only
            raise _Refused(str(exc)) from exc

    def delete_queryset(self, request, queryset):
        for meter in queryset:
            self.delete_model(request, meter)

    def preset_view(self, request, preset: str):
        if request.method != "POST" or not self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:metering_meter_changelist"))
        try:
            meter = meter_create_from_preset(preset=preset)
        except MeterValidationError as exc:
            self.message_user(request, f"Preset not added: {exc}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:metering_meter_changelist"))
        self.message_user(request, f"Meter {meter.slug} added from the Kong preset; usage of existing "
                                   f"{meter.event_type} events is being rolled up.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:metering_meter_change", args=[meter.pk]))

    @admin.action(description="Rebuild usage from raw events", permissions=["change"])
    def rebuild_usage(self, request, queryset):
        if request.POST.get("confirmed") != "yes":
            context = {**self.admin_site.each_context(request), "meters": queryset, "opts": self.model._meta,
                       "title": "Rebuild usage from raw events?",
                       "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME}
            return TemplateResponse(request, "admin/metering/meter/rebuild_confirmation.html", context)
        from .tasks import rebuild_usage

        runs = []
        for meter in queryset:
            run = job_run_create(kind="rebuild_usage", trigger=JobRun.Trigger.ADMIN, params={"meter": meter.slug},
                                 requested_by=request.user)
            runs.append(run)
            transaction.on_commit(lambda m=meter.pk, r=run.pk: rebuild_usage.delay(m, r))
        self.message_user(request, f"Rebuilding usage of {len(runs)} meter(s); progress is shown below.",
                          messages.SUCCESS)
        if len(runs) == 1:
            return HttpResponseRedirect(reverse("admin:common_jobrun_change", args=[runs[0].pk]))
        return HttpResponseRedirect(reverse("admin:common_jobrun_changelist") + "?kind=rebuild_usage")

    def usage_view(self, request):
        """Usage explorer: meter, subjects, range, window, group-by → chart, table, CSV."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        initial = {"meter": request.GET.get("meter"), "window_size": "DAY", "time_zone": "UTC",
                   "start": (timezone.now() - dt.timedelta(days=30)).replace(hour=0, minute=0, second=0,
                                                                             microsecond=0),
                   "end": timezone.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)}
        bound = "start" in request.GET
        form = forms.UsageExplorerForm(request.GET if bound else None, initial=initial)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "title": "Usage explorer",
                   "form": form, "rows": None}
        if bound and form.is_valid():
            data = form.cleaned_data
            tz = time_zone(data["time_zone"])
            start = data["start"].replace(tzinfo=None).replace(tzinfo=tz).astimezone(dt.UTC)
            end = data["end"].replace(tzinfo=None).replace(tzinfo=tz).astimezone(dt.UTC)
            size = data["window_size"] or None
            if size:  # widen to whole windows so the chart never cuts one in half
                start = floor_to_window(start, size, tz)
                floored_end = floor_to_window(end, size, tz)
                end = floored_end if floored_end == end else next_window_start(floored_end, size, tz)
            try:
                rows = meter_query(meter=data["meter"], start=start, end=end, window_size=size,
                                   window_time_zone=data["time_zone"], subjects=data["subjects"] or None,
                                   group_by=data["group_by"])
            except UsageQueryError as exc:
                form.add_error("group_by" if exc.field == "groupBy" else None, str(exc))
                rows = None
            if rows is not None:
                keys = [k for k in data["group_by"] if k != "subject"]
                if request.GET.get("format") == "csv":
                    return self._usage_csv(data["meter"], rows, keys)
                totals: dict = {}
                for row in rows:
                    totals[row.window_start] = totals.get(row.window_start, 0) + row.value
                label_format = "%Y-%m-%d %H:%M" if size in ("MINUTE", "HOUR") else "%Y-%m-%d"
                points = [(start_.astimezone(tz).strftime(label_format), value) for start_, value in totals.items()]
                context.update({
                    "rows": rows, "keys": keys, "chart": bar_chart_svg(points),
                    "show_subject": any(row.subject for row in rows), "tz": tz,
                    "csv_url": request.get_full_path() + "&format=csv",
                    "total": sum((row.value for row in rows), 0) if data["meter"].aggregation in (
                        "SUM", "COUNT") else None,
                })
        return TemplateResponse(request, "admin/metering/meter/usage.html", context)

    def _usage_csv(self, meter: Meter, rows, keys: list[str]) -> HttpResponse:
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{meter.slug}-usage.csv"'
        writer = csv.writer(response)
        writer.writerow(["window_start", "window_end", "subject", *keys, "value"])
        for row in rows:
            writer.writerow([format_rfc3339(row.window_start), format_rfc3339(row.window_end), row.subject or "",
                             *[row.group_by.get(k) or "" for k in keys], format(row.value, "f")])
        return response


@admin.register(SubjectActivity)
class SubjectActivityAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    """Every subject the gateway has sent, with counts (kept by the usage aggregator)."""

    list_display = ("subject", "event_count", "first_seen", "last_seen")
    search_fields = ("^subject",)
    ordering = ("-last_seen",)
    paginator = CappedCountPaginator
    show_full_result_count = False


@admin.register(EventTypeActivity)
class EventTypeActivityAdmin(SubjectActivityAdmin):
    list_display = ("type", "event_count", "last_seen", "meters")
    search_fields = ("type",)

    def get_changelist(self, request, **kwargs):
        return MetersOfTypesChangeList

    @admin.display(description="meters")
    def meters(self, obj: EventTypeActivity) -> str:
        return ", ".join(getattr(obj, "meter_slugs", [])) or "— no meter: these events are not billed"


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
