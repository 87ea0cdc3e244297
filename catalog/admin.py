"""Catalog screens: features, plans with their rate cards, tiers, lifecycle actions and a cost calculator."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from common.fields import PreciseDecimalField
from common.forms import DecimalTextField, parse_plain_decimal

from .charges import charge_rate_card
from .display import plain_number, price_summary
from .models import Feature, Plan, PriceTier, RateCard
from .pricing import PricingError
from .rules import clean_currency, currency_problem, feature_filter_problems, rate_card_problems
from .services.features import FeatureError, feature_create, feature_update
from .services.plans import PlanError, plan_archive, plan_new_version, plan_problems, plan_publish


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
        data = super().clean()
        meter = data.get("meter")
        problems = feature_filter_problems(data.get("meter_group_by_filters") or {}, meter.group_by if meter else None)
        if problems:
            self.add_error("meter_group_by_filters", "; ".join(problems))
        return data


@admin.register(Feature)
class FeatureAdmin(admin.ModelAdmin):
    form = FeatureForm
    list_display = ("key", "name", "meter", "filters", "used_by")
    list_select_related = ("meter",)
    search_fields = ("key", "name")
    list_filter = ("meter",)

    def get_readonly_fields(self, request, obj=None):
        return ("key",) if obj else ()

    @admin.display(description="filters")
    def filters(self, obj: Feature) -> str:
        return ", ".join(f"{k} = {v}" for k, v in sorted((obj.meter_group_by_filters or {}).items()))

    @admin.display(description="rate cards")
    def used_by(self, obj: Feature) -> int:
        return obj.rate_card_count

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(rate_card_count=Count("rate_cards"))

    def save_model(self, request, obj, form, change):
        data = form.cleaned_data
        try:
            if change:
                saved = feature_update(
                    feature=Feature.objects.get(pk=obj.pk),
                    name=data["name"],
                    meter=data["meter"],
                    filters=data.get("meter_group_by_filters") or {},
                )
            else:
                saved = feature_create(
                    key=data["key"],
                    name=data["name"],
                    meter=data["meter"],
                    filters=data.get("meter_group_by_filters") or {},
                )
        except FeatureError as exc:
            raise ValueError(str(exc)) from exc
        obj.pk = saved.pk
        obj.refresh_from_db()


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
            "entitlement_config",
        )

    def clean(self):
        data = super().clean()
        feature = data.get("feature")
        price_type = data.get("price_type") or ""
        placeholder = Decimal(1)  # tiers are checked on publish, on the plan page
        from .rules import engine_price

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


class PlanDraftOnly:
    """Published and archived versions are shown read-only."""

    def _plan_of(self, obj):
        raise NotImplementedError

    def has_change_permission(self, request, obj=None):
        if obj is not None and not self._plan_of(obj).is_editable:
            return False
        return super().has_change_permission(request, obj)

    def has_add_permission(self, request, obj=None):
        if obj is not None and not self._plan_of(obj).is_editable:
            return False
        if isinstance(self, admin.options.InlineModelAdmin):  # inlines take the parent object, model admins don't
            return super().has_add_permission(request, obj)
        return super().has_add_permission(request)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and not self._plan_of(obj).is_editable:
            return False
        return super().has_delete_permission(request, obj)


class RateCardInline(PlanDraftOnly, admin.StackedInline):
    model = RateCard
    form = RateCardForm
    extra = 0
    show_change_link = True
    autocomplete_fields = ()
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("key", "name"),
                    "feature",
                    ("price_type", "payment_term"),
                    ("amount", "unit_amount", "quantity_per_package"),
                    ("free_quantity", "minimum_spend", "maximum_spend"),
                    "price_preview",
                )
            },
        ),
        (
            "Entitlement",
            {
                "fields": (
                    ("entitlement_type", "entitlement_limit", "entitlement_soft", "entitlement_usage_period"),
                    "entitlement_config",
                )
            },
        ),
    )

    readonly_fields = ("price_preview",)

    def _plan_of(self, obj):
        return obj

    @admin.display(description="price")
    def price_preview(self, obj: RateCard | None) -> str:
        return rate_card_price_text(obj)


def rate_card_price_text(rate_card: RateCard | None) -> str:
    """The saved rate card's price sentence (the form's live preview replaces it while someone types)."""
    if rate_card is None or not rate_card.pk:
        return "—"
    return price_summary(rate_card, rate_card.plan.currency)


@admin.register(Plan)
class PlanAdmin(PlanDraftOnly, admin.ModelAdmin):
    form = PlanForm
    list_display = (
        "key",
        "version",
        "name",
        "status",
        "currency",
        "billing_cadence",
        "rate_card_count",
        "published_at",
    )
    list_filter = ("status", "currency", "billing_cadence")
    search_fields = ("key", "name")
    inlines = [RateCardInline]
    actions = ["publish_plans", "new_versions", "archive_plans"]
    readonly_fields = ("status", "version", "published_at", "archived_at", "pricing", "problems")
    fieldsets = (
        (None, {"fields": (("key", "version", "status"), "name", "description", ("currency", "billing_cadence"))}),
        ("Rate cards", {"fields": ("pricing", "problems")}),
        ("History", {"fields": ("published_at", "archived_at"), "classes": ("collapse",)}),
    )
    change_form_template = "admin/catalog/plan/change_form.html"

    class Media:
        js = ("catalog/price_preview.js",)

    def _plan_of(self, obj):
        return obj

    def get_readonly_fields(self, request, obj=None):
        fields = list(self.readonly_fields)
        if obj is not None:
            fields.append("key")
        return fields

    def get_queryset(self, request):
        from django.db.models import Count

        return super().get_queryset(request).annotate(rate_card_total=Count("rate_cards"))

    @admin.display(description="rate cards", ordering="rate_card_total")
    def rate_card_count(self, obj: Plan) -> int:
        return obj.rate_card_total

    @admin.display(description="pricing")
    def pricing(self, obj: Plan) -> str:
        if not obj.pk:
            return "—"
        rows = []
        for rate_card in obj.rate_cards.select_related("feature").prefetch_related("tiers"):
            rows.append(
                (
                    reverse("admin:catalog_ratecard_change", args=[rate_card.pk]),
                    rate_card.key,
                    rate_card.display_name,
                    rate_card.feature.key if rate_card.feature_id else "—",
                    price_summary(rate_card, obj.currency),
                    rate_card.get_payment_term_display(),
                    entitlement_summary(rate_card),
                )
            )
        if not rows:
            return "No rate cards yet."
        return format_html(
            '<table class="pricing"><tr><th>rate card</th><th>name</th><th>feature</th><th>price</th><th>billed</th>'
            "<th>entitlement</th></tr>{}</table>",
            format_html_join(
                "", '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>', rows
            ),
        )

    @admin.display(description="before publishing")
    def problems(self, obj: Plan) -> str:
        if not obj.pk or obj.status != Plan.Status.DRAFT:
            return "—"
        found = plan_problems(obj)
        if not found:
            return "Ready to publish."
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", ((p,) for p in found)))

    def get_urls(self):
        return [
            path(
                "<int:pk>/lifecycle/<str:action>/",
                self.admin_site.admin_view(self.lifecycle_view),
                name="catalog_plan_lifecycle",
            ),
            *super().get_urls(),
        ]

    def lifecycle_view(self, request, pk: int, action: str):
        """One plan: publish / new version / archive, with a confirmation page."""
        plan = get_object_or_404(Plan, pk=pk)
        if action not in ("publish", "new_version", "archive") or not super().has_change_permission(request):
            return HttpResponseRedirect(reverse("admin:catalog_plan_change", args=[pk]))
        if request.method != "POST":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "plan": plan,
                "action": action,
                "title": f"{action.replace('_', ' ').capitalize()} {plan}?",
                "problems": plan_problems(plan) if action == "publish" else [],
            }
            return TemplateResponse(request, "admin/catalog/plan/lifecycle_confirmation.html", context)
        try:
            result = {"publish": plan_publish, "new_version": plan_new_version, "archive": plan_archive}[action](
                plan=plan
            )
        except PlanError as exc:
            self.message_user(request, f"{plan}: {exc}", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:catalog_plan_change", args=[pk]))
        self.message_user(request, f"{result} — done.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:catalog_plan_change", args=[result.pk]))

    def _bulk(self, request, queryset, service, verb: str):
        if request.POST.get("confirmed") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "plans": queryset,
                "title": f"{verb.capitalize()} plans?",
                "verb": verb,
                "action": request.POST.get("action"),
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "problems": {p.pk: plan_problems(p) for p in queryset} if verb == "publish" else {},
            }
            return TemplateResponse(request, "admin/catalog/plan/bulk_confirmation.html", context)
        for plan in queryset:
            try:
                result = service(plan=plan)
                self.message_user(request, f"{verb}: {result}", messages.SUCCESS)
            except PlanError as exc:
                self.message_user(request, f"{plan}: {exc}", messages.ERROR)
        return None

    @admin.action(description="Publish selected drafts", permissions=["change"])
    def publish_plans(self, request, queryset):
        return self._bulk(request, queryset, plan_publish, "publish")

    @admin.action(description="Edit: make a new draft version", permissions=["change"])
    def new_versions(self, request, queryset):
        return self._bulk(request, queryset, plan_new_version, "new version")

    @admin.action(description="Archive selected (stops new subscriptions)", permissions=["change"])
    def archive_plans(self, request, queryset):
        return self._bulk(request, queryset, plan_archive, "archive")


def entitlement_summary(rate_card: RateCard) -> str:
    kind = rate_card.entitlement_type
    if kind == "boolean":
        return "access"
    if kind == "static":
        return f"static {rate_card.entitlement_config}"
    if kind == "metered":
        period = rate_card.entitlement_usage_period or "billing period"
        limit = plain_number(rate_card.entitlement_limit) if rate_card.entitlement_limit is not None else "?"
        return f"{'soft' if rate_card.entitlement_soft else 'hard'} limit {limit} per {period}"
    return "—"


class PriceTierInline(PlanDraftOnly, admin.TabularInline):
    model = PriceTier
    extra = 0
    fields = ("position", "up_to", "unit_amount", "flat_amount")

    def _plan_of(self, obj):
        return obj.plan


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


@admin.register(RateCard)
class RateCardAdmin(PlanDraftOnly, admin.ModelAdmin):
    form = RateCardForm
    inlines = [PriceTierInline]
    list_display = ("key", "plan", "feature", "price_type", "payment_term", "entitlement_type")
    list_select_related = ("plan", "feature")
    list_filter = ("price_type", "payment_term", "plan__status")
    search_fields = ("key", "plan__key")
    change_form_template = "admin/catalog/ratecard/change_form.html"
    readonly_fields = ("price_preview",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    ("key", "name"),
                    "feature",
                    ("price_type", "payment_term"),
                    ("amount", "unit_amount", "quantity_per_package"),
                    ("free_quantity", "minimum_spend", "maximum_spend"),
                    "price_preview",
                )
            },
        ),
        (
            "Entitlement",
            {
                "fields": (
                    ("entitlement_type", "entitlement_limit", "entitlement_soft", "entitlement_usage_period"),
                    "entitlement_config",
                )
            },
        ),
    )

    class Media:
        js = ("catalog/price_preview.js",)

    def _plan_of(self, obj):
        return obj.plan

    def has_module_permission(self, request):
        return False  # reached from the plan page

    @admin.display(description="price")
    def price_preview(self, obj: RateCard | None) -> str:
        return rate_card_price_text(obj)

    def get_urls(self):
        return [
            path(
                "price-preview/",
                self.admin_site.admin_view(self.price_preview_view),
                name="catalog_ratecard_price_preview",
            ),
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
                errors.append(f"{str(labels.get(name, name)).lower()}: {' '.join(messages_)}")
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
        from .money import to_major

        if not rate_card.price_type:
            return "this rate card has no price"
        currency = rate_card.plan.currency
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
