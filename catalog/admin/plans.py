"""Plans: versions with their rate cards; publish, make a new draft version and archive are confirmed actions
(one plan from its page, or many from the list)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from common.admin.confirm import ConfirmAction, ConfirmActionMixin, Outcome, confirm_bulk_action

from ..display import plain_number, price_summary
from ..forms import CREDIT_FORM_FIELDS, PlanForm, PlanRateCardForm
from ..models import Plan, RateCard
from ..services.plans import plan_archive, plan_new_version, plan_problems, plan_publish
from .drafts import PlanDraftOnly, rate_card_price_text

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec


def _done(outcome: Outcome) -> str:
    if outcome.bulk:
        return f"Done: {', '.join(str(result) for _, result in outcome.done)}."
    return f"{outcome.result} — done."


CHANGE_PLAN = "catalog.change_plan"
PUBLISH = ConfirmAction(
    name="publish", label="Publish", button_id="publish-plan", bulk_title="Publish plans?",
    available=lambda plan: plan.status == Plan.Status.DRAFT,
    problems=plan_problems, problems_title="This draft cannot be published yet:",
    explanation=lambda plan: (
        f"Publishing freezes version {plan.version} of {plan.key}. New subscriptions use it; the version published "
        "before it (if any) is archived, and its subscriptions keep it." if plan else
        "Publishing freezes each selected draft. New subscriptions use it; the version of its plan published before "
        "it (if any) is archived, and its subscriptions keep it."),
    service=lambda request, plan, data: plan_publish(plan=plan), permission=CHANGE_PLAN, done=_done,
)
NEW_VERSION = ConfirmAction(
    name="new_version", label="New version", button_id="new-version", button_label="Edit (new version)",
    bulk_title="New version plans?",
    available=lambda plan: plan.status != Plan.Status.DRAFT,
    explanation="A draft copy becomes the next version; edit it, then publish it.",
    service=lambda request, plan, data: plan_new_version(plan=plan), permission=CHANGE_PLAN, done=_done,
)
ARCHIVE = ConfirmAction(
    name="archive", label="Archive", button_id="archive-plan", bulk_title="Archive plans?",
    available=lambda plan: plan.status == Plan.Status.PUBLISHED,
    explanation=lambda plan: f"Archiving stops new subscriptions to {plan or 'these plans'}. "
                             "Existing subscriptions continue.",
    service=lambda request, plan, data: plan_archive(plan=plan), permission=CHANGE_PLAN, done=_done,
)


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


# One field a line where the price type decides (catalog/static/catalog/rate_card_form.js shows only the chosen
# type's fields, from catalog.rules.PRICE_FIELDS); free quantity and spend limits folded under "More".
def _rate_card_fieldsets(tiers: str, credits: tuple[str, ...] = CREDIT_FORM_FIELDS) -> _FieldsetSpec:
    """``tiers``: the editable tier table (``tiers``, the plan page's drafts) or the sentence (``tiers_shown``);
    ``credits``: the recurring grant's form fields, or its sentence on a read-only page (``credit_grant_shown``)."""
    return (
        (None, {"fields": (("key", "name"), "feature", "price_type", "payment_term", "dimensions", "amount",
                           "unit_amount", "quantity_per_package", tiers, "price_preview")}),
        ("More: free quantity, minimum and maximum spend", {
            "fields": ("free_quantity", ("minimum_spend", "maximum_spend")),
            "classes": ("collapse", "rate-card-more")}),
        ("Entitlement", {"fields": ("entitlement_type", "entitlement_limit", "entitlement_soft",
                                    "entitlement_usage_period", "entitlement_credits", "entitlement_config")}),
        ("Recurring credits", {
            "fields": credits, "classes": ("collapse",),
            "description": "Prepaid credits granted to every subscriber at each period start (“$10 of free usage "
                           "each month”), once per period."}),
    )


RATE_CARD_FIELDSETS = _rate_card_fieldsets("tiers_shown")
READ_ONLY_RATE_CARD_FIELDSETS = _rate_card_fieldsets("tiers_shown", ("credit_grant_shown",))


def credit_grant_text(rate_card: RateCard | None) -> str:
    """A rate card's recurring grant as a sentence (read-only pages)."""
    grant = rate_card.credit_grant if rate_card is not None else None
    if not isinstance(grant, dict) or not grant.get("amount"):
        return "No recurring credits."
    text = f"{grant['amount']} {rate_card.plan.currency if rate_card else ''} every {grant.get('every') or 'P1M'}"
    text += f", expiring after {grant['expires_after']}" if grant.get("expires_after") else ", never expiring"
    return text + f", priority {grant.get('priority', 100)}"


def tiers_text(rate_card: RateCard | None) -> str:
    """On the plan page, a tiered rate card's tiers are edited on its own page (a table of rows)."""
    if rate_card is None or not rate_card.pk:
        return "Save the plan, then open the rate card (“Change”) to fill in its tier table."
    url = reverse("admin:catalog_ratecard_change", args=[rate_card.pk])
    count = rate_card.tiers.count()
    return format_html('{} tier(s). <a href="{}#tiers-group" class="edit-tiers">Edit the tier table</a>', count, url)


class RateCardPageMixin(PlanDraftOnly):
    """What a rate card shows on its plan's page and on its own: the price and the recurring grant as sentences, and
    a published version's rate card read only (its tiers and grant as sentences)."""

    readonly_fields = ("price_preview", "tiers_shown", "credit_grant_shown")

    def get_fieldsets(self, request, obj=None):
        if obj is not None and not self._plan_of(obj).is_editable:
            return READ_ONLY_RATE_CARD_FIELDSETS
        return super().get_fieldsets(request, obj)

    @admin.display(description="recurring credits")
    def credit_grant_shown(self, obj: RateCard | None) -> str:
        return credit_grant_text(obj)

    @admin.display(description="price")
    def price_preview(self, obj: RateCard | None) -> str:
        return rate_card_price_text(obj)


class RateCardInline(RateCardPageMixin, admin.StackedInline):
    """On the plan page: drafts edit their tiers in the rate card's own table (a link here)."""

    model = RateCard
    form = PlanRateCardForm
    extra = 0
    show_change_link = True
    fieldsets = _rate_card_fieldsets("tiers")

    class Media:
        js = ("catalog/rate_card_form.js",)
        css = {"all": ("billing/admin.css",)}

    def _plan_of(self, obj):
        return obj

    @admin.display(description="tiers")
    def tiers_shown(self, obj: RateCard | None) -> str:
        return tiers_text(obj)


@admin.register(Plan)
class PlanAdmin(ConfirmActionMixin, PlanDraftOnly, admin.ModelAdmin):
    form = PlanForm
    list_display = ("key", "version", "name", "status", "currency", "billing_cadence", "rate_card_count",
                    "published_at")
    list_filter = ("status", "currency", "billing_cadence")
    search_fields = ("key", "name")
    inlines = [RateCardInline]
    confirm_actions = (PUBLISH, NEW_VERSION, ARCHIVE)
    confirm_route = ("<int:pk>/lifecycle/<str:action>/", "catalog_plan_lifecycle")
    publish_plans = confirm_bulk_action("publish", "Publish selected drafts")
    new_versions = confirm_bulk_action("new_version", "Edit: make a new draft version")
    archive_plans = confirm_bulk_action("archive", "Archive selected (stops new subscriptions)")
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
        return super().get_queryset(request).annotate(rate_card_total=Count("rate_cards"))

    @admin.display(description="rate cards", ordering="rate_card_total")
    def rate_card_count(self, obj: Any) -> int:  # annotated by get_queryset
        return obj.rate_card_total

    @admin.display(description="pricing")
    def pricing(self, obj: Plan) -> str:
        if not obj.pk:
            return "—"
        rows = [
            (reverse("admin:catalog_ratecard_change", args=[rate_card.pk]), rate_card.key, rate_card.display_name,
             rate_card.feature.key if rate_card.feature else "—", price_summary(rate_card, obj.currency),
             rate_card.get_payment_term_display(), entitlement_summary(rate_card))
            for rate_card in obj.rate_cards.select_related("feature").prefetch_related("tiers")
        ]
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
