"""Rate cards (reached from their plan's page): the price with its tiers, a live preview of the price sentence
while someone types, and "What would this cost?" for a quantity (both read only, also on published versions)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.contrib import admin
from django.http import JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from django.utils import timezone

from ..charges import charge_rate_card, dimensional_price, is_dimensional
from ..dimensional import rows_in_effect
from ..display import plain_number, price_summary
from ..forms import (
    MAX_TIERS,
    CostForm,
    PricePreviewForm,
    PriceRowForm,
    PriceTierFormSet,
    RateCardForm,
    preview_tiers,
)
from ..models import PriceRow, PriceTier, RateCard
from ..money import to_major
from ..pricing import PricingError, price_rate_card
from .drafts import PlanDraftOnly
from .plans import RATE_CARD_FIELDSETS, RateCardPageMixin


class PriceRowInline(PlanDraftOnly, admin.TabularInline):
    """The rows of a dimensional price table: add or remove rows, each with its own usage price type."""

    model = PriceRow
    form = PriceRowForm
    extra = 0
    fields = ("position", "match", "is_default", "effective_from", "price_type", "unit_amount", "amount",
              "quantity_per_package", "tiers")
    verbose_name = "price table row"
    verbose_name_plural = "price table (dimensional price): most specific match wins, then the first listed"

    def _plan_of(self, obj):
        return obj.plan


class PriceTierInline(PlanDraftOnly, admin.TabularInline):
    model = PriceTier
    formset = PriceTierFormSet
    extra = 0
    verbose_name = "tier"
    verbose_name_plural = "tiers"
    fields = ("up_to", "unit_amount", "flat_amount")  # the rows' order is their position
    max_num = MAX_TIERS

    def get_formset(self, request, obj=None, **kwargs):
        kwargs.setdefault("validate_max", True)
        kwargs.setdefault("absolute_max", MAX_TIERS * 2)  # a post of 1,000 rows is refused, not read
        return super().get_formset(request, obj, **kwargs)

    def _plan_of(self, obj):
        return obj.plan


@admin.register(RateCard)
class RateCardAdmin(RateCardPageMixin, admin.ModelAdmin):
    form = RateCardForm
    inlines = [PriceTierInline, PriceRowInline]
    list_display = ("key", "plan", "feature", "price_type", "payment_term", "entitlement_type")
    list_select_related = ("plan", "feature")
    list_filter = ("price_type", "payment_term", "plan__status")
    search_fields = ("key", "plan__key")
    change_form_template = "admin/catalog/ratecard/change_form.html"
    fieldsets = RATE_CARD_FIELDSETS

    class Media:
        js = ("catalog/price_preview.js", "catalog/rate_card_form.js")
        css = {"all": ("billing/admin.css",)}

    @admin.display(description="tiers")
    def tiers_shown(self, obj: RateCard | None) -> str:
        return "In the table “Tiers” below: one row per tier, ascending; the last row without “up to”."

    def _plan_of(self, obj):
        return obj.plan

    def has_module_permission(self, request):
        return False  # reached from the plan page

    def get_inlines(self, request, obj):
        """Tiers for graduated and volume prices; the table's rows for a dimensional price (choose the price type
        and save, then add rows)."""
        if obj is not None and obj.price_type == RateCard.PriceType.DIMENSIONAL:
            return [PriceRowInline]
        return [PriceTierInline]

    def get_urls(self):
        return [
            path("price-preview/", self.admin_site.admin_view(self.price_preview_view),
                 name="catalog_ratecard_price_preview"),
            *super().get_urls(),
        ]

    def price_preview_view(self, request):
        """GET: the price sentence of the rate card form's current values, for its live preview. Saves nothing."""
        if not self.has_view_permission(request):
            return JsonResponse({"summary": "", "errors": ["you may not view rate cards"]}, status=403)
        form = PricePreviewForm(request.GET)
        errors = []
        if not form.is_valid():
            labels = {name: field.label or name.replace("_", " ") for name, field in form.fields.items()}
            for name, messages_ in form.errors.items():
                text = " ".join(str(message) for message in messages_)
                errors.append(f"{str(labels.get(name, name)).lower()}: {text}")
        tiers = None
        if "tiers" in request.GET:
            tiers, tier_errors = preview_tiers(request.GET)
            errors += tier_errors
        if errors:
            return JsonResponse({"summary": "", "errors": errors})
        data = form.cleaned_data
        rate_card = RateCard(
            price_type=data["price_type"],
            payment_term=data["payment_term"] or RateCard.PaymentTerm.IN_ARREARS,
            feature=data["feature"],
            **{name: data[name] for name in ("amount", "unit_amount", "quantity_per_package", "free_quantity",
                                             "minimum_spend", "maximum_spend")},
        )
        if tiers is None and data["rate_card"] is not None:
            tiers = list(data["rate_card"].tiers.all())
        summary = price_summary(rate_card, data["currency"], cadence=data["cadence"] or None, tiers=tiers or [])
        return JsonResponse({"summary": summary, "errors": []})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        rate_card = get_object_or_404(RateCard.objects.select_related("plan", "feature", "feature__meter"),
                                      pk=object_id)
        cost_form = CostForm(request.GET if "quantity" in request.GET else None)
        cost = None
        if cost_form.is_bound and cost_form.is_valid():
            cost = self._cost(rate_card, cost_form.cleaned_data["quantity"])
            if isinstance(cost, str):
                cost_form.add_error("quantity", cost)
                cost = None
        extra_context = {
            **(extra_context or {}),
            "cost_form": cost_form,
            "cost": cost,
            "summary": price_summary(rate_card, rate_card.plan.currency),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @staticmethod
    def _cost(rate_card: RateCard, quantity: Decimal):
        """What ``quantity`` in one full period costs, from :func:`catalog.charges.charge_rate_card` (a pure read:
        the box works on draft and published rate cards and never saves anything)."""
        if not rate_card.price_type:
            return "this rate card has no price"
        currency = rate_card.plan.currency
        if is_dimensional(rate_card):
            return RateCardAdmin._cost_per_row(rate_card, quantity, currency)
        try:
            charge = charge_rate_card(rate_card, quantity=quantity, currency=currency)
        except (PricingError, InvalidOperation, ValueError) as exc:
            return f"cannot price this rate card yet: {exc}"
        return {
            "lines": [
                {
                    "kind": line.kind,
                    "quantity": plain_number(line.quantity),
                    "unit_price": "" if line.unit_price is None else plain_number(line.unit_price),
                    "amount": to_major(line.amount, currency),
                    "tiers": "; ".join(
                        f"{plain_number(t.quantity)} × {plain_number(t.unit_amount)}"
                        + (f" + {plain_number(t.flat_amount)}" if t.flat_amount else "")
                        for t in line.tiers
                    ),
                }
                for line in charge.lines
            ],
            "total": to_major(charge.total, currency),
            "currency": currency,
        }

    @staticmethod
    def _cost_per_row(rate_card: RateCard, quantity: Decimal, currency: str):
        """A dimensional table: what ``quantity`` costs under each row in effect now, each row alone (the free
        quantity and the spend limits apply to the whole table, so they are left out here)."""
        try:
            table = dimensional_price(rate_card)
            lines = []
            for _, row in rows_in_effect(table, timezone.now()):
                line = price_rate_card(price=row.price, quantity=quantity, currency=currency).lines[0]
                lines.append({"kind": "default" if row.is_default else row.identity,
                              "quantity": plain_number(line.quantity),
                              "unit_price": "" if line.unit_price is None else plain_number(line.unit_price),
                              "amount": to_major(line.amount, currency),
                              "tiers": "; ".join(f"{plain_number(t.quantity)} × {plain_number(t.unit_amount)}"
                                                 + (f" + {plain_number(t.flat_amount)}" if t.flat_amount else "")
                                                 for t in line.tiers)})
        except (PricingError, InvalidOperation, ValueError) as exc:
            return f"cannot price this table yet: {exc}"
        return {"lines": lines, "total": "each row alone", "currency": currency}
