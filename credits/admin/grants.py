"""Grants: the list with what is left of each, a grant typed by staff (through ``grant_create``), and the
confirmed actions *Adjust* (a required reason) and *Void grant*."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Q, Sum
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from catalog.money import format_major
from common.admin.confirm import ConfirmAction, ConfirmActionMixin
from common.admin.utils import ConditionFilter

from ..forms import AdjustForm, AutoTopUpForm, GrantForm, GrantVoidForm, LowBalanceAlertForm
from ..models import AutoTopUp, CreditGrant, LowBalanceAlert
from ..selectors import GrantState, grant_states, grant_status
from ..services.grants import CreditError, grant_adjust, grant_bought_or_created, grant_void

MANAGE_PERMISSION = "credits.manage_credits"


def _remaining(grant: CreditGrant) -> int:
    return grant.entries.aggregate(total=Sum("amount"))["total"] or 0


def _void_explanation(grant: CreditGrant) -> str:
    left = format_major(_remaining(grant), grant.currency)
    return (f"Void writes off what is left of grant #{grant.pk} of {grant.customer} ({left} {grant.currency}) with "
            "a void entry in the ledger; invoices it already paid keep their credits.")


VOID = ConfirmAction(
    name="void", label="Void grant", permission=MANAGE_PERMISSION, form_class=GrantVoidForm,
    explanation=_void_explanation, available=lambda grant: grant.voided_at is None,
    service=lambda request, grant, data: grant_void(grant=grant, reason=data["reason"], actor=request.user),
    done=lambda outcome: f"Grant #{outcome.obj.pk} voided.",
)
ADJUST = ConfirmAction(
    name="adjust", label="Adjust", permission=MANAGE_PERMISSION, form_class=AdjustForm,
    form_kwargs=lambda request, grant: {"grant": grant},
    explanation=lambda grant: (f"Adjust adds an amount (or takes one away) from what is left of grant #{grant.pk} "
                               f"({format_major(_remaining(grant), grant.currency)} {grant.currency}), with a reason, "
                               "as an adjustment entry in the ledger. What is left never goes below zero."),
    available=lambda grant: grant.voided_at is None,
    service=lambda request, grant, data: grant_adjust(grant=grant, amount=data["amount"], reason=data["reason"],
                                                      actor=request.user),
    done=lambda outcome: f"Grant #{outcome.obj.pk} adjusted.",
)


class GrantStatusFilter(ConditionFilter):
    title = "status"
    parameter_name = "state"
    conditions = {
        "void": ("Void", Q(voided_at__isnull=False)),
        "expiring": ("With an expiry", Q(expires_at__isnull=False)),
        "open": ("Not void", Q(voided_at__isnull=True)),
    }


@admin.register(CreditGrant)
class CreditGrantAdmin(ConfirmActionMixin, admin.ModelAdmin):
    """Grants are added here (staff type the amount in major units) and never edited: what changes one is an
    adjustment or a void, each a ledger entry."""

    list_display = ("__str__", "customer", "source", "amount_shown", "remaining_shown", "currency", "priority",
                    "effective_at", "expires_at", "status_shown")
    list_filter = ("source", "currency", GrantStatusFilter)
    search_fields = ("customer__key", "customer__name", "description")
    list_select_related = ("customer",)
    date_hierarchy = "effective_at"
    form = GrantForm
    confirm_actions = (ADJUST, VOID)
    confirm_route = ("<int:pk>/do/<str:action>/", "credits_creditgrant_do")
    change_form_template = "admin/credits/creditgrant/change_form.html"
    readonly_fields = ("customer", "currency", "amount_shown", "remaining_shown", "status_shown", "priority",
                       "effective_at", "expires_at", "applies_to", "source", "description", "recurring_key",
                       "purchase_invoice_id", "voided_at", "created_at", "created_by_label", "ledger_link")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(left=Sum("entries__amount"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(MANAGE_PERMISSION)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return ((None, {"fields": ("customer", "amount_major", ("priority", "source"),
                                       ("effective_at", "expires_at"), "features", "description")}),)
        return ((None, {"fields": (("customer", "currency"), ("amount_shown", "remaining_shown", "status_shown"),
                                   ("priority", "source"), ("effective_at", "expires_at", "voided_at"),
                                   "applies_to", "description", "ledger_link")}),
                ("Origin", {"fields": ("recurring_key", "purchase_invoice_id", ("created_at", "created_by_label"))}))

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def get_changeform_initial_data(self, request):
        initial: dict = dict(super().get_changeform_initial_data(request))
        initial.setdefault("effective_at", timezone.now())
        initial.setdefault("priority", 100)
        return initial

    def confirm_row(self, obj: CreditGrant) -> str:
        return f"{obj.customer}: {format_major(obj.amount, obj.currency)} {obj.currency} ({obj.get_source_display()})"

    def save_model(self, request, obj, form, change):
        if change:  # never: grants are not edited
            return
        data = form.cleaned_data
        try:
            grant = grant_bought_or_created(
                customer=data["customer"], amount=data["amount"], priority=data["priority"],
                effective_at=data["effective_at"], expires_at=data.get("expires_at"),
                applies_to=data.get("features") or [], source=data["source"], available_immediately=False,
                description=data.get("description") or "", actor=request.user)
        except CreditError as exc:  # checked by the form already; a race (a feature deleted) lands here
            self.message_user(request, str(exc), messages.ERROR)
            raise
        obj.pk = grant.pk
        obj.refresh_from_db()

    def save_related(self, request, form, formsets, change):
        return None

    def log_addition(self, request, obj, message):
        return super().log_addition(request, obj, "Granted through the admin")

    def _state(self, obj: CreditGrant) -> GrantState:
        left = getattr(obj, "left", None)
        if left is None:
            left = _remaining(obj)
        return GrantState(obj, left or 0, obj.entries.filter(kind="grant").exists())

    @admin.display(description="amount", ordering="amount")
    def amount_shown(self, obj: CreditGrant) -> str:
        return format_major(obj.amount, obj.currency)

    @admin.display(description="remaining", ordering="left")
    def remaining_shown(self, obj: CreditGrant) -> str:
        left = getattr(obj, "left", None)
        return format_major(left if left is not None else _remaining(obj), obj.currency)

    @admin.display(description="status")
    def status_shown(self, obj: CreditGrant) -> str:
        return grant_status(self._state(obj))

    @admin.display(description="ledger")
    def ledger_link(self, obj: CreditGrant) -> str:
        url = reverse("admin:credits_ledgerentry_changelist") + f"?grant__id__exact={obj.pk}"
        return format_html('<a href="{}">entries of this grant</a>', url)


@admin.register(AutoTopUp)
class AutoTopUpAdmin(admin.ModelAdmin):
    form = AutoTopUpForm
    list_display = ("customer", "enabled", "threshold_shown", "amount_shown", "max_per_period",
                    "available_immediately")
    list_filter = ("enabled",)
    search_fields = ("customer__key", "customer__name")
    list_select_related = ("customer",)
    autocomplete_fields = ("customer",)

    @admin.display(description="threshold", ordering="threshold")
    def threshold_shown(self, obj: AutoTopUp) -> str:
        return _money(obj.threshold, obj.customer.currency)

    @admin.display(description="amount", ordering="amount")
    def amount_shown(self, obj: AutoTopUp) -> str:
        return _money(obj.amount, obj.customer.currency)


def _money(minor: int, currency: str) -> str:
    return f"{format_major(minor, currency)} {currency}"


@admin.register(LowBalanceAlert)
class LowBalanceAlertAdmin(admin.ModelAdmin):
    """Per customer: announce ``credits.low`` (webhook) when the available credits fall below the threshold, once
    per crossing. ``low_since`` is the alert's state, kept by the credits services."""

    form = LowBalanceAlertForm
    list_display = ("customer", "enabled", "threshold_shown", "low_since")
    list_filter = ("enabled",)
    search_fields = ("customer__key", "customer__name")
    list_select_related = ("customer",)
    autocomplete_fields = ("customer",)
    readonly_fields = ("low_since",)
    fields = ("customer", "enabled", "threshold", "low_since")

    @admin.display(description="threshold", ordering="threshold")
    def threshold_shown(self, obj: LowBalanceAlert) -> str:
        return _money(obj.threshold, obj.customer.currency)

    def get_changeform_initial_data(self, request):
        initial = super().get_changeform_initial_data(request)
        customer = request.GET.get("customer", "")
        if customer.isdigit():
            initial["customer"] = customer
        return initial


__all__ = ["CreditGrantAdmin", "grant_states"]
