"""Settings → Stripe: configuration status and every webhook event received, with what it did (view only)."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse

from common.admin.utils import ViewOnlyAdminMixin, pretty_json

from ..models import Invoice, StripeWebhookEvent
from ..stripe_gateway import StripeConfig


@admin.register(StripeWebhookEvent)
class StripeWebhookEventAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("received_at", "type", "event_id", "invoice", "outcome")
    list_filter = ("type",)
    search_fields = ("event_id", "invoice__number")
    list_select_related = ("invoice",)
    readonly_fields = ("event_id", "type", "received_at", "processed_at", "outcome", "invoice", "payload_pretty")
    exclude = ("payload",)
    change_list_template = "admin/invoicing/stripewebhookevent/change_list.html"

    @admin.display(description="payload")
    def payload_pretty(self, obj: StripeWebhookEvent) -> str:
        return pretty_json(obj.payload)

    def changelist_view(self, request, extra_context=None):
        config = StripeConfig.from_settings()  # the environment's keys, else those stored in Settings → Stripe
        can_open_settings = request.user.has_perm("invoicing.view_stripesettings")
        extra_context = {
            **(extra_context or {}),
            "sandbox": config.sandbox,
            "webhook_secret_set": bool(config.webhook_secret),
            "stripe_settings_url": reverse("admin:invoicing_stripesettings_change", args=[1]) if can_open_settings
            else "",
            "webhook_url": request.build_absolute_uri("/stripe/webhooks"),
            "failed": Invoice.objects.filter(sync_status=Invoice.SyncStatus.FAILED).count(),
        }
        return super().changelist_view(request, extra_context)
