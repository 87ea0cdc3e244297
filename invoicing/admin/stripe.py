"""Settings → Stripe: configuration status and every webhook event received, with what it did (view only)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin

from common.admin.utils import ViewOnlyAdminMixin, pretty_json

from ..models import Invoice, StripeWebhookEvent
from ..stripe_gateway import is_sandbox


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
        extra_context = {
            **(extra_context or {}),
            "sandbox": is_sandbox(),
            "webhook_secret_set": bool(settings.STRIPE_WEBHOOK_SECRET),
            "webhook_url": request.build_absolute_uri("/stripe/webhooks"),
            "failed": Invoice.objects.filter(sync_status=Invoice.SyncStatus.FAILED).count(),
        }
        return super().changelist_view(request, extra_context)
