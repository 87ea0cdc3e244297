"""Prepaid credits: grants and the append-only ledger whose sums are every balance.

A **grant** is a promise of credit to a customer in its currency: its amount (minor units), priority (lower is
burnt first), effective time, optional expiry, what it applies to (every charge, or some features), and its
source. What is left of a grant, and a customer's balance, are never stored: they are sums of **ledger
entries**, each an amount (minor units, signed) with its time, who or what caused it and why:

- ``grant`` (+): the grant's amount becomes available (at once, or when the invoice of a purchase is paid);
- ``burn`` (−): credits paying lines of an invoice (written in the invoice's transaction, naming it);
- ``expiry`` (−): the remainder of a grant past its expiry (once, by the beat job); also beside a ``return`` to a
  grant that had expired, so the returned amount stays expired;
- ``void`` (−): what is left of a voided grant (and beside a ``return`` to a voided grant);
- ``return`` (+): a burn given back when its invoice is voided (once per burn: a unique constraint);
- ``adjustment`` (±): a manual correction by staff, with a required reason.

So for every grant and customer: balance = grants − burns − expiries − voids + returns ± adjustments, and no
service lets it go below zero (each locks the customer's row first, as the invoicing services do).

``invoice_id`` on an entry is a plain number, not a foreign key: ``credits`` sits below ``invoicing``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from customers.models import Customer


class CreditGrant(models.Model):
    class Source(models.TextChoices):
        PROMOTIONAL = "promotional"
        PURCHASED = "purchased", "Purchased (top-up)"
        MANUAL = "manual"
        RECURRING = "recurring", "Recurring (plan)"

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="credit_grants")
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField(help_text="Minor units of the currency; positive.")
    priority = models.PositiveIntegerField(default=100, help_text="Lower is used first.")
    effective_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)
    applies_to = models.JSONField(default=list, blank=True,
                                  help_text="Feature keys this grant pays for; empty: every charge.")
    source = models.CharField(max_length=16, choices=Source.choices, default=Source.MANUAL)
    description = models.CharField(max_length=500, blank=True)
    # A recurring grant of a plan's rate card: "<subscription id>:<rate card key>:<period start>", unique, so a
    # period's grant is made once however often the job runs.
    recurring_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    # A purchase (top-up) waiting for its invoice: available once that invoice is paid (plain id: see the module).
    purchase_invoice_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_by_label = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["customer", "priority", "effective_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="credits_grant_positive"),
            models.CheckConstraint(condition=Q(expires_at__isnull=True) | Q(expires_at__gt=F("effective_at")),
                                   name="credits_grant_expires_after_effective"),
        ]
        indexes = [models.Index(fields=["customer", "effective_at"], name="credits_grant_customer")]
        permissions = [("manage_credits", "Can grant, adjust and void prepaid credits")]

    def __str__(self) -> str:
        return f"grant #{self.pk} ({self.get_source_display()})"


class LedgerEntry(models.Model):
    class Kind(models.TextChoices):
        GRANT = "grant"
        BURN = "burn", "Burn (applied on an invoice)"
        EXPIRY = "expiry"
        VOID = "void"
        RETURN = "return", "Return (invoice voided)"
        ADJUSTMENT = "adjustment"

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="credit_entries")
    grant = models.ForeignKey(CreditGrant, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.BigIntegerField(help_text="Minor units, signed: what the entry adds to the grant's remainder.")
    at = models.DateTimeField()
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    actor_label = models.CharField(max_length=150, blank=True, help_text="Who or what caused it.")
    reason = models.CharField(max_length=500, blank=True)
    invoice_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    invoice_line_id = models.BigIntegerField(null=True, blank=True)
    returns = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                help_text="The burn a return gives back.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["customer", "at", "id"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.UniqueConstraint(fields=["returns"], condition=Q(kind="return"), name="credits_return_once"),
            models.UniqueConstraint(fields=["grant"], condition=Q(kind="grant"), name="credits_grant_entry_once"),
            models.CheckConstraint(
                condition=(Q(kind__in=["grant", "return"], amount__gt=0)
                           | Q(kind__in=["burn", "expiry", "void"], amount__lt=0)
                           | Q(kind="adjustment")),
                name="credits_entry_sign"),
        ]
        indexes = [models.Index(fields=["customer", "at"], name="credits_entry_customer_at")]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount} on grant #{self.grant_id}"


class AutoTopUp(models.Model):
    """A customer's auto top-up: when the live balance falls below ``threshold``, buy ``amount``, once per
    crossing, at most ``max_per_period`` times per calendar month."""

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="auto_top_up")
    enabled = models.BooleanField(default=True)
    threshold = models.BigIntegerField(help_text="Minor units.")
    amount = models.BigIntegerField(help_text="Minor units bought each time.")
    max_per_period = models.PositiveIntegerField(default=3)
    priority = models.PositiveIntegerField(default=100)
    available_immediately = models.BooleanField(default=False,
                                                help_text="Credits usable at once, not when the invoice is paid.")

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0, threshold__gte=0),
                                              name="credits_auto_top_up_positive")]

    def __str__(self) -> str:
        return f"auto top-up of {self.customer}"


class AutoTopUpRun(models.Model):
    """One auto top-up: unique per customer, month and sequence number, so two closes crossing the threshold at
    once buy once."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    period = models.CharField(max_length=7, help_text="YYYY-MM (UTC).")
    sequence = models.PositiveIntegerField()
    grant = models.OneToOneField(CreditGrant, on_delete=models.PROTECT, related_name="auto_top_up_run")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["customer", "period", "sequence"],
                                               name="credits_one_top_up_per_crossing")]

    def __str__(self) -> str:
        return f"auto top-up {self.period} #{self.sequence} of customer {self.customer_id}"


class LowBalanceAlert(models.Model):
    """A customer's low-credit alert: ``credits.low`` is announced when its live credits (``available``: balance less
    the current period's usage not yet invoiced) fall below ``threshold`` — once per crossing: ``low_since`` records
    the announcement, and is cleared (the alert re-armed) when ``available`` is back at or above the threshold."""

    customer = models.OneToOneField(Customer, on_delete=models.CASCADE, related_name="low_balance_alert")
    enabled = models.BooleanField(default=True)
    threshold = models.PositiveBigIntegerField(
        help_text="Minor units of the customer's currency (e.g. 5000 = 50.00 USD): credits.low is announced when the "
                  "available credits fall below it.")
    low_since = models.DateTimeField(
        null=True, blank=True,
        help_text="When credits.low was announced for the current crossing; empty: armed (available is at or above "
                  "the threshold).")

    class Meta:
        verbose_name = "low-credit alert"

    def __str__(self) -> str:
        return f"low-credit alert of {self.customer}"
