"""Models of the catalog: features, versioned plans, rate cards with prices, tiers and entitlement templates.

A published plan version is frozen: the services refuse to change it, the admin shows it read-only, and
"edit" makes a new draft version. Subscriptions pin a version.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from common.fields import PreciseDecimalField
from common.forms import plain_decimal
from metering.models import Meter

KEY_MAX = 64


class Feature(models.Model):
    """Something customers get: metered (a meter, optionally filtered by group-by values) or not (boolean or
    static entitlements only)."""

    key = models.CharField(max_length=KEY_MAX, unique=True)
    name = models.CharField(max_length=200)
    meter = models.ForeignKey(Meter, null=True, blank=True, on_delete=models.PROTECT, related_name="features")
    meter_group_by_filters = models.JSONField(
        default=dict,
        blank=True,
        help_text='Equality filters on the meter\'s group-by values, e.g. {"provider": "openai"}.',
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        """What pickers and lists show: the name people gave it, with the key beside it."""
        return f"{self.name} ({self.key})" if self.name and self.name != self.key else self.key


def _duration(duration: str, name: str) -> tuple[str, str]:
    """A choice whose value is an ISO 8601 duration and whose label names it, the duration shown after."""
    return duration, f"{name} ({duration})"


class Plan(models.Model):
    class Cadence(models.TextChoices):
        """ISO 8601 durations, as the API and catalog as code write a plan's billing cadence (and its label shows)."""

        DAILY = _duration("P1D", "Daily")
        WEEKLY = _duration("P1W", "Weekly")
        MONTHLY = _duration("P1M", "Monthly")
        QUARTERLY = _duration("P3M", "Quarterly")
        YEARLY = _duration("P1Y", "Yearly")

    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLISHED = "published"
        ARCHIVED = "archived"

    key = models.CharField(max_length=KEY_MAX)
    version = models.PositiveIntegerField(default=1)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    currency = models.CharField(max_length=3, help_text="ISO 4217, e.g. USD")
    billing_cadence = models.CharField(max_length=8, choices=Cadence.choices, default=Cadence.MONTHLY)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    archived_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["key", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["key", "version"], name="catalog_plan_key_version"),
            models.UniqueConstraint(fields=["key"], condition=Q(status="draft"), name="catalog_plan_one_draft"),
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.status})"

    @property
    def is_editable(self) -> bool:
        return self.status == self.Status.DRAFT


class RateCard(models.Model):
    # Each set of choices stands just above the field that takes it.
    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="rate_cards")
    position = models.PositiveIntegerField(default=0)
    key = models.CharField(max_length=KEY_MAX)
    name = models.CharField(max_length=200, blank=True)
    feature = models.ForeignKey(Feature, null=True, blank=True, on_delete=models.PROTECT, related_name="rate_cards")

    class PriceType(models.TextChoices):
        NONE = "", "No price (entitlement only)"
        FLAT = "flat", "Flat fee"
        UNIT = "unit", "Per unit (usage-based)"
        GRADUATED = "graduated", "Graduated tiers"
        VOLUME = "volume", "Volume tiers"
        PACKAGE = "package"
        DIMENSIONAL = "dimensional", "Dimensional (a price table by model, type…)"

    price_type = models.CharField(max_length=16, choices=PriceType.choices, blank=True, default="")
    amount = PreciseDecimalField(null=True, blank=True, help_text="Flat fee, or the price of one package.")
    unit_amount = PreciseDecimalField(null=True, blank=True, help_text="Price per unit, e.g. 0.000003 per token.")
    quantity_per_package = PreciseDecimalField(null=True, blank=True)

    class PaymentTerm(models.TextChoices):
        IN_ADVANCE = "in_advance", "In advance"
        IN_ARREARS = "in_arrears", "In arrears"

    payment_term = models.CharField(max_length=16, choices=PaymentTerm.choices, default=PaymentTerm.IN_ARREARS)
    minimum_spend = PreciseDecimalField(null=True, blank=True, help_text="Per period; topped up with a line.")
    maximum_spend = PreciseDecimalField(null=True, blank=True, help_text="Per period; capped with a discount.")
    free_quantity = PreciseDecimalField(null=True, blank=True, help_text="Units per period not charged.")
    dimensions = models.JSONField(
        default=list, blank=True,
        help_text='Dimensional price: the meter group-by values the table is keyed by, e.g. ["model", "type"].',
    )

    class EntitlementType(models.TextChoices):
        NONE = ""
        BOOLEAN = "boolean", "Boolean (has access)"
        STATIC = "static", "Static (JSON config)"
        METERED = "metered", "Metered (limit per usage period)"

    entitlement_type = models.CharField(max_length=16, choices=EntitlementType.choices, blank=True, default="")
    entitlement_config = models.JSONField(null=True, blank=True, help_text="Static entitlement: any JSON.")
    entitlement_limit = PreciseDecimalField(null=True, blank=True, help_text="Metered entitlement: limit per period.")
    entitlement_soft = models.BooleanField(default=False, help_text="Soft limit: access continues above it.")
    entitlement_usage_period = models.CharField(
        max_length=8,
        choices=Plan.Cadence.choices,
        blank=True,
        default="",
        help_text="Metered entitlement reset period; empty: the billing period.",
    )

    class CreditMode(models.TextChoices):
        NONE = "", "No credits"
        CREDIT_ONLY = "credit_only", "Credit only (access while credits are available)"
        CREDIT_THEN_INVOICE = "credit_then_invoice", "Credit then invoice (access always; credits first)"

    entitlement_credits = models.CharField(
        max_length=24, choices=CreditMode.choices, blank=True, default="",
        help_text="Metered entitlement: how prepaid credits decide access.")
    credit_grant = models.JSONField(
        null=True, blank=True,
        help_text='Recurring credits granted each period: {"amount": "10.00", "every": "P1M", '
                  '"expires_after": "P1M", "priority": 10}.')

    class Meta:
        ordering = ["plan", "position", "id"]
        constraints = [models.UniqueConstraint(fields=["plan", "key"], name="catalog_ratecard_plan_key")]

    def __str__(self) -> str:
        return f"{self.plan.key} v{self.plan.version} / {self.key}"

    @property
    def display_name(self) -> str:
        return self.name or (self.feature.name if self.feature is not None else self.key)

    @property
    def usage_feature(self) -> Feature:
        """The feature whose usage a usage-priced rate card bills (publishing a plan requires one)."""
        if self.feature is None:
            raise ValueError(f"rate card {self.key} prices usage but has no feature")
        return self.feature


class PriceTier(models.Model):
    """One tier of a graduated or volume price. ``up_to`` is inclusive; empty on the last tier."""

    rate_card = models.ForeignKey(RateCard, on_delete=models.CASCADE, related_name="tiers")
    position = models.PositiveIntegerField(default=0)
    up_to = PreciseDecimalField(null=True, blank=True, help_text="Inclusive upper bound; empty on the last tier.")
    unit_amount = PreciseDecimalField(default=0)
    flat_amount = PreciseDecimalField(default=0)

    class Meta:
        ordering = ["rate_card", "position", "id"]

    def __str__(self) -> str:
        return f"up to {plain_decimal(self.up_to) if self.up_to is not None else '∞'}"


class PriceRow(models.Model):
    """One row of a dimensional price table: a match on some of the rate card's dimensions (missing: any value),
    or the default, and a usage price. ``effective_from`` schedules a new version of a row (same match) inside a
    published plan version; before it the earlier version (if any) prices the usage."""

    class RowPriceType(models.TextChoices):
        UNIT = "unit", "Per unit"
        GRADUATED = "graduated", "Graduated tiers"
        VOLUME = "volume", "Volume tiers"
        PACKAGE = "package"

    rate_card = models.ForeignKey(RateCard, on_delete=models.CASCADE, related_name="price_rows")
    position = models.PositiveIntegerField(default=0)
    match = models.JSONField(default=dict, blank=True, help_text='e.g. {"model": "gpt-4o", "type": "request"}')
    is_default = models.BooleanField(default=False, help_text="Prices usage no row matches.")
    effective_from = models.DateTimeField(null=True, blank=True, help_text="Empty: from the plan's start.")
    price_type = models.CharField(max_length=16, choices=RowPriceType.choices, default=RowPriceType.UNIT)
    unit_amount = PreciseDecimalField(null=True, blank=True)
    amount = PreciseDecimalField(null=True, blank=True, help_text="The price of one package.")
    quantity_per_package = PreciseDecimalField(null=True, blank=True)
    tiers = models.JSONField(
        default=list, blank=True,
        help_text='Graduated/volume: [{"up_to": "1000" or null, "unit_amount": "0.1", "flat_amount": "0"}, …]',
    )

    class Meta:
        ordering = ["rate_card", "position", "id"]

    def __str__(self) -> str:
        if self.is_default:
            return "default"
        return ", ".join(f"{k}={v}" for k, v in sorted(self.match.items())) or "any"


class ModelCost(models.Model):
    """What one model costs us per token, by token type (the cost table, kept apart from prices): filled from the
    genai-prices data by ``llm_prices import``, read by the margin report."""

    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    token_type = models.CharField(max_length=32, help_text="request, response, cache_read, cache_write…")
    cost_per_token = PreciseDecimalField()
    currency = models.CharField(max_length=3, default="USD")
    source = models.CharField(max_length=100, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["provider", "model", "token_type"]
        constraints = [models.UniqueConstraint(fields=["provider", "model", "token_type"],
                                               name="catalog_modelcost_unique")]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} {self.token_type}"
