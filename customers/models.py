"""Customers, the gateway subjects whose usage they pay for, Kong consumers, and subscriptions."""

from __future__ import annotations

import datetime as dt

from django.db import models
from django.db.models import Q

from catalog.models import Plan
from metering.models import SubjectActivity


class Customer(models.Model):
    class CollectionMethod(models.TextChoices):
        CHARGE_AUTOMATICALLY = "charge_automatically", "Charge automatically"
        SEND_INVOICE = "send_invoice", "Send invoice"

    key = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    currency = models.CharField(max_length=3, help_text="ISO 4217; the currency of this customer's invoices.")
    address_line1 = models.CharField("address line 1", max_length=200, blank=True)
    address_line2 = models.CharField("address line 2", max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=100, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2, e.g. US")
    tax_id = models.CharField(max_length=50, blank=True)
    stripe_customer_id = models.CharField(max_length=64, blank=True, db_index=True)
    stripe_synced_hash = models.CharField(max_length=64, blank=True, editable=False,
                                          help_text="What was last sent to Stripe (name, email, address).")
    collection_method = models.CharField(
        max_length=32, choices=CollectionMethod.choices, default=CollectionMethod.CHARGE_AUTOMATICALLY
    )
    days_until_due = models.PositiveIntegerField(
        null=True, blank=True, help_text="For 'send invoice': days the customer has to pay."
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.key})"

    @property
    def address(self) -> dict[str, str] | None:
        parts = {
            "line1": self.address_line1,
            "line2": self.address_line2,
            "city": self.city,
            "state": self.state,
            "postal_code": self.postal_code,
            "country": self.country,
        }
        return {k: v for k, v in parts.items() if v} or None


class KongConsumer(models.Model):
    """A consumer known to a Kong gateway (imported from its Admin API). Events name it as
    ``consumer:<id>`` or by username, so both are attributed when a customer includes it."""

    kong_id = models.CharField(max_length=64, unique=True)
    username = models.CharField(max_length=255, null=True, blank=True, unique=True)
    custom_id = models.CharField(max_length=255, blank=True)
    tags = models.JSONField(default=list, blank=True)
    admin_url = models.CharField(max_length=500, blank=True, help_text="The Kong Admin API it was imported from.")
    imported_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["username", "kong_id"]

    def __str__(self) -> str:
        return self.username or self.kong_id

    @property
    def subjects(self) -> list[str]:
        return [s for s in (f"consumer:{self.kong_id}", self.username) if s]


def window_covers(start: dt.datetime | None, end: dt.datetime | None, instant: dt.datetime) -> bool:
    """The attribution rule at one instant: ``instant`` lies in ``[start, end)``, where a missing start is the
    beginning of time and a missing end is open."""
    return (start is None or start <= instant) and (end is None or instant < end)


def window_clip(
    start: dt.datetime | None, end: dt.datetime | None, a: dt.datetime, b: dt.datetime
) -> tuple[dt.datetime, dt.datetime] | None:
    """The attribution rule over a range: the part of ``[a, b)`` inside ``[start, end)`` (None when empty)."""
    lo = a if start is None else max(a, start)
    hi = b if end is None else min(b, end)
    return (lo, hi) if lo < hi else None


def windows_overlap(
    first: tuple[dt.datetime | None, dt.datetime | None], second: tuple[dt.datetime | None, dt.datetime | None]
) -> bool:
    """Whether two windows ``(start, end)`` (None: unbounded) share an instant."""
    (a1, b1), (a2, b2) = first, second
    return (b2 is None or a1 is None or a1 < b2) and (b1 is None or a2 is None or a2 < b1)


def format_instant(value: dt.datetime) -> str:
    """For people: ``2026-11-20`` at midnight UTC, else ``2026-11-20 14:30 UTC`` (seconds when present)."""
    value = value.astimezone(dt.UTC)
    if value.time() == dt.time(0):
        return f"{value:%Y-%m-%d}"
    if value.second == 0 and value.microsecond == 0:
        return f"{value:%Y-%m-%d %H:%M} UTC"
    return f"{value:%Y-%m-%d %H:%M:%S} UTC"


class SubjectAttributionQuerySet(models.QuerySet):
    def overlapping(self, a: dt.datetime, b: dt.datetime) -> SubjectAttributionQuerySet:
        """Mappings whose window meets ``[a, b)`` (the database form of :func:`window_clip`)."""
        return self.filter(Q(start__isnull=True) | Q(start__lt=b), Q(end__isnull=True) | Q(end__gt=a))


class SubjectAttribution(models.Model):
    """ "Include usage from": the customer pays for this subject's events in ``[start, end)``.

    A missing ``start`` means from the beginning: a subject included without dates counts all its usage
    (each subscription still bills only from its own start). Dates exist where a subject moved between
    customers: the move ends the old mapping exactly where the new one starts, so usage already billed never
    moves. The windows of one subject never overlap (the services check it under a lock; the database keeps
    one open mapping and one unbounded start per subject).

    :meth:`covers` and :meth:`clip` are the rule; everything that asks "is this subject the customer's at
    ``t`` / over ``[a, b)``?" uses them (or :func:`window_covers` / :func:`window_clip` on raw rows).
    """

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="attributions")
    subject = models.CharField(max_length=255)
    kong_consumer = models.ForeignKey(
        KongConsumer, null=True, blank=True, on_delete=models.SET_NULL, related_name="attributions"
    )
    start = models.DateTimeField(
        null=True, blank=True, help_text="Empty: from the beginning (all the subject's usage counts)."
    )
    end = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = SubjectAttributionQuerySet.as_manager()

    class Meta:
        ordering = ["subject", "start"]
        constraints = [
            models.UniqueConstraint(
                fields=["subject"], condition=Q(end__isnull=True), name="customers_one_open_attribution_per_subject"
            ),
            models.UniqueConstraint(
                fields=["subject"], condition=Q(start__isnull=True), name="customers_one_unbounded_start_per_subject"
            ),
            models.CheckConstraint(
                condition=Q(end__isnull=True) | Q(start__isnull=True) | Q(end__gt=models.F("start")),
                name="customers_attribution_end_after_start",
            ),
        ]
        indexes = [models.Index(fields=["subject", "start"], name="customers_attr_subject")]

    def __str__(self) -> str:
        return f"{self.subject} → {self.customer.key}"

    def covers(self, instant: dt.datetime) -> bool:
        return window_covers(self.start, self.end, instant)

    def clip(self, a: dt.datetime, b: dt.datetime) -> tuple[dt.datetime, dt.datetime] | None:
        return window_clip(self.start, self.end, a, b)

    @property
    def window_text(self) -> str:
        """``from 2026-11-20``, ``until 2026-11-20``, ``from … until …`` or ``from the beginning``."""
        parts = []
        if self.start is not None:
            parts.append(f"from {format_instant(self.start)}")
        if self.end is not None:
            parts.append(f"until {format_instant(self.end)}")
        return " ".join(parts) or "from the beginning"


class Subscription(models.Model):
    """A customer on a pinned plan version from ``start`` until ``cancel_at`` (exclusive; open when null).

    Billing periods are ``billing_anchor + n × cadence`` for every integer n (computed, never chained), clipped
    to the subscription; a plan change ends this subscription and starts a ``next`` one at the same instant.
    """

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="subscriptions")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="subscriptions")
    start = models.DateTimeField()
    billing_anchor = models.DateTimeField()
    cancel_at = models.DateTimeField(null=True, blank=True, help_text="The subscription ends here (exclusive).")
    canceled_at = models.DateTimeField(null=True, blank=True, help_text="When the cancellation was requested.")
    previous = models.OneToOneField("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="next")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-start", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(cancel_at__isnull=True) | Q(cancel_at__gte=models.F("start")),
                name="customers_subscription_cancel_after_start",
            ),
        ]
        indexes = [models.Index(fields=["customer", "start"], name="customers_sub_customer")]

    def __str__(self) -> str:
        return f"{self.customer.key} on {self.plan.key} v{self.plan.version}"

    def status_at(self, instant) -> str:
        if instant < self.start:
            return "scheduled"
        if self.cancel_at is not None and instant >= self.cancel_at:
            return "ended" if self.cancel_at > self.start else "canceled"
        return "active" if self.cancel_at is None else "canceling"


class SubscriptionEvent(models.Model):
    """Who did what to a subscription, and when (append-only)."""

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="log")
    action = models.CharField(max_length=32)
    detail = models.TextField(blank=True)
    actor = models.CharField(max_length=150, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.subscription_id} by {self.actor or 'system'}"


class UnbilledSubject(SubjectActivity):
    """Subjects seen in events that no customer includes now: usage nobody is billed for (admin list)."""

    class Meta:
        proxy = True
        verbose_name = "unbilled subject"
        verbose_name_plural = "unbilled subjects (no customer)"
