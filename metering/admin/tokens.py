"""Settings → API tokens: created here and shown once, stored hashed, revoked with confirmation; and
"Connect a gateway" (an ingest token, the meters to enable, Kong's plugin configuration to copy)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from common.admin.confirm import ConfirmAction, ConfirmActionMixin, confirm_bulk_action
from common.admin.refusals import ServiceErrorsMixin, refusals

from .. import forms
from ..meter_rules import KONG_PRESETS, PRESET_COMPANIONS
from ..models import ApiToken
from ..services.meters import meter_create_from_preset, preset_missing
from ..services.tokens import api_token_create, api_token_revoke, api_token_set_rate_limit

REVOKE = ConfirmAction(
    name="revoke", label="Revoke", scope="bulk", permission="metering.delete_apitoken",
    bulk_title="Revoke these API tokens?",
    explanation="Gateways and scripts using them will get 401 from their next request. This cannot be undone.",
    service=lambda request, token, data: api_token_revoke(token=token, revoked_by=request.user),
    done=lambda outcome: f"Revoked {len(outcome.done)} token(s). Requests using them now get 401.",
)


@admin.register(ApiToken)
class ApiTokenAdmin(ConfirmActionMixin, ServiceErrorsMixin, admin.ModelAdmin):
    """A token's name and scopes never change: add and revoke are what changes tokens. The one thing editable
    afterwards is the ingest rate limit (events per second, empty for none), so a noisy gateway can be slowed
    without replacing its token; a revoked token is read-only."""

    list_display = ("name", "prefix", "scope_list", "rate_limit", "created_at", "created_by", "last_used_at",
                    "status")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    list_select_related = ("created_by",)
    confirm_actions = (REVOKE,)
    revoke_tokens = confirm_bulk_action("revoke", "Revoke selected tokens")
    actions = ["revoke_tokens"]
    readonly_fields = ("name", "prefix", "scopes", "created_at", "created_by", "last_used_at", "revoked_at",
                       "revoked_by")

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.revoked_at is not None:
            return False
        return super().has_change_permission(request, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = forms.ApiTokenCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return ("name", "scopes", "ingest_rate_limit") if obj is None else (*self.readonly_fields,
                                                                            "ingest_rate_limit")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def confirm_row(self, obj: ApiToken) -> str:
        return f"{obj.prefix}…" + (", already revoked" if obj.revoked_at else "")

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
                   "title": "Connect a gateway", "presets": KONG_PRESETS,
                   "companions": PRESET_COMPANIONS}
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            created_meters = []
            for preset, wanted in (("llm_tokens", data["meter_ai_token_usage"]),
                                   ("api_requests", data["meter_api_requests"])):
                if wanted and preset_missing(preset):
                    created_meters += [meter.slug for meter in meter_create_from_preset(preset=preset)]
            token, plain = api_token_create(name=data["name"], scopes=["ingest"], created_by=request.user)
            endpoint = data["public_url"].rstrip("/") + "/api/v3/openmeter/events"
            context.update({"token": token, "plain_token": plain, "endpoint": endpoint,
                            "created_meters": created_meters, "config": data})
        elif request.method != "POST":
            form.initial.setdefault("public_url", request.build_absolute_uri("/").rstrip("/"))
        return TemplateResponse(request, "admin/metering/apitoken/connect.html", context)

    def save_model(self, request, obj, form, change):
        if change:
            with refusals():
                api_token_set_rate_limit(token=obj, ingest_rate_limit=form.cleaned_data["ingest_rate_limit"])
            return
        with refusals():
            token, plain = api_token_create(
                name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"], created_by=request.user,
                ingest_rate_limit=form.cleaned_data.get("ingest_rate_limit"),
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

    @admin.display(description="rate limit")
    def rate_limit(self, obj: ApiToken) -> str:
        return f"{obj.ingest_rate_limit:,} events/s" if obj.ingest_rate_limit else "none"

    @admin.display(description="status")
    def status(self, obj: ApiToken) -> str:
        return "revoked" if obj.revoked_at else "active"
