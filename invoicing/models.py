"""Invoices, their lines, credit notes, the cycle-close state machine, number sequences, and the audit log.

Cycle ``k`` of a subscription closes at its boundary ``k`` (the subscription's start for k = 0, then the end of
each billing period). Every close bills, for each subscription, rate card and billing period it is due for,
``rated − already billed`` (the re-rating rule, :mod:`invoicing.services.lines`); each line carries its own
subscription and period, so "already billed" is a sum over lines. One invoice per subscription and cycle
(database constraint, voided invoices aside); issued invoices and their lines never change: corrections are a
void plus a new invoice, or a credit note against the invoice. No invoice total is ever negative.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from catalog.models import Feature, RateCard
from common.fields import PreciseDecimalField
from credits.models import CreditGrant
from customers.models import Customer, Subscription


class Invoice(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        ISSUED = "issued"
        PAID = "paid"
        VOID = "void"
        UNCOLLECTIBLE = "uncollectible"

    class SyncStatus(models.TextChoices):
        NOT_SYNCED = "not_synced", "Not synced"
        SANDBOX = "sandbox", "Sandbox (no Stripe key)"
        SYNCING = "syncing"
        SYNCED = "synced"
        FAILED = "failed"

    # Indexed by invoicing_customer_period (its first column).
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices", db_index=False)
    # None on a credit top-up's own invoice (credits bought between cycles).
    subscription = models.ForeignKey(Subscription, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="invoices")
    cycle = models.PositiveIntegerField(null=True, blank=True,
                                        help_text="Boundary k of the subscription this invoice closes.")
    currency = models.CharField(max_length=3)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    number = models.CharField(max_length=40, null=True, blank=True)
    subtotal = models.BigIntegerField(default=0, help_text="Minor units of the currency.")
    total = models.BigIntegerField(default=0, help_text="Minor units of the currency.")
    created_at = models.DateTimeField(auto_now_add=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    replaces = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="replaced_by",
        help_text="The voided invoice this one corrects.",
    )
    # Stripe (see invoicing.services.stripe_push): state of the push, recorded before each step.
    sync_status = models.CharField(max_length=16, choices=SyncStatus.choices, default=SyncStatus.NOT_SYNCED)
    sync_error = models.TextField(blank=True)
    sync_attempts = models.PositiveIntegerField(default=0)
    stripe_invoice_id = models.CharField(max_length=64, blank=True)
    stripe_number = models.CharField(max_length=64, blank=True)
    stripe_hosted_url = models.URLField(max_length=500, blank=True)
    stripe_status = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-period_start", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["subscription", "cycle"], condition=~Q(status="void"), name="invoicing_one_invoice_per_cycle"
            ),
            models.UniqueConstraint(fields=["number"], name="invoicing_invoice_number_unique"),
        ]
        # Each index is paid by every invoice a close writes (and its number's update): one per lookup, no more.
        # As a constraint and Meta indexes, not unique/db_index on the fields, which on PostgreSQL add a second
        # ``varchar_pattern_ops`` index per text column for LIKE searches nothing makes.
        indexes = [
            models.Index(fields=["customer", "-period_start"], name="invoicing_customer_period"),
            models.Index(fields=["status"], name="invoicing_invoice_status"),
            models.Index(fields=["sync_status"], name="invoicing_invoice_sync_status"),
        ]
        permissions = [
            ("issue_invoice", "Can issue, void, mark paid or uncollectible, reissue, close cycles and sync invoices"),
            ("preview_invoice", "Can preview invoices"),
        ]

    def __str__(self) -> str:
        return self.number or f"draft #{self.pk}"



class InvoiceLine(models.Model):
    class Kind(models.TextChoices):
        USAGE = "usage"
        FLAT_FEE = "flat_fee", "Flat fee"
        MINIMUM_SPEND = "minimum_spend", "Minimum spend"
        DISCOUNT = "discount", "Discount (maximum spend)"
        LATE_USAGE = "late_usage", "Late usage"
        CREDIT = "credit", "Credit (unused fee or lower usage)"
        CREDITS_APPLIED = "credits_applied", "Credits applied (prepaid)"
        CREDIT_TOP_UP = "credit_top_up", "Credit top-up (purchase)"

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    # The subscription whose rate card and period this line bills: usually the invoice's, or the subscription a
    # plan change replaced (its last usage and unused fees are billed on the new subscription's invoice).
    # None on a credit top-up line (a purchase of prepaid credits, billed to no subscription). Indexed by
    # invoicing_line_sub_period (its first column).
    subscription = models.ForeignKey(Subscription, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                     db_index=False)
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # None on a "Credits applied" line: prepaid credits of ``grant`` paying lines of the invoice (negative amount;
    # never counted as billed by the re-rating rule).
    rate_card = models.ForeignKey(RateCard, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    rate_card_key = models.CharField(max_length=64, blank=True)
    feature = models.ForeignKey(Feature, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    grant = models.ForeignKey(CreditGrant, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    description = models.CharField(max_length=500)
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    quantity = PreciseDecimalField()
    unit_price = PreciseDecimalField(null=True, blank=True)
    tiers = models.JSONField(default=list, blank=True, help_text="Tier breakdown of graduated and volume prices.")
    amount = models.BigIntegerField(help_text="Minor units, rounded once (ROUND_HALF_UP).")
    rated_quantity = PreciseDecimalField(
        null=True, blank=True, help_text="Usage lines: the period's whole usage when this line was rated."
    )
    stripe_item_id = models.CharField(max_length=64, blank=True, help_text="Set once pushed to Stripe.")
    # Dimensional prices: the row version this line bills (re-rating compares rated and billed per part; "" for
    # the rate card as a whole) and the row's match, e.g. {"model": "gpt-4o", "type": "request"}.
    price_part = models.CharField(max_length=500, blank=True, default="")
    dimensions = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["invoice", "position", "id"]
        indexes = [
            models.Index(fields=["subscription", "period_start"], name="invoicing_line_sub_period"),
        ]

    def __str__(self) -> str:
        return self.description


class CycleClose(models.Model):
    """The close of one cycle of one subscription, with its state recorded before each step, so a rerun
    after a crash continues where it stopped and two closers never bill the same cycle."""

    class State(models.TextChoices):
        CLAIMED = "claimed"
        DRAFTED = "drafted", "Invoice drafted"
        ISSUED = "issued"
        EMPTY = "empty", "Nothing to bill"
        HELD = "held", "Draft held for review"
        CARRIED = "carried", "Billed with the next subscription"

    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="cycle_closes")
    cycle = models.PositiveIntegerField()
    boundary = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLAIMED)
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    review_until = models.DateTimeField(null=True, blank=True, help_text="A held draft is issued after this.")
    closed_at = models.DateTimeField(null=True, blank=True, help_text="The time the lines were computed for.")
    error = models.TextField(blank=True, help_text="Why the last attempt failed; the cycle stays held until it works.")
    failed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["subscription", "cycle"], name="invoicing_one_close_per_cycle")]

    # The states of a cycle whose lines are computed (its invoice, if any, exists and its credits are burned).
    DONE_STATES = (State.ISSUED, State.EMPTY, State.HELD, State.CARRIED)

    def __str__(self) -> str:
        return f"{self.subscription_id}#{self.cycle} {self.state}"


class CreditNote(models.Model):
    """A credit to a customer against the issued invoice it corrects: unused in-advance fees of a period cut
    short, usage rated lower than billed, or a manual correction. Numbered gaplessly in its own sequence when
    issued; its total is positive (minor units); it never changes once issued, only voids."""

    class Status(models.TextChoices):
        ISSUED = "issued"
        VOID = "void"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="credit_notes")
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="credit_notes")
    number = models.CharField(max_length=40, unique=True)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ISSUED, db_index=True)
    reason = models.TextField()
    total = models.BigIntegerField(help_text="Minor units; positive.")
    issued_at = models.DateTimeField()
    voided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sync_status = models.CharField(
        max_length=16, choices=Invoice.SyncStatus.choices, default=Invoice.SyncStatus.NOT_SYNCED, db_index=True
    )
    sync_error = models.TextField(blank=True)
    sync_attempts = models.PositiveIntegerField(default=0)
    stripe_credit_note_id = models.CharField(max_length=64, blank=True)
    stripe_status = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-issued_at", "-id"]
        constraints = [models.CheckConstraint(condition=Q(total__gt=0), name="invoicing_credit_note_positive")]

    def __str__(self) -> str:
        return self.number


class CreditNoteLine(models.Model):
    """One credited amount (positive minor units). Lines of kind ``rerating`` credit a subscription's rate card
    for a period and count against what that period has billed; ``adjustment`` lines are manual corrections."""

    class Kind(models.TextChoices):
        RERATING = "rerating", "Re-rating (unused fee or lower usage)"
        ADJUSTMENT = "adjustment", "Manual correction"

    credit_note = models.ForeignKey(CreditNote, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    subscription = models.ForeignKey(Subscription, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    rate_card = models.ForeignKey(RateCard, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    rate_card_key = models.CharField(max_length=64, blank=True)
    description = models.CharField(max_length=500)
    period_start = models.DateTimeField(null=True, blank=True)
    period_end = models.DateTimeField(null=True, blank=True)
    quantity = PreciseDecimalField(default=1)
    amount = models.BigIntegerField(help_text="Minor units credited; positive.")
    price_part = models.CharField(max_length=500, blank=True, default="", help_text="Dimensional price: the row.")

    class Meta:
        ordering = ["credit_note", "position", "id"]
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="invoicing_credit_line_positive")]
        indexes = [models.Index(fields=["subscription", "period_start"], name="invoicing_cnline_sub_period")]

    def __str__(self) -> str:
        return self.description


class InvoiceNumberSequence(models.Model):
    """Gapless numbers per prefix and year: the row is locked while a number is assigned, inside the
    issuing transaction, so a rolled-back issue never burns a number."""

    prefix = models.CharField(max_length=20)
    year = models.PositiveIntegerField()
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["prefix", "year"], name="invoicing_sequence_prefix_year")]

    def __str__(self) -> str:
        return f"{self.prefix}-{self.year}: {self.last_number}"


class InvoiceEvent(models.Model):
    """Who did what to an invoice (or one of its credit notes), and when (append-only)."""

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="log")
    credit_note = models.ForeignKey(CreditNote, null=True, blank=True, on_delete=models.CASCADE, related_name="log")
    action = models.CharField(max_length=32)
    detail = models.TextField(blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_label = models.CharField(max_length=150, blank=True, help_text="system, beat, stripe, or a user name")
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.invoice_id}"


class StripeWebhookEvent(models.Model):
    """Each Stripe event, stored once (unique event id) before it is handled; duplicates are answered 200."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100, db_index=True)
    payload = models.JSONField()
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True)
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.SET_NULL, related_name="stripe_events")

    class Meta:
        ordering = ["-received_at", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


# --- Settings (one row each) ----------------------------------------------------------------------------------

LOGO_MAX_BYTES = 512 * 1024
LOGO_CONTENT_TYPES = ("image/png", "image/jpeg")


class CompanyProfile(models.Model):
    """Settings → Company: the seller on every invoice and credit note (one row, pk 1; see
    :mod:`invoicing.services.company`). The logo is kept in the database (PNG or JPEG, at most
    :data:`LOGO_MAX_BYTES`), checked by its content, not its name."""

    legal_name = models.CharField(max_length=200, blank=True)
    street_line1 = models.CharField("street line 1", max_length=200, blank=True)
    street_line2 = models.CharField("street line 2", max_length=200, blank=True)
    postal_code = models.CharField(max_length=20, blank=True)
    city = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=100, blank=True, help_text="State, province or prefecture.")
    country = models.CharField(max_length=2, blank=True, help_text="ISO 3166-1 alpha-2, e.g. US")
    tax_id = models.CharField("tax ID", max_length=50, blank=True)
    email = models.EmailField(blank=True, help_text="Where customers write about their invoices.")
    logo = models.BinaryField(null=True, blank=True, editable=False)
    logo_content_type = models.CharField(max_length=20, blank=True, editable=False)
    payment_instructions = models.TextField(blank=True, max_length=2000,
                                            help_text="Bank details or how to pay, printed on every invoice.")
    invoice_footer = models.TextField(blank=True, max_length=1000,
                                      help_text="Printed at the bottom of every invoice and credit note.")
    locale = models.CharField(max_length=20, default="en_US",
                              help_text="How amounts, numbers and dates are written: a locale such as en_US, de_DE.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "company"
        verbose_name_plural = "company"

    def __str__(self) -> str:
        return self.legal_name or "Company"


class StripeSettings(models.Model):
    """Settings → Stripe: keys entered in the admin, encrypted (:mod:`common.crypto`); environment variables
    win over them. Only the last four characters are ever shown. One row, pk 1."""

    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_last4 = models.CharField(max_length=4, blank=True, editable=False)
    webhook_secret_encrypted = models.TextField(blank=True, editable=False)
    webhook_secret_last4 = models.CharField(max_length=4, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.CharField(max_length=150, blank=True, editable=False)
    tested_at = models.DateTimeField(null=True, blank=True, editable=False)
    test_result = models.TextField(blank=True, editable=False)

    class Meta:
        verbose_name = "Stripe"
        verbose_name_plural = "Stripe"

    def __str__(self) -> str:
        return "Stripe settings"
