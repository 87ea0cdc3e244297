"""Subscriptions: added with a review of the periods they bill, canceled or moved to another plan with
confirmation; the record itself is shown read-only (each change is one of those actions, logged)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.defaultfilters import date as date_format
from django.template.defaultfilters import floatformat
from django.utils import timezone

from common.admin.confirm import ConfirmAction, ConfirmActionMixin, Review, Table
from common.admin.extensions import ExtensibleAdminMixin

from ..forms import SubscriptionCancelForm, SubscriptionChangeForm, SubscriptionCreateForm
from ..models import Subscription, SubscriptionEvent
from ..selectors import plan_change_proration, subscription_period_at, subscription_review
from ..services.subscriptions import subscription_cancel, subscription_change_plan, subscription_create


def _when(value) -> str:
    return date_format(value, "Y-m-d H:i")


def _review_new(request, _, data) -> Review:
    """The periods a new subscription bills: from a start in the past, each up to now with its usage so far."""
    review = subscription_review(customer=data["customer"], plan=data["plan"], start=data["start"],
                                 billing_anchor=SubscriptionCreateForm.anchor_of(data), now=timezone.now(),
                                 grace=dt.timedelta(seconds=settings.INVOICE_GRACE_PERIOD_SECONDS))
    if not review.start_in_past:
        return Review(heading="Confirm: the first billing periods", table=Table(
            ["period", "from", "to", "partial"],
            [[row.number, _when(row.period.start), _when(row.period.end),
              f"yes ({floatformat(row.period.fraction, 4)} of a period: in-advance fees prorated)"
              if row.period.is_partial else "no"] for row in review.periods]))
    earlier = review.not_listed
    return Review(
        heading="Confirm: the billing periods from the start up to now", warning=review.warning,
        warning_id="backdated-warning",
        notes=[f"{earlier} earlier period{'s' if earlier != 1 else ''} not listed."] if earlier else [],
        table=Table(["period", "from", "to", "billed at the next close",
                     *[f"{key} usage so far" for key in review.rate_cards]],
                    [[row.number, _when(row.period.start), _when(row.period.end), row.billed, *row.usage_text]
                     for row in review.periods], element_id="review-periods"),
    )


def _review_change(request, subscription, data) -> Review:
    """What changing the plan now prorates (in-advance fees); nothing at the period's end."""
    proration = (plan_change_proration(subscription=subscription, new_plan=data["plan"], at=timezone.now())
                 if data["when"] == "now" else [])
    if not proration:
        return Review(heading="Confirm", notes=["No in-advance fees to prorate."])
    return Review(heading="Confirm", table=Table(["rate card", "line", "amount"],
                                                 [[line.rate_card, line.description, line.amount]
                                                  for line in proration]))


def _cancel_explanation(subscription) -> str:
    period = subscription_period_at(subscription, timezone.now())
    if period is None:
        return ""
    return (f"Current period: {_when(period.start)} – {_when(period.end)} UTC. “Now” credits the unused part of "
            "in-advance fees on the next invoice; usage up to now is billed.")


ADD = ConfirmAction(
    name="subscription", label="Add subscription", scope="model", permission="customers.add_subscription",
    title="Add subscription", form_class=SubscriptionCreateForm, review=_review_new, submit="Confirm subscription",
    form_kwargs=lambda request, _: {"initial": {"customer": request.GET.get("customer")}},
    service=lambda request, _, data: subscription_create(
        customer=data["customer"], plan=data["plan"], start=data["start"],
        billing_anchor=SubscriptionCreateForm.anchor_of(data), actor=request.user.get_username()),
    done=lambda outcome: f"Subscribed: {outcome.result}.",
)
CHANGE = ConfirmAction(
    name="change", label="Change plan", route=("<int:pk>/change-plan/", "customers_subscription_change_plan"),
    permission="customers.change_subscription", title=lambda subscription: f"Change the plan of {subscription}",
    form_class=SubscriptionChangeForm, review=_review_change, submit="Change plan",
    service=lambda request, subscription, data: subscription_change_plan(
        subscription=subscription, plan=data["plan"], when=data["when"], actor=request.user.get_username()),
    done=lambda outcome: f"Plan changed: {outcome.result}.",
)
CANCEL = ConfirmAction(
    name="cancel", label="Cancel", route=("<int:pk>/cancel/", "customers_subscription_cancel"),
    permission="customers.change_subscription", form_class=SubscriptionCancelForm,
    explanation=_cancel_explanation,
    service=lambda request, subscription, data: subscription_cancel(
        subscription=subscription, when=data["when"], actor=request.user.get_username()),
    done=lambda outcome: f"{outcome.obj} canceled ({outcome.data['when'].replace('_', ' ')}).",
)


class SubscriptionLogInline(admin.TabularInline):
    model = SubscriptionEvent
    extra = 0
    can_delete = False
    fields = ("at", "action", "detail", "actor")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Subscription)
class SubscriptionAdmin(ConfirmActionMixin, ExtensibleAdminMixin, admin.ModelAdmin):
    list_display = ("customer", "plan", "start", "billing_anchor", "state", "cancel_at")
    list_select_related = ("customer", "plan")
    list_filter = ("plan__key", "plan__currency")
    search_fields = ("customer__key", "customer__name", "plan__key")
    readonly_fields = ("customer", "plan", "start", "billing_anchor", "cancel_at", "canceled_at", "previous",
                       "current_period")
    inlines = [SubscriptionLogInline]
    confirm_actions = (ADD, CHANGE, CANCEL)
    change_form_template = "admin/customers/subscription/change_form.html"

    def has_change_permission(self, request, obj=None):
        return False  # view only: add, change plan and cancel are confirmed actions

    def confirm_denied(self, request, action, obj=None):
        raise PermissionDenied

    def add_view(self, request, form_url="", extra_context=None):
        """Add, with a review of the first billing periods (or, from a start in the past, of every period the
        next close bills) before confirming."""
        return self.confirm_view(request, "subscription")

    @admin.display(description="status")
    def state(self, obj: Subscription) -> str:
        return obj.status_at(timezone.now())

    @admin.display(description="current period")
    def current_period(self, obj: Subscription) -> str:
        period = subscription_period_at(obj, timezone.now())
        return f"{period.start:%Y-%m-%d %H:%M} – {period.end:%Y-%m-%d %H:%M} UTC" if period else "—"
