"""Subscriptions: create, cancel (now or at period end), change plan (now with proration, or at period end)."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from catalog.models import Plan
from common.announcements import announce

from ..models import Customer, Subscription, SubscriptionEvent
from ..periods import anchor_for, period_at


class SubscriptionError(ValueError):
    pass


def _log(subscription: Subscription, action: str, detail: str, actor: str = "") -> None:
    """Append to the subscription's log and announce it (``common.announcements``): a subscription that replaces
    another (a plan change) is ``subscription.changed``."""
    SubscriptionEvent.objects.create(subscription=subscription, action=action, detail=detail, actor=actor)
    if action == "created":
        announce("subscription.changed" if subscription.previous_id else "subscription.created",
                 subscription=subscription)
    elif action == "canceled":
        announce("subscription.canceled", subscription=subscription)


def _overlapping(
    customer: Customer, plan_key: str, start: dt.datetime, end: dt.datetime | None, exclude: Subscription | None = None
):
    """Subscriptions of the customer to the same plan key whose ``[start, cancel_at)`` meets ``[start, end)``."""
    found = []
    subscriptions = Subscription.objects.filter(customer=customer, plan__key=plan_key)
    if exclude is not None:
        subscriptions = subscriptions.exclude(pk=exclude.pk)
    for other in subscriptions:
        other_end = other.cancel_at
        if other_end is not None and other_end <= other.start:
            continue  # canceled before it began
        if (end is None or other.start < end) and (other_end is None or start < other_end):
            found.append(other)
    return found


@transaction.atomic
def subscription_create(
    *,
    customer: Customer,
    plan: Plan,
    start: dt.datetime | None = None,
    billing_anchor: dt.datetime | str | None = None,
    actor: str = "",
    previous: Subscription | None = None,
) -> Subscription:
    """Start ``customer`` on a published plan version. ``billing_anchor``: a datetime, ``"calendar"`` (the
    1st of the month, 00:00 UTC) or None (the start). Usage before ``start`` is never billed."""
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    start = start or timezone.now()
    if plan.status != Plan.Status.PUBLISHED:
        raise SubscriptionError(f"{plan} is {plan.status}: new subscriptions need a published plan version")
    if plan.currency != customer.currency:
        raise SubscriptionError(f"{plan} bills in {plan.currency} but {customer} is invoiced in {customer.currency}")
    try:
        anchor = anchor_for(start, billing_anchor)
    except ValueError as exc:
        raise SubscriptionError(str(exc)) from exc
    clash = _overlapping(customer, plan.key, start, None)
    if clash:
        raise SubscriptionError(f"{customer} already has a subscription to {plan.key} over that time: {clash[0]}")
    subscription = Subscription.objects.create(
        customer=customer, plan=plan, start=start, billing_anchor=anchor, previous=previous
    )
    _log(subscription, "created", f"{plan} from {start.isoformat()}, anchor {anchor.isoformat()}", actor)
    return subscription


@transaction.atomic
def subscription_cancel(
    *, subscription: Subscription, when: str = "period_end", now: dt.datetime | None = None, actor: str = ""
) -> Subscription:
    """``when="now"`` ends it at once (in-advance fees for the unused part are credited on the next invoice);
    ``"period_end"`` lets the current period run out. A subscription that has not started is simply canceled."""
    subscription = Subscription.objects.select_for_update().select_related("plan").get(pk=subscription.pk)
    now = now or timezone.now()
    if subscription.cancel_at is not None and subscription.cancel_at <= now:
        raise SubscriptionError(f"{subscription} already ended at {subscription.cancel_at.isoformat()}")
    if when not in ("now", "period_end"):
        raise SubscriptionError("cancel 'now' or at 'period_end'")
    if now < subscription.start:
        end = subscription.start
    elif when == "now":
        end = now
    else:
        period = period_at(
            subscription.billing_anchor,
            subscription.plan.billing_cadence,
            subscription.start,
            subscription.cancel_at,
            now,
        )
        end = period.end if period else now
    subscription.cancel_at, subscription.canceled_at = end, now
    subscription.save(update_fields=["cancel_at", "canceled_at"])
    _log(subscription, "canceled", f"{when}: ends {end.isoformat()}", actor)
    return subscription


@transaction.atomic
def subscription_change_plan(
    *, subscription: Subscription, plan: Plan, when: str = "now", now: dt.datetime | None = None, actor: str = ""
) -> Subscription:
    """End this subscription and start one on ``plan`` at the same instant (now, or the current period's end),
    keeping the billing anchor so the periods line up. Returns the new subscription."""
    subscription = Subscription.objects.select_for_update().select_related("plan", "customer").get(pk=subscription.pk)
    now = now or timezone.now()
    if plan.pk == subscription.plan_id:
        raise SubscriptionError("that is already the subscription's plan")
    if subscription.cancel_at is not None and subscription.cancel_at <= now:
        raise SubscriptionError(f"{subscription} has ended")
    if when == "now":
        switch = max(now, subscription.start)
    elif when == "period_end":
        period = period_at(
            subscription.billing_anchor,
            subscription.plan.billing_cadence,
            subscription.start,
            subscription.cancel_at,
            max(now, subscription.start),
        )
        switch = period.end if period else now
    else:
        raise SubscriptionError("change the plan 'now' or at 'period_end'")
    if plan.billing_cadence != subscription.plan.billing_cadence:
        anchor: dt.datetime | str | None = switch  # a new cadence starts a new cycle
    else:
        anchor = subscription.billing_anchor
    subscription.cancel_at, subscription.canceled_at = switch, now
    subscription.save(update_fields=["cancel_at", "canceled_at"])
    _log(subscription, "plan_changed", f"to {plan} at {switch.isoformat()}", actor)
    return subscription_create(
        customer=subscription.customer,
        plan=plan,
        start=switch,
        billing_anchor=anchor,
        actor=actor,
        previous=subscription,
    )
