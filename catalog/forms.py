"""Admin forms of the catalog app: features, rate cards, plans, the cost box and the live price preview. They run
the catalog's rules (``catalog.rules``), so a save the services would refuse is a form error first."""

from __future__ import annotations

import json
from decimal import Decimal
from itertools import zip_longest
from typing import cast

from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet

from common.fields import PreciseDecimalField
from common.forms import DecimalTextField, parse_plain_decimal, plain_decimal
from common.key_value import KeyValueField
from common.yaml_reader.values import nested_problem
from metering.models import Meter
from metering.selectors.events import recent_group_values

from .charges import price_row_price
from .models import Feature, Plan, PriceRow, PriceTier, RateCard
from .pricing import validate_price
from .rules import (
    CADENCES,
    CREDIT_GRANT_FIELDS,
    ENTITLEMENT_FIELDS,
    PRICE_FIELDS,
    clean_currency,
    credit_problems,
    currency_problem,
    engine_price,
    feature_filter_problems,
    rate_card_problems,
)

# The fields whose presence depends on the price type or the entitlement type (rules.PRICE_FIELDS / ENTITLEMENT_FIELDS)
PRICE_DEPENDENT = ("amount", "unit_amount", "quantity_per_package", "free_quantity", "minimum_spend", "maximum_spend")
ENTITLEMENT_DEPENDENT = ("entitlement_limit", "entitlement_usage_period", "entitlement_config")


class OptionalJSONField(forms.JSONField):
    """A JSON field whose empty value shows as an empty box, not ``null``."""

    def prepare_value(self, value):
        if value is None:
            return ""
        return super().prepare_value(value)


class FeatureForm(forms.ModelForm):
    meter_group_by_filters = KeyValueField(
        label="Meter group-by filters", key_label="group-by name", value_label="equals",
        help_text="Only usage whose group-by value equals the given one, e.g. provider = openai, type = request. "
                  "The suggestions are the meters' group-by names and the values seen in recent events.",
    )

    class Meta:
        model = Feature
        fields = ("key", "name", "meter", "meter_group_by_filters")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        meter = self.instance.meter if self.instance.pk and self.instance.meter_id else None
        self.fields["meter_group_by_filters"].widget.suggestions = lambda: recent_group_values(
            [meter] if meter is not None else Meter.objects.all()[:50])

    def clean(self):
        super().clean()
        data = self.cleaned_data
        meter = data.get("meter")
        problems = feature_filter_problems(data.get("meter_group_by_filters") or {}, meter.group_by if meter else None)
        if problems:
            self.add_error("meter_group_by_filters", "; ".join(problems))
        return data


# The recurring credit grant of a rate card (``credit_grant: {amount, every, expires_after, priority}``), one form
# field per key; the stored JSON is built from them and checked by catalog.rules.credit_problems, as on publish and
# in billing_apply.
CREDIT_FORM_FIELDS = tuple(f"credit_grant_{name}" for name in CREDIT_GRANT_FIELDS)
_CADENCE_LIST = ", ".join(CADENCES)


class RateCardForm(forms.ModelForm):
    credit_grant_amount = forms.CharField(
        label="Recurring credits: amount", required=False, max_length=40,
        widget=forms.TextInput(attrs={"inputmode": "decimal", "size": 12}),
        help_text="Free credits granted at each period start, in major units of the plan's currency (e.g. 10.00); "
                  "at most as many decimals as the currency has. Leave empty for no recurring grant.")
    credit_grant_every = forms.CharField(
        label="Granted every", required=False, max_length=8, initial="P1M",
        help_text=f"An ISO 8601 period from the subscription's billing anchor: {_CADENCE_LIST}.")
    credit_grant_expires_after = forms.CharField(
        label="Expires after", required=False, max_length=8,
        help_text=f"An ISO 8601 period after each grant ({_CADENCE_LIST}); empty: the credits never expire.")
    credit_grant_priority = forms.IntegerField(
        label="Priority", required=False, widget=forms.TextInput(attrs={"inputmode": "numeric", "size": 6}),
        help_text="A whole number from 0; lower is used first (default 100).")

    class Meta:
        model = RateCard
        fields = (
            "key",
            "name",
            "feature",
            "price_type",
            "dimensions",
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
            "entitlement_config",
        )
        field_classes = {"entitlement_config": OptionalJSONField}
        widgets = {"entitlement_config": forms.Textarea(attrs={"rows": 3, "cols": 60})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Which fields each type uses, for catalog/rate_card_form.js (shows only those): one table, in catalog.rules.
        fields = self.fields  # a read-only page (published plan) has none of them
        if "price_type" in fields:
            fields["price_type"].widget.attrs["data-fields"] = json.dumps(PRICE_FIELDS)
        if "entitlement_type" in fields:
            fields["entitlement_type"].widget.attrs["data-fields"] = json.dumps(ENTITLEMENT_FIELDS)
        if "payment_term" in fields:
            fields["payment_term"].required = False  # only a flat fee has one; usage is billed in arrears
        if "entitlement_credits" in fields:
            fields["entitlement_credits"].label = "Credit access"
            fields["entitlement_credits"].help_text = (
                "Metered entitlements only: credit only — access while the customer's available prepaid credits are "
                "above zero; credit then invoice — access always, credits pay first and the invoice the rest.")
        grant = self.instance.credit_grant if isinstance(self.instance.credit_grant, dict) else {}
        for name in CREDIT_GRANT_FIELDS:
            field = fields.get(f"credit_grant_{name}")
            if field is not None and name in grant and grant[name] is not None:
                field.initial = grant[name]

    def _plan_currency(self) -> str:
        """The plan's currency: the saved plan's, or (a new plan's page) the one typed in the plan form."""
        if self.instance.plan_id:
            return self.instance.plan.currency
        currency = clean_currency(self.data.get("currency") or "")
        return currency if isinstance(currency, str) and not currency_problem(currency) else ""

    def _clean_credits(self, data) -> None:
        """The recurring grant from its fields (all empty: none) and the credit access mode, checked by the catalog's
        own rule (``credit_problems``); each problem goes to its field."""
        if not any(name in self.fields for name in CREDIT_FORM_FIELDS):
            return  # a read-only page
        typed = {name: data.get(f"credit_grant_{name}") for name in CREDIT_GRANT_FIELDS}
        if any(f"credit_grant_{name}" in self.errors for name in CREDIT_GRANT_FIELDS):
            return
        amount = (typed["amount"] or "").strip()
        spec: dict | None = None
        if amount:
            spec = {"amount": amount, "every": (typed["every"] or "").strip() or "P1M"}
            if (typed["expires_after"] or "").strip():
                spec["expires_after"] = typed["expires_after"].strip()
            if typed["priority"] is not None:
                spec["priority"] = typed["priority"]
        elif (typed["expires_after"] or "").strip() or typed["priority"] is not None:
            self.add_error("credit_grant_amount", "Give the amount of the recurring grant, or leave its fields empty.")
            return
        problems = credit_problems(key=data.get("key") or "?", entitlement_type=data.get("entitlement_type") or "",
                                   entitlement_credits=data.get("entitlement_credits") or "", credit_grant=spec,
                                   currency=self._plan_currency())
        for problem in problems:
            text = problem.split(": ", 1)[1] if problem.startswith("rate card ") else problem
            target = "entitlement_credits"
            if text.startswith("credit_grant: "):
                text = text.removeprefix("credit_grant: ")
                word = text.split(" ", 1)[0]
                target = f"credit_grant_{word}" if word in CREDIT_GRANT_FIELDS else "credit_grant_amount"
                if word in CREDIT_GRANT_FIELDS:  # the field's label names it
                    text = text.removeprefix(word + " ")
            self.add_error(target, text[:1].upper() + text[1:] + ".")
        if not problems:
            self.instance.credit_grant = spec

    def clean_payment_term(self):
        return self.cleaned_data.get("payment_term") or RateCard.PaymentTerm.IN_ARREARS

    def _not_applicable(self, data) -> None:
        """A value in a field the chosen price or entitlement type does not use is a mistake, not ignored."""
        price_type = data.get("price_type") or ""
        entitlement_type = data.get("entitlement_type") or ""
        price_label = dict(RateCard.PriceType.choices).get(price_type, price_type) if price_type else "no price"
        used = PRICE_FIELDS.get(price_type, ())
        for name in PRICE_DEPENDENT:
            if name not in used and data.get(name) is not None and name not in self.errors:
                self.add_error(name, f"Does not apply to {str(price_label).lower()}: leave it empty.")
        if price_type != RateCard.PriceType.FLAT and data.get("payment_term") == RateCard.PaymentTerm.IN_ADVANCE:
            self.add_error("payment_term", "Only a flat fee is billed in advance; usage is billed in arrears.")
        entitlement_used = ENTITLEMENT_FIELDS.get(entitlement_type, ())
        for name in ENTITLEMENT_DEPENDENT:
            if name not in entitlement_used and data.get(name) not in (None, "") and name not in self.errors:
                self.add_error(name, "Does not apply to this entitlement type: leave it empty.")
        if "entitlement_soft" not in entitlement_used and data.get("entitlement_soft"):
            self.add_error("entitlement_soft", "Only a metered entitlement has a soft limit.")

    def clean(self):
        super().clean()
        data = self.cleaned_data
        self._not_applicable(data)
        self._clean_credits(data)
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
        dimensions = data.get("dimensions") or []
        if nested_problem(dimensions):
            self.add_error("dimensions", str(nested_problem(dimensions)))
            dimensions = data["dimensions"] = []
        if price_type == "dimensional":
            group_by = (feature.meter.group_by or {}) if feature is not None and feature.meter is not None else {}
            if not isinstance(dimensions, list) or not dimensions or not all(isinstance(d, str) for d in dimensions):
                self.add_error("dimensions", 'a list of the meter\'s group-by names, e.g. ["model", "type"]')
            else:
                unknown = [d for d in dimensions if d not in group_by]
                if unknown:
                    self.add_error("dimensions", f"not group-bys of the meter: {', '.join(unknown)} (known: "
                                                 f"{', '.join(sorted(group_by)) or 'none'})")
        elif dimensions:
            self.add_error("dimensions", "only a dimensional price has dimensions")
        return data


class PriceRowForm(forms.ModelForm):
    """One row of a dimensional table, checked as the pricing engine will read it."""

    class Meta:
        model = PriceRow
        fields = ("position", "match", "is_default", "effective_from", "price_type", "unit_amount", "amount",
                  "quantity_per_package", "tiers")

    def clean(self):
        super().clean()
        data = self.cleaned_data
        for name in ("match", "tiers"):
            problem = nested_problem(data.get(name))
            if problem:
                self.add_error(name, problem)
                data[name] = {} if name == "match" else []
        if self.errors:
            return data
        match = data.get("match") or {}
        if not isinstance(match, dict) or not all(isinstance(v, str) and v for v in match.values()):
            self.add_error("match", 'an object of dimension → non-empty value, e.g. {"model": "gpt-4o"}')
        elif data.get("is_default") and match:
            self.add_error("match", "the default row has no match")
        if self.errors:
            return data
        row = PriceRow(**{name: data.get(name) for name in ("price_type", "unit_amount", "amount",
                                                            "quantity_per_package")}, tiers=data.get("tiers") or [])
        try:
            problems = validate_price(price_row_price(row))
        except ValueError as exc:
            problems = [str(exc)]
        for problem in problems:
            self.add_error(None, problem)
        return data


MAX_TIERS = 100


class PriceTierFormSet(BaseInlineFormSet):
    """The tier table of a graduated or volume rate card: rows in the order shown (their positions follow it),
    at most ``MAX_TIERS``, checked by the pricing engine's own rule (ascending bounds, only the last one open,
    nothing negative) when the rate card's price type is tiered."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        price_type = self.data.get("price_type", self.instance.price_type if self.instance else "")
        rows = self.rows()
        if price_type not in ("graduated", "volume") or not rows:
            return
        tiers = [(form.cleaned_data.get("up_to"), form.cleaned_data.get("unit_amount") or Decimal(0),
                  form.cleaned_data.get("flat_amount") or Decimal(0)) for form in rows]
        problems = validate_price(engine_price(price_type, tiers=tiers))
        if problems:
            raise ValidationError([problem.replace("up_to", "“up to”") for problem in problems])

    def rows(self) -> list[forms.ModelForm]:
        """The rows kept (not deleted, not left empty), in the order shown."""
        return [form for form in self.forms
                if getattr(form, "cleaned_data", None) and not form.cleaned_data.get("DELETE")
                and (form.instance.pk or form.has_changed())]

    def save(self, commit: bool = True):
        saved = super().save(commit)
        if commit:
            for position, form in enumerate(self.rows()):
                if form.instance.pk and form.instance.position != position:
                    type(form.instance).objects.filter(pk=form.instance.pk).update(position=position)
                    form.instance.position = position
        return saved


class TierTableWidget(forms.Widget):
    """The tier table inside a rate card of the plan page: rows of up to / unit amount / flat amount with add and
    remove buttons (``static/billing/key-value.js``). Posts ``<name>-up_to``, ``-unit_amount``, ``-flat_amount``
    repeated; nothing posted (the table hidden for a price without tiers) leaves the tiers as they are."""

    template_name = "admin/catalog/widgets/tier_table.html"
    COLUMNS = ("up_to", "unit_amount", "flat_amount")

    class Media:
        js = ("billing/key-value.js",)

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        rows = [tuple("" if cell is None else (plain_decimal(cell) if isinstance(cell, Decimal) else str(cell))
                      for cell in row) for row in (value or [])]
        context["widget"]["rows"] = rows + [("", "", "")]
        return context

    def format_value(self, value):
        return value

    def value_from_datadict(self, data, files, name):
        if not any(f"{name}-{column}" in data for column in self.COLUMNS):
            return None
        columns = [data.getlist(f"{name}-{column}") for column in self.COLUMNS]
        return list(zip_longest(*columns, fillvalue=""))

    def value_omitted_from_data(self, data, files, name):
        return not any(f"{name}-{column}" in data for column in self.COLUMNS)


class TierTableField(forms.Field):
    """Tiers typed in a :class:`TierTableWidget`: ``None`` (not posted: unchanged) or a list of ``(up_to,
    unit_amount, flat_amount)`` in the order shown; empty rows skipped; each cell read like every decimal."""

    widget = TierTableWidget

    def __init__(self, **kwargs):
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_python(self, value):
        if value is None or isinstance(value, str):
            return None
        if len(value) > MAX_TIERS + 1:
            raise ValidationError(f"At most {MAX_TIERS} tiers.", code="too_many")
        tiers, errors = [], []
        for number, row in enumerate(value, start=1):
            cells = [str(cell) for cell in row]
            if not any(cell.strip() for cell in cells):
                continue
            parsed = []
            for cell, label in zip(cells, ("up to", "unit amount", "flat amount"), strict=True):
                try:
                    parsed.append(parse_plain_decimal(cell) if cell.strip() else None)
                except ValidationError as exc:
                    errors.append(f"tier {number}, {label}: {' '.join(exc.messages)}")
                    parsed.append(None)
            up_to, unit, flat = parsed
            tiers.append((up_to, unit if unit is not None else Decimal(0), flat if flat is not None else Decimal(0)))
        if errors:
            raise ValidationError(errors)
        return tiers


class PlanRateCardForm(RateCardForm):
    """A rate card on the plan page: the rate card form plus its tier table."""

    tiers = TierTableField(label="Tiers", help_text="One row per tier, ascending; the last one without “up to”.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["tiers"].initial = [(t.up_to, t.unit_amount, t.flat_amount)
                                            for t in self.instance.tiers.order_by("position", "id")]

    def clean(self):
        data = super().clean()
        tiers = data.get("tiers")
        price_type = data.get("price_type") or ""
        if tiers and price_type in ("graduated", "volume"):
            for problem in validate_price(engine_price(price_type, tiers=tiers)):
                self.add_error("tiers", problem.replace("up_to", "“up to”"))
        return data

    def save(self, commit=True):
        rate_card = super().save(commit)
        tiers = self.cleaned_data.get("tiers")
        if commit and tiers is not None and rate_card.price_type in ("graduated", "volume"):
            stored = [(t.up_to, t.unit_amount, t.flat_amount) for t in rate_card.tiers.order_by("position", "id")]
            if stored != tiers:
                rate_card.tiers.all().delete()
                rate_card.tiers.bulk_create([
                    PriceTier(rate_card=rate_card, position=i, up_to=up_to, unit_amount=unit, flat_amount=flat)
                    for i, (up_to, unit, flat) in enumerate(tiers)])
        return rate_card


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
