"""Admin of notifications: webhook endpoints (secret shown once, rotate, send a test event), the delivery log with
every attempt (resend), the outbox, alerts that fired, email templates, alert rules, customer preferences and
portal links (revoke)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import Http404, HttpResponseRedirect
from django.template import Template, TemplateSyntaxError
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from catalog.models import RateCard
from common.admin.confirm import ConfirmAction, ConfirmActionMixin, confirm_bulk_action
from common.admin.refusals import ServiceErrorsMixin, refusals
from common.admin.utils import NoAddOrChangeAdminMixin, ViewOnlyAdminMixin
from customers.models import Customer

from ..event_types import SUBSCRIBABLE
from ..models import (
    CustomerNotificationSettings,
    Delivery,
    DeliveryAttempt,
    EmailTemplate,
    FiredAlert,
    OutboxEvent,
    PortalLink,
    UsageAlertRule,
    WebhookEndpoint,
)
from ..services.deliveries import delivery_resend
from ..services.endpoints import (
    EndpointError,
    clean_url,
    endpoint_create,
    endpoint_delete,
    endpoint_rotate_secret,
    endpoint_send_test,
    endpoint_update,
)
from ..services.portal import portal_link_create, portal_link_revoke

SEND_PERMISSION = "notifications.send_test_event"


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=1000, assume_scheme="https",
                         help_text="https:// (http:// only when WEBHOOKS_ALLOW_HTTP is set); a public host.")
    event_types = forms.MultipleChoiceField(
        choices=[(name, name) for name in SUBSCRIBABLE], required=False, widget=forms.CheckboxSelectMultiple,
        help_text="None checked: every event type.")

    class Meta:
        model = WebhookEndpoint
        fields = ("url", "description", "event_types", "enabled")

    def clean_url(self):
        url = self.cleaned_data["url"]
        if self.instance.pk and url == self.instance.url:
            return url
        try:
            return clean_url(url)
        except EndpointError as exc:
            raise forms.ValidationError(str(exc)) from None


def _rotate(request, endpoint, data):
    new = endpoint_rotate_secret(endpoint=endpoint)
    request._rotated_secret = new.secret
    return new


ROTATE = ConfirmAction(
    name="rotate", label="Rotate secret", permission=SEND_PERMISSION,
    explanation="A new secret signs every delivery from now on; the old one keeps signing too (a second signature) "
                "for 24 hours, so the receiver can switch without missing a delivery. The new secret is shown once.",
    service=_rotate,
    done=lambda outcome: "The secret was rotated; copy the new one below: it is not shown again.",
)
SEND_TEST = ConfirmAction(
    name="send_test", label="Send test event", permission=SEND_PERMISSION,
    explanation="A `test` event is delivered to this endpoint now (signed like any other); the result is in its "
                "delivery log.",
    service=lambda request, endpoint, data: endpoint_send_test(endpoint=endpoint),
    done=lambda outcome: "Test event queued: see the delivery log.",
    redirect=lambda outcome: reverse("admin:notifications_delivery_changelist") + f"?endpoint__id__exact="
                                                                                 f"{outcome.obj.pk}",
)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ConfirmActionMixin, ServiceErrorsMixin, admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("url", "description", "wanted", "enabled", "failing_since", "disabled_reason", "deliveries_link")
    list_filter = ("enabled",)
    search_fields = ("url", "description")
    readonly_fields = ("failing_since", "disabled_at", "disabled_reason", "secret_rotation", "created_at",
                       "updated_at", "deliveries_link")
    confirm_actions = (ROTATE, SEND_TEST)
    confirm_route = ("<int:pk>/do/<str:action>/", "notifications_webhookendpoint_do")

    def get_fields(self, request, obj=None):
        base = ["url", "description", "event_types", "enabled"]
        return base if obj is None else [*base, *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    @admin.display(description="event types")
    def wanted(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.event_types) or "all"

    @admin.display(description="previous secret")
    def secret_rotation(self, obj: WebhookEndpoint) -> str:
        if obj.previous_secret_expires_at:
            return f"also signs until {obj.previous_secret_expires_at:%Y-%m-%d %H:%M} UTC"
        return "—"

    @admin.display(description="delivery log")
    def deliveries_link(self, obj: WebhookEndpoint) -> str:
        if not obj.pk:
            return "—"
        url = reverse("admin:notifications_delivery_changelist") + f"?endpoint__id__exact={obj.pk}"
        return format_html('<a href="{}">deliveries</a>', url)

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        with refusals():
            if change:
                endpoint_update(endpoint=obj, url=data["url"], event_types=data["event_types"],
                                description=data["description"], enabled=data["enabled"])
                return
            new = endpoint_create(url=data["url"], event_types=data["event_types"], description=data["description"],
                                  enabled=data["enabled"])
        obj.pk = new.endpoint.pk
        obj._plain_secret = new.secret

    def save_related(self, request, form, formsets, change):
        pass

    def delete_model(self, request, obj):
        with refusals():
            endpoint_delete(endpoint=obj)

    def log_addition(self, request, obj, message):
        return super().log_addition(request, WebhookEndpoint.objects.get(pk=obj.pk), message)

    def response_add(self, request, obj, post_url_continue=None):
        # Shown once, on this page only: never stored in a message cookie or the session.
        return self._secret_page(request, WebhookEndpoint.objects.get(pk=obj.pk), obj._plain_secret,
                                 "Webhook endpoint created")

    def _secret_page(self, request, endpoint, secret, title):
        context = {**self.admin_site.each_context(request), "endpoint": endpoint, "secret": secret,
                   "opts": self.model._meta, "title": title}
        return TemplateResponse(request, "admin/notifications/webhookendpoint/secret.html", context)

    def confirm_view(self, request, name, pk=None):
        response = super().confirm_view(request, name, pk)
        secret = getattr(request, "_rotated_secret", None)
        if name == "rotate" and secret and response.status_code == 302:  # shown once, never stored in a message
            return self._secret_page(request, WebhookEndpoint.objects.get(pk=pk), secret, "Secret rotated")
        return response


class AttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ("at", "response_code", "response_body", "error", "duration_ms", "request_headers")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


RESEND = ConfirmAction(
    name="resend", label="Resend", scope="row", permission=SEND_PERMISSION,
    explanation="The same event (same webhook-id, so receivers can tell it is a repeat) is delivered again now.",
    service=lambda request, delivery, data: delivery_resend(delivery=delivery),
    done=lambda outcome: f"Resent {len(outcome.done)} delivery(ies).",
)


@admin.register(Delivery)
class DeliveryAdmin(NoAddOrChangeAdminMixin, ConfirmActionMixin, admin.ModelAdmin):
    """The delivery log: read-only; each attempt's request, response code and body excerpt."""

    list_display = ("event", "target", "customer_key", "status", "attempts", "last_response_code",
                    "next_attempt_at", "delivered_at", "created_at")
    list_filter = ("status", "channel", "endpoint", "event__type")
    search_fields = ("event__uid", "customer_key", "recipient", "endpoint__url")
    list_select_related = ("event", "endpoint")
    inlines = [AttemptInline]
    readonly_fields = ("event", "event_body", "channel", "endpoint", "recipient", "customer_key", "status",
                       "attempts", "next_attempt_at", "last_response_code", "last_error", "delivered_at",
                       "created_at", "resend_of")
    fields = readonly_fields
    confirm_actions = (RESEND,)
    confirm_route = ("<int:pk>/do/<str:action>/", "notifications_delivery_do")
    resend_deliveries = confirm_bulk_action("resend", "Resend selected deliveries")
    actions = ["resend_deliveries"]

    @admin.display(description="to")
    def target(self, obj: Delivery) -> str:
        return str(obj.endpoint) if obj.endpoint_id else obj.recipient

    @admin.display(description="body")
    def event_body(self, obj: Delivery) -> str:
        return format_html("<pre>{}</pre>", obj.event.body())


@admin.register(OutboxEvent)
class OutboxEventAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("uid", "type", "customer_key", "occurred_at", "dispatched_at", "test")
    list_filter = ("type", "test")
    search_fields = ("uid", "customer_key")
    readonly_fields = ("uid", "type", "customer", "customer_key", "data", "occurred_at", "dispatched_at", "test",
                       "delivery_list")

    @admin.display(description="deliveries")
    def delivery_list(self, obj: OutboxEvent) -> str:
        rows = ((reverse("admin:notifications_delivery_change", args=[d.pk]), d.endpoint or d.recipient, d.status,
                 d.attempts) for d in obj.deliveries.select_related("endpoint"))
        return format_html("<ul>{}</ul>", format_html_join("", '<li><a href="{}">{}</a>: {} ({} attempts)</li>', rows))


@admin.register(FiredAlert)
class FiredAlertAdmin(ViewOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("kind", "customer", "rate_card", "key", "threshold", "value", "limit", "period_start",
                    "fired_at")
    list_filter = ("kind",)
    search_fields = ("customer__key", "key")
    list_select_related = ("customer", "rate_card")
    readonly_fields = ("kind", "customer", "subscription", "rate_card", "key", "period_start", "period_end",
                       "threshold", "value", "limit", "fired_at", "event")


class EmailTemplateForm(forms.ModelForm):
    class Meta:
        model = EmailTemplate
        fields = ("key", "subject", "body")

    def clean(self):
        data = super().clean() or {}
        for field in ("subject", "body"):
            text = data.get(field) or ""
            if "\x00" in text:
                self.add_error(field, "NUL characters are not allowed.")
                continue
            try:
                Template(text)
            except TemplateSyntaxError as exc:
                self.add_error(field, f"Template error: {exc}")
        return data


@admin.register(EmailTemplate)
class EmailTemplateAdmin(admin.ModelAdmin):
    form = EmailTemplateForm
    list_display = ("key", "subject", "updated_at")


class UsageAlertRuleForm(forms.ModelForm):
    thresholds = forms.CharField(help_text="Percentages of the limit, separated by commas, e.g. 50, 80, 100.")

    class Meta:
        model = UsageAlertRule
        fields = ("rate_card", "thresholds", "enabled")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["thresholds"] = ", ".join(str(t) for t in self.instance.thresholds)
        rate_card = self.fields["rate_card"]
        assert isinstance(rate_card, forms.ModelChoiceField)
        rate_card.queryset = RateCard.objects.filter(entitlement_type="metered")

    def clean_thresholds(self):
        text = self.cleaned_data["thresholds"]
        try:
            values = sorted({int(part.strip()) for part in text.split(",") if part.strip()})
        except ValueError:
            raise forms.ValidationError("Enter whole percentages separated by commas, e.g. 50, 80, 100.") from None
        if not values or any(v < 1 or v > 1000 for v in values) or len(values) > 20:
            raise forms.ValidationError("Enter 1 to 20 percentages between 1 and 1000.")
        return values


@admin.register(UsageAlertRule)
class UsageAlertRuleAdmin(admin.ModelAdmin):
    form = UsageAlertRuleForm
    list_display = ("rate_card", "thresholds", "enabled")
    list_select_related = ("rate_card", "rate_card__plan")


@admin.register(CustomerNotificationSettings)
class CustomerNotificationSettingsAdmin(admin.ModelAdmin):
    list_display = ("customer", "invoice_emails", "threshold_emails", "billing_email", "spend_alert_amount")
    search_fields = ("customer__key", "customer__name")
    list_select_related = ("customer",)
    autocomplete_fields = ("customer",)


class PortalShareMixin(admin.ModelAdmin):
    """"Share portal link" on a customer: a POST makes the link and shows it once."""

    def get_urls(self):
        return [path("share/<int:customer_pk>/", self.admin_site.admin_view(self.share_view),
                     name="notifications_portallink_share"), *super().get_urls()]

    def share_view(self, request, customer_pk: int):
        customer = Customer.objects.filter(pk=customer_pk).first()
        if customer is None:
            raise Http404("No such customer.")
        back = reverse("admin:customers_customer_change", args=[customer.pk])
        if not request.user.has_perm("notifications.share_portal_link"):
            self.message_user(request, "You may not do that.", messages.ERROR)
            return HttpResponseRedirect(back)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "customer": customer,
                   "title": f"Share a portal link with {customer}", "back": back}
        if request.method == "POST":
            shared = portal_link_create(customer=customer, created_by=request.user)
            context["url"] = request.build_absolute_uri(reverse("portal", args=[shared.token]))
            context["link"] = shared.link
        return TemplateResponse(request, "admin/notifications/portallink/share.html", context)


REVOKE = ConfirmAction(
    name="revoke", label="Revoke", scope="row", permission="notifications.share_portal_link",
    explanation="The link stops working at once (the customer sees 'not valid').",
    service=lambda request, link, data: portal_link_revoke(link=link),
    done=lambda outcome: f"Revoked {len(outcome.done)} portal link(s).",
)


@admin.register(PortalLink)
class PortalLinkAdmin(NoAddOrChangeAdminMixin, ConfirmActionMixin, PortalShareMixin):
    list_display = ("customer", "created_at", "created_by", "expires_at", "revoked_at", "last_used_at")
    list_filter = ("revoked_at",)
    search_fields = ("customer__key", "customer__name")
    list_select_related = ("customer", "created_by")
    readonly_fields = ("customer", "created_at", "created_by", "expires_at", "revoked_at", "last_used_at")
    fields = readonly_fields
    confirm_actions = (REVOKE,)
    confirm_route = ("<int:pk>/do/<str:action>/", "notifications_portallink_do")
    revoke_links = confirm_bulk_action("revoke", "Revoke selected links")
    actions = ["revoke_links"]
