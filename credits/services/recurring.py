"""Recurring grants of a plan's rate card: ``credit_grant: {amount: "10.00", every: P1M, expires_after: P1M,
priority: 10}`` — "$10 of free usage each month", granted at each period start (periods of ``every`` from the
subscription's billing anchor), once: the grant's ``recurring_key`` is unique per subscription, rate card and
period."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from catalog.models import RateCard
from catalog.money import to_minor
from catalog.rules import CADENCES, cadence_delta, credit_grant_problems
from customers.models import Subscription
from customers.periods import periods_between

from ..models import CreditGrant
from .grants import grant_create


def recurring_key(subscription_id: int, rate_card_key: str, period_start: dt.datetime) -> str:
    return f"{subscription_id}:{rate_card_key}:{period_start.astimezone(dt.UTC).isoformat()}"


def recurring_grants_issue(*, now: dt.datetime | None = None) -> int:
    """Grant what every active subscription's rate cards promise for the period running now (and the one before,
    should a beat run have been missed at its start). Safe to run any number of times, concurrently too. Returns
    how many grants were made."""
    now = now or timezone.now()
    cards: dict[int, list[RateCard]] = {}
    for rate_card in RateCard.objects.filter(credit_grant__isnull=False).select_related("plan"):
        spec = rate_card.credit_grant
        if isinstance(spec, dict) and not credit_grant_problems(spec, rate_card.plan.currency):
            cards.setdefault(rate_card.plan_id, []).append(rate_card)
    if not cards:
        return 0
    made = 0
    subscriptions = (Subscription.objects.filter(plan_id__in=list(cards), start__lte=now)
                     .filter(Q(cancel_at__isnull=True) | Q(cancel_at__gt=now - dt.timedelta(days=400)))
                     .select_related("plan", "customer").order_by("pk"))
    for subscription in subscriptions.iterator(chunk_size=500):
        for rate_card in cards[subscription.plan_id]:
            made += _grant_periods(subscription, rate_card, now)
    return made


def _grant_periods(subscription: Subscription, rate_card: RateCard, now: dt.datetime) -> int:
    spec = rate_card.credit_grant or {}
    every = spec.get("every") or subscription.plan.billing_cadence
    if every not in CADENCES:
        return 0
    periods = periods_between(subscription.billing_anchor, every, subscription.start, subscription.cancel_at,
                              until=now + dt.timedelta(microseconds=1))
    # the period running now, and the one before (a beat run missed at its start)
    keys = {recurring_key(subscription.pk, rate_card.key, period.start): period for period in periods[-2:]}
    existing = set(CreditGrant.objects.filter(recurring_key__in=list(keys)).values_list("recurring_key", flat=True))
    made = 0
    currency = subscription.plan.currency
    for key, period in keys.items():
        if key in existing or currency != subscription.customer.currency:
            continue
        expires_after = spec.get("expires_after")
        expires_at = period.start + cadence_delta(expires_after) if expires_after in CADENCES else None
        if expires_at is not None and expires_at <= now:
            continue  # a missed period whose credits would already have expired
        try:
            with transaction.atomic():
                grant_create(customer=subscription.customer, amount=to_minor(Decimal(str(spec["amount"])), currency),
                             priority=int(spec.get("priority", 100)), effective_at=period.start, expires_at=expires_at,
                             source=CreditGrant.Source.RECURRING, recurring_key=key, now=now, label="recurring grant",
                             description=f"{rate_card.display_name}: credits for the period from "
                                         f"{period.start:%Y-%m-%d}")
        except IntegrityError:
            continue  # a concurrent run made it
        made += 1
    return made
