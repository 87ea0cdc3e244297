"""What notifications adds to lower apps' admin pages (registered from ``NotificationsConfig.ready()``): on the
customer page, the alerts that fired and when, the notification preferences, and a "Share portal link" button;
on the admin home, a warning card for webhook endpoints that are disabled or failing."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from common.admin.extensions import ObjectTool, Panel, PanelField, register_admin_extension, row_and_admin_url
from common.admin.utils import saved_only
from customers.models import Customer

from ..models import CustomerNotificationSettings, Delivery, WebhookEndpoint
from ..selectors.portal import customer_alerts

SHARE_PERMISSION = "notifications.share_portal_link"


@admin.display(description="alerts that fired")
@saved_only
def fired_alerts(customer: Customer) -> str:
    alerts = customer_alerts(customer, limit=20)
    if not alerts:
        return "No usage or spend alert has fired."
    rows = ((a.get_kind_display(), a.rate_card.feature.key if a.rate_card and a.rate_card.feature else
             (a.rate_card.key if a.rate_card else ""),
             a.key if a.kind == a.Kind.UNPRICED else f"{a.threshold.normalize():f}",  # unpriced: which row is missing
             f"{a.value.normalize():f}",
             f"{a.period_start:%Y-%m-%d} – {a.period_end:%Y-%m-%d}", f"{a.fired_at:%Y-%m-%d %H:%M} UTC")
            for a in alerts)
    return format_html(
        '<table id="fired-alerts"><tr><th>alert</th><th>feature</th><th>threshold or key</th><th>value</th>'
        "<th>period</th>"
        "<th>fired</th></tr>{}</table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows))


@admin.display(description="emails and spend alert")
@saved_only
def notification_preferences(customer: Customer) -> str:
    prefs, url = row_and_admin_url(CustomerNotificationSettings, "customer", customer)
    if prefs is None:
        return format_html('Invoice emails to {} (default); no spend alert. <a href="{}">Change</a>',
                           customer.email or "— (no email: none sent)", url)
    return format_html("Invoice emails: {}; threshold emails: {}; to {}; spend alert: {}. <a href=\"{}\">Change</a>",
                       "on" if prefs.invoice_emails else "off (Stripe's)", "on" if prefs.threshold_emails else "off",
                       prefs.billing_email or customer.email or "—",
                       prefs.spend_alert_amount if prefs.spend_alert_amount is not None else "none", url)


def dashboard(user: Any) -> dict[str, Any]:
    if not user.has_perm("notifications.view_webhookendpoint"):
        return {}
    since = timezone.now() - dt.timedelta(days=1)
    disabled = list(WebhookEndpoint.objects.filter(enabled=False).exclude(disabled_reason="")
                    .values("pk", "url", "disabled_reason")[:10])
    return {
        "webhooks_disabled": [{**item, "link": reverse("admin:notifications_webhookendpoint_change",
                                                       args=[item["pk"]])} for item in disabled],
        "webhooks_failing": WebhookEndpoint.objects.filter(enabled=True, failing_since__isnull=False).count(),
        "webhook_failures": Delivery.objects.filter(status=Delivery.Status.FAILED, created_at__gte=since).count(),
        "webhooks_url": reverse("admin:notifications_webhookendpoint_changelist"),
    }


def register() -> None:
    register_admin_extension(
        Customer, "notifications",
        panels=[Panel("Notifications and portal", [PanelField(fired_alerts), PanelField(notification_preferences)])],
        object_tools=[ObjectTool("Share portal link", lambda customer: reverse(
            "admin:notifications_portallink_share", args=[customer.pk]), element_id="share-portal-link",
            permission=SHARE_PERMISSION)],
    )
