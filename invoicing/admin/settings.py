"""Settings → Company (the seller on every invoice and credit note) and Settings → Stripe (mode, keys, connected
account, webhook endpoint, last webhook, *Test connection*). Each is one row, edited on one page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from ..models import CompanyProfile, StripeSettings
from ..selectors.settings import SINGLETON, company_profile, logo_data_uri, stripe_settings, stripe_status
from ..services.settings import (
    COMPANY_FIELDS,
    UNCHANGED,
    company_profile_update,
    stripe_connection_test,
    stripe_keys_update,
)
from ..settings_forms import CompanyProfileForm, StripeKeysForm

WEBHOOK_PATH = "/stripe/webhooks"


class SingletonAdminMixin:
    """One row (pk 1): the list opens it, nothing is added or deleted."""

    model: Any
    admin_site: admin.AdminSite

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_or_change_permission(request):  # type: ignore[attr-defined]
            raise PermissionDenied
        info = self.model._meta.app_label, self.model._meta.model_name
        return HttpResponseRedirect(reverse("admin:%s_%s_change" % info, args=[SINGLETON]))  # noqa: UP031


@admin.register(CompanyProfile)
class CompanyProfileAdmin(SingletonAdminMixin, admin.ModelAdmin):
    form = CompanyProfileForm
    readonly_fields = ("logo_preview",)
    fieldsets = (
        ("Seller", {"fields": ("legal_name", "tax_id", "email")}),
        ("Address", {"fields": ("street_line1", "street_line2", ("postal_code", "city"), ("region", "country"))}),
        ("Logo", {"fields": ("logo_preview", "logo_upload", "remove_logo")}),
        ("On every invoice and credit note", {"fields": ("payment_instructions", "invoice_footer", "locale")}),
    )

    def get_object(self, request, object_id, from_field=None):
        return company_profile() if str(object_id) == str(SINGLETON) else None

    @admin.display(description="current logo")
    def logo_preview(self, obj: CompanyProfile) -> str:
        uri = logo_data_uri(obj)
        return format_html('<img src="{}" alt="logo" style="max-height:60px;max-width:240px">', uri) if uri else "—"

    def save_model(self, request, obj, form, change) -> None:
        logo = UNCHANGED
        if form.cleaned_data.get("remove_logo"):
            logo = None
        elif form.cleaned_data.get("logo_upload"):
            logo = form.cleaned_data["logo_upload"]
        saved = company_profile_update(values={name: form.cleaned_data[name] for name in COMPANY_FIELDS
                                               if name in form.cleaned_data}, logo=logo)
        obj.pk = saved.pk


@admin.register(StripeSettings)
class StripeSettingsAdmin(SingletonAdminMixin, admin.ModelAdmin):
    def get_urls(self):
        view = self.admin_site.admin_view
        return [path("test-connection/", view(self.test_connection_view), name="invoicing_stripesettings_test"),
                *super().get_urls()]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if str(object_id) != str(SINGLETON):
            raise Http404
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        can_change = self.has_change_permission(request)
        form = None
        if can_change:
            form = StripeKeysForm(request.POST if request.method == "POST" else None)
        if request.method == "POST":
            if form is None:
                raise PermissionDenied
            if form.is_valid():
                data = form.cleaned_data
                stripe_keys_update(api_key=data["api_key"] or None, webhook_secret=data["webhook_secret"] or None,
                                   clear_api_key=data["clear_api_key"],
                                   clear_webhook_secret=data["clear_webhook_secret"],
                                   actor=request.user.get_username())
                messages.success(request, "Stripe settings saved (keys are stored encrypted).")
                return HttpResponseRedirect(request.path)
        status = stripe_status()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Stripe",
            "status": status,
            "form": form,
            "can_change": can_change,
            "webhook_url": request.build_absolute_uri(WEBHOOK_PATH),
            "events_url": reverse("admin:invoicing_stripewebhookevent_changelist"),
        }
        return TemplateResponse(request, "admin/invoicing/stripesettings/settings.html", context)

    def test_connection_view(self, request):
        if request.method != "POST":
            return require_POST(lambda r: None)(request)  # 405
        if not self.has_change_permission(request):
            raise PermissionDenied
        ok, message, _account = stripe_connection_test(actor=request.user.get_username())
        (messages.success if ok else messages.error)(request, message)
        return HttpResponseRedirect(reverse("admin:invoicing_stripesettings_change", args=[SINGLETON]))


__all__ = ["CompanyProfileAdmin", "StripeSettingsAdmin", "stripe_settings"]
