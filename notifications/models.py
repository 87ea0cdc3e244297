"""What leaves the back office: webhook endpoints, the outbox of events, their deliveries (webhooks and emails)
with every attempt, usage and spend alerts that fired, email templates, customer preferences and portal links.

The outbox (:class:`OutboxEvent`) is written in the transaction that causes the event; deliveries are created from
it after the commit, one per event and endpoint (unique), and sent by Celery in order of occurrence per customer.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from catalog.models import RateCard
from customers.models import Customer, Subscription


class WebhookEndpoint(models.Model):
    url = models.URLField(max_length=1000, help_text="https:// (http:// only when WEBHOOKS_ALLOW_HTTP is set).")
    description = models.CharField(max_length=500, blank=True)
    event_types = models.JSONField(default=list, blank=True, help_text="The event types it wants; empty: all.")
    enabled = models.BooleanField(default=True)
    secret = models.CharField(max_length=100, editable=False, help_text="whsec_…, signs every delivery.")
    previous_secret = models.CharField(max_length=100, blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False,
                                                      help_text="The rotated-out secret signs too until then.")
    failing_since = models.DateTimeField(null=True, blank=True, editable=False,
                                         help_text="First failed delivery since the last success.")
    disabled_at = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=500, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        permissions = [("send_test_event", "Can send test events, resend deliveries and rotate webhook secrets")]

    def __str__(self) -> str:
        return self.description or self.url

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class OutboxEvent(models.Model):
    """One event that happened, written in the transaction that caused it (the transactional outbox)."""

    uid = models.CharField(max_length=40, unique=True, help_text="msg_…: the webhook-id receivers dedupe on.")
    type = models.CharField(max_length=64, db_index=True)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    customer_key = models.CharField(max_length=64, blank=True, help_text="Deliveries keep this order per customer.")
    data = models.JSONField(default=dict)
    occurred_at = models.DateTimeField()
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="When its deliveries were created.")
    test = models.BooleanField(default=False, help_text="A test event sent from the admin to one endpoint.")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["id"], condition=Q(dispatched_at__isnull=True),
                                name="notif_event_undispatched")]

    def __str__(self) -> str:
        return f"{self.type} {self.uid}"

    def body(self) -> dict:
        return {"type": self.type, "timestamp": self.occurred_at.isoformat().replace("+00:00", "Z"),
                "data": self.data}


class Delivery(models.Model):
    class Channel(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    event = models.ForeignKey(OutboxEvent, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.WEBHOOK)
    endpoint = models.ForeignKey(WebhookEndpoint, null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="deliveries")
    recipient = models.CharField(max_length=254, blank=True, help_text="Emails: the address.")
    customer_key = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True, help_text="A sender holds it until then.")
    last_response_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    resend_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], condition=Q(resend_of__isnull=True),
                                    name="notif_one_delivery_per_endpoint"),
            models.UniqueConstraint(fields=["event", "recipient"],
                                    condition=Q(channel="email", resend_of__isnull=True),
                                    name="notif_one_email_per_recipient"),
        ]
        indexes = [models.Index(fields=["endpoint", "customer_key", "status", "event"], name="notif_delivery_queue")]

    def __str__(self) -> str:
        return f"{self.event.type} → {self.endpoint or self.recipient}"


class DeliveryAttempt(models.Model):
    """One try of a delivery: what was sent, what came back (append-only)."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempt_log")
    at = models.DateTimeField(auto_now_add=True)
    request_headers = models.JSONField(default=dict)
    request_body = models.TextField(blank=True)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True, help_text="The first 2,000 characters.")
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.delivery_id} @ {self.at:%Y-%m-%d %H:%M:%S}"


class CustomerNotificationSettings(models.Model):
    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="notification_settings")
    invoice_emails = models.BooleanField(default=True, help_text="Email invoices and credit notes (off: Stripe's).")
    threshold_emails = models.BooleanField(default=False, help_text="Email the customer usage threshold alerts.")
    billing_email = models.EmailField(blank=True, help_text="Instead of the customer's email.")
    spend_alert_amount = models.BigIntegerField(null=True, blank=True,
                                                help_text="Minor units: spend.threshold when a period's preview "
                                                          "passes it.")

    class Meta:
        verbose_name_plural = "customer notification settings"

    def __str__(self) -> str:
        return f"{self.customer}"


class UsageAlertRule(models.Model):
    """Thresholds of a rate card with a metered entitlement (without a rule: ``ENTITLEMENT_ALERT_THRESHOLDS``)."""

    rate_card = models.OneToOneField(RateCard, on_delete=models.CASCADE, related_name="alert_rule")
    thresholds = models.JSONField(default=list, help_text="Percentages of the limit, e.g. [50, 80, 100].")
    enabled = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"{self.rate_card}: {self.thresholds}"


class FiredAlert(models.Model):
    """An alert that fired: once per subscription, rate card, period and threshold (usage), or per customer,
    period and amount (spend): the unique constraints make it fire once however many evaluators race."""

    class Kind(models.TextChoices):
        ENTITLEMENT = "entitlement", "Usage threshold"
        SPEND = "spend", "Spend threshold"
        UNPRICED = "unpriced", "Unpriced usage"
        UNATTRIBUTED = "unattributed", "Unattributed usage"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    subscription = models.ForeignKey(Subscription, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    rate_card = models.ForeignKey(RateCard, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255, blank=True, help_text="Subject or model (unpriced, unattributed).")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    threshold = models.DecimalField(max_digits=30, decimal_places=6)
    value = models.DecimalField(max_digits=38, decimal_places=15, help_text="Usage or spend when it fired.")
    limit = models.DecimalField(max_digits=38, decimal_places=15, null=True, blank=True)
    fired_at = models.DateTimeField()
    event = models.ForeignKey(OutboxEvent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["subscription", "rate_card", "period_start", "threshold"],
                                    condition=Q(kind="entitlement"), name="notif_threshold_once_per_period"),
            models.UniqueConstraint(fields=["customer", "period_start", "threshold"], condition=Q(kind="spend"),
                                    name="notif_spend_once_per_period"),
            models.UniqueConstraint(fields=["kind", "key", "period_start"],
                                    condition=Q(kind__in=["unpriced", "unattributed"]),
                                    name="notif_usage_once_per_day"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.threshold} @ {self.fired_at:%Y-%m-%d %H:%M}"


class EmailTemplate(models.Model):
    """Subject and text of an email, editable in the admin (Django template syntax)."""

    class Key(models.TextChoices):
        INVOICE_ISSUED = "invoice.issued", "Invoice issued"
        CREDIT_NOTE_ISSUED = "credit_note.issued", "Credit note issued"
        THRESHOLD = "entitlement.threshold", "Usage threshold"

    key = models.CharField(max_length=64, choices=Key.choices, unique=True)
    subject = models.CharField(max_length=300)
    body = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.get_key_display()


class PortalLink(models.Model):
    """A customer's portal link: the token is signed (it names this row and a nonce) and expires; the row stores
    only the nonce's hash, and revoking it ends the link at once."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="portal_links")
    nonce_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("share_portal_link", "Can share and revoke customer portal links")]

    def __str__(self) -> str:
        return f"portal link #{self.pk} for {self.customer}"
