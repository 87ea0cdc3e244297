"""Admin forms of the catalog app: features, rate cards, plans, the cost box and the live price preview. They run
the catalog's rules (``catalog.rules``), so a save the services would refuse is a form error first."""

from __future__ import annotations

from decimal import Decimal
from typing import cast

from django import forms
from django.core.exceptions import ValidationError

from common.fields import PreciseDecimalField
from common.forms import DecimalTextField, parse_plain_decimal

from .models import Feature, Plan, RateCard
from .rules import clean_currency, currency_problem, engine_price, feature_filter_problems, rate_card_problems


class FeatureForm(forms.ModelForm):
    meter_group_by_filters = forms.JSONField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text='Equality on the meter\'s group-by values, e.g. {"provider": "openai", "type": "request"}.',
    )

    class Meta:
        model = Feature
        fields = ("key", "name", "meter", "meter_group_by_filters")

    def clean(self):
        super().clean()
        data = self.cleaned_data
        meter = data.get("meter")
        problems = feature_filter_problems(data.get("meter_group_by_filters") or {}, meter.group_by if meter else None)
        if problems:
            self.add_error("meter_group_by_filters", "; ".join(problems))
        return data


class RateCardForm(forms.ModelForm):
    class Meta:
        model = RateCard
        fields = (
            "key",
            "name",
            "feature",
            "price_type",
            "amount",
            "unit_amount",
            "quantity_per_package",
            "payment_term",
            "free_quantity",
            "minimum_spend",
            "maximum_spend",
            "entitlement_type",
            "entitlement_limit",
            "entitlement_soft",
            "entitlement_usage_period",
            "entitlement_credits",
            "credit_grant",
            "entitlement_config",
        )

    def clean(self):
        super().clean()
        data = self.cleaned_data
        feature = data.get("feature")
        price_type = data.get("price_type") or ""
        placeholder = Decimal(1)  # tiers are checked on publish, on the plan page
        price = None
        if price_type in ("flat", "unit", "package"):
            price = engine_price(
                price_type,
                amount=data.get("amount"),
                unit_amount=data.get("unit_amount"),
                quantity_per_package=data.get("quantity_per_package"),
            )
        problems = rate_card_problems(
            key=data.get("key") or "?",
            price_type=price_type,
            price=price,
            has_feature=feature is not None,
            feature_metered=bool(feature and feature.meter_id),
            payment_term=data.get("payment_term") or "",
            minimum_spend=data.get("minimum_spend"),
            maximum_spend=data.get("maximum_spend"),
            free_quantity=data.get("free_quantity"),
            entitlement_type=data.get("entitlement_type") or "",
            entitlement_limit=data.get("entitlement_limit")
            if data.get("entitlement_type") == "metered"
            else placeholder,
            entitlement_config=data.get("entitlement_config"),
        )
        for problem in problems:
            self.add_error(None, problem)
        return data


class PlanForm(forms.ModelForm):
    class Meta:
        model = Plan
        fields = ("key", "name", "description", "currency", "billing_cadence")

    def clean_currency(self):
        """``usd`` is stored as ``USD``; an unknown code is refused on save (the rule of ``plan_create``)."""
        currency = clean_currency(self.cleaned_data.get("currency"))
        problem = currency_problem(currency)
        if problem:
            raise ValidationError(problem)
        return currency


class CostForm(forms.Form):
    """The *What would this cost?* box: a quantity for one period (digits and one dot, like every decimal)."""

    quantity = DecimalTextField(
        min_value=0, max_digits=38, decimal_places=15, initial=Decimal(1000), label="Quantity in a period"
    )


def _price_field(name: str) -> forms.Field:
    """The rate card form's own field (same digits, decimal places and parser), optional."""
    model_field = cast(PreciseDecimalField, RateCard._meta.get_field(name))
    return cast(forms.Field, model_field.formfield(required=False))


class PricePreviewForm(forms.Form):
    """What the rate card form holds while someone types (nothing is saved): read with the same fields."""

    price_type = forms.ChoiceField(choices=RateCard.PriceType.choices, required=False)
    payment_term = forms.ChoiceField(choices=RateCard.PaymentTerm.choices, required=False)
    feature = forms.ModelChoiceField(Feature.objects.select_related("meter"), required=False)
    rate_card = forms.ModelChoiceField(RateCard.objects.all(), required=False)
    currency = forms.CharField(required=False, max_length=16)
    cadence = forms.ChoiceField(choices=[("", ""), *Plan.Cadence.choices], required=False)
    amount = _price_field("amount")
    unit_amount = _price_field("unit_amount")
    quantity_per_package = _price_field("quantity_per_package")
    free_quantity = _price_field("free_quantity")
    minimum_spend = _price_field("minimum_spend")
    maximum_spend = _price_field("maximum_spend")

    def clean_currency(self):
        currency = clean_currency(self.cleaned_data.get("currency") or "")
        problem = currency_problem(currency)
        if problem:
            raise ValidationError(problem)
        return currency


class PreviewTier:
    def __init__(self, up_to, unit_amount, flat_amount) -> None:
        self.up_to, self.unit_amount, self.flat_amount = up_to, unit_amount, flat_amount


def preview_tiers(query) -> tuple[list[PreviewTier], list[str]]:
    """Tiers typed in the rate card page's tier rows: ``tier_up_to``/``tier_unit_amount``/``tier_flat_amount``
    (repeated, in order; ``tier_position`` sorts them as the saved rate card will)."""
    columns = [query.getlist(f"tier_{name}") for name in ("position", "up_to", "unit_amount", "flat_amount")]
    count = max(len(c) for c in columns)
    if count > 100:
        return [], ["too many tiers"]
    rows, errors = [], []
    for i in range(count):
        values: list[Decimal | None] = []
        for column, label in zip(columns, ("position", "up to", "unit amount", "flat amount"), strict=True):
            text = column[i] if i < len(column) else ""
            try:
                values.append(parse_plain_decimal(text) if text.strip() else None)
            except ValidationError as exc:
                errors.append(f"tier {i + 1} {label}: {' '.join(exc.messages)}")
                values.append(None)
        position, up_to, unit, flat = values
        tier = PreviewTier(up_to, unit if unit is not None else Decimal(0), flat if flat is not None else Decimal(0))
        rows.append((position if position is not None else Decimal(i), i, tier))
    return [tier for _, _, tier in sorted(rows, key=lambda r: (r[0], r[1]))], errors
