"""Admin screens of the metering app: the event explorer and API tokens."""

from __future__ import annotations

import datetime as dt

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.template.response import TemplateResponse
from django.utils import timezone

from billing_site.admin_utils import CappedCountPaginator, pretty_json, short_json

from . import forms
from .enrichment import enrich_events
from .models import ApiToken, Event
from .selectors.events import event_types_seen
from .services.tokens import api_token_create, api_token_revoke


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
class EventAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # append-only: events are evidence for invoices

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
                       "title": "Revoke API tokens?", "action": "revoke_tokens",
                       "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME}
            return TemplateResponse(request, "admin/metering/apitoken/revoke_confirmation.html", context)
        count = 0
        for token in queryset:
            api_token_revoke(token=token, revoked_by=request.user)
            count += 1
        self.message_user(request, f"Revoked {count} token(s). Requests using them now get 401.", messages.SUCCESS)
        return None
