"""Usage and spend alerts, and usage nobody bills.

- ``entitlement.threshold``: for each rate card with a metered entitlement, thresholds (its
  :class:`UsageAlertRule`, else ``ENTITLEMENT_ALERT_THRESHOLDS``, default 50, 80, 100 %) fire once per threshold
  per usage period. Beat evaluates every minute the customers whose subjects sent usage within the last
  ``ALERTS_RECENT_USAGE_MINUTES`` (not every customer), from live usage (the rollups).
- ``spend.threshold``: a customer's previewed total for the running period passes their spend alert amount.
- ``usage.unattributed``: a subject sends usage that no customer includes, once per subject per UTC day.
- ``usage.unpriced``: a customer with recent usage used, today (UTC), a model (dimension values) that no row and no
  default of their plan's dimensional rate card prices. Once per UTC day per *key*
  ``<plan key>@v<version>/<rate card key>/<dimension>=<value>,…`` (e.g. ``ai@v3/llm/model=gpt-5,type=request``,
  ``(none)`` for a missing value): the table a price row must be added to, and the row's ``match``. What is unpriced
  is decided where the invoice preview, the dashboard and ``billing_reconcile`` decide it
  (:mod:`invoicing.selectors.unpriced`).

"Once" is a unique constraint on :class:`FiredAlert`: the alert row and its outbox event are inserted in one
transaction, so evaluators racing each other (or ingest) fire each alert exactly once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from catalog.models import RateCard
from catalog.money import format_major
from common.time import format_rfc3339
from customers.models import Customer, SubjectAttribution, Subscription
from customers.selectors import active_subscriptions, subscription_entitlements, unattributed_subjects
from invoicing.selectors.previews import invoice_preview
from invoicing.selectors.unpriced import UnpricedWindow, unpriced_subjects, unpriced_usage_between
from invoicing.services.lines import BillingContext
from metering.models import SubjectActivity

from ..models import CustomerNotificationSettings, FiredAlert, UsageAlertRule, WebhookEndpoint
from .outbox import event_record

MAX_CUSTOMERS_PER_RUN = 5000
EntitlementType = RateCard.EntitlementType


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f") if value != 0 else "0"


def thresholds_of(rate_card_id: int, rules: dict[int, UsageAlertRule]) -> list[int]:
    rule = rules.get(rate_card_id)
    if rule is None:
        return list(settings.ENTITLEMENT_ALERT_THRESHOLDS)
    return [int(t) for t in rule.thresholds] if rule.enabled else []


def _fire(alert: FiredAlert, *, event_type: str, data: dict[str, Any], customer: Customer | None) -> bool:
    """Insert the alert and its event together; False when it had fired already (the unique constraint)."""
    try:
        with transaction.atomic():
            alert.save()
            alert.event = event_record(event_type=event_type, data=data, customer=customer,
                                       occurred_at=alert.fired_at)
            alert.save(update_fields=["event"])
    except IntegrityError:
        return False
    return True


def subscription_alerts_evaluate(subscription: Subscription, *, now: dt.datetime,
                                 rules: dict[int, UsageAlertRule] | None = None) -> int:
    """Fire the usage thresholds one subscription has crossed in its current usage periods."""
    rules = rules if rules is not None else {}
    fired = 0
    for rate_card, value in subscription_entitlements(subscription, now):
        if rate_card.entitlement_type != EntitlementType.METERED or value.kind != EntitlementType.METERED:
            continue
        limit, usage = value.limit or Decimal(0), value.usage or Decimal(0)
        if limit <= 0 or value.period_start is None or value.period_end is None:
            continue
        done = set(FiredAlert.objects.filter(kind=FiredAlert.Kind.ENTITLEMENT, subscription=subscription,
                                             rate_card=rate_card, period_start=value.period_start)
                   .values_list("threshold", flat=True))
        for threshold in sorted(thresholds_of(rate_card.pk, rules)):
            if Decimal(threshold) in done or usage * 100 < limit * threshold:
                continue
            data = {"customer": subscription.customer.key, "feature": rate_card.feature.key if rate_card.feature
                    else rate_card.key, "threshold_percent": threshold, "usage": _plain(usage),
                    "limit": _plain(limit), "period": {"from": format_rfc3339(value.period_start),
                                                       "to": format_rfc3339(value.period_end)}}
            alert = FiredAlert(kind=FiredAlert.Kind.ENTITLEMENT, customer=subscription.customer,
                               subscription=subscription, rate_card=rate_card, period_start=value.period_start,
                               period_end=value.period_end, threshold=Decimal(threshold), value=usage, limit=limit,
                               fired_at=now)
            fired += _fire(alert, event_type="entitlement.threshold", data=data, customer=subscription.customer)
    return fired


def spend_alert_evaluate(customer: Customer, *, now: dt.datetime) -> int:
    """``spend.threshold`` once per period when the preview of the running period passes the customer's amount."""
    prefs = CustomerNotificationSettings.objects.filter(customer=customer).first()
    if prefs is None or prefs.spend_alert_amount is None:
        return 0
    preview = invoice_preview(customer=customer, at=now)
    if preview.period_start is None or preview.period_end is None or preview.total < prefs.spend_alert_amount:
        return 0
    data = {"customer": customer.key, "currency": preview.currency,
            "amount": format_major(preview.total, preview.currency),
            "threshold": format_major(prefs.spend_alert_amount, preview.currency),
            "period": {"from": format_rfc3339(preview.period_start), "to": format_rfc3339(preview.period_end)}}
    alert = FiredAlert(kind=FiredAlert.Kind.SPEND, customer=customer, period_start=preview.period_start,
                       period_end=preview.period_end, threshold=Decimal(prefs.spend_alert_amount),
                       value=Decimal(preview.total), fired_at=now)
    if FiredAlert.objects.filter(kind=FiredAlert.Kind.SPEND, customer=customer, period_start=preview.period_start,
                                 threshold=alert.threshold).exists():
        return 0
    return int(_fire(alert, event_type="spend.threshold", data=data, customer=customer))


def customers_with_recent_usage(*, now: dt.datetime, recent_minutes: int) -> list[int]:
    """Customers including a subject that sent usage lately (an indexed read of the activity counters)."""
    since = now - dt.timedelta(minutes=recent_minutes)
    subjects = SubjectActivity.objects.filter(last_ingested_at__gte=since).values("subject")
    return list(SubjectAttribution.objects.filter(subject__in=subjects)
                .filter(Q(end__isnull=True) | Q(end__gt=since))
                .values_list("customer_id", flat=True).distinct().order_by("customer_id")[:MAX_CUSTOMERS_PER_RUN])


def alerts_evaluate(*, now: dt.datetime | None = None, recent_minutes: int = 10,
                    customer_ids: list[int] | None = None) -> int:
    """Usage thresholds and spend alerts of the customers with recent usage; returns how many fired."""
    now = now or timezone.now()
    if customer_ids is None:
        customer_ids = customers_with_recent_usage(now=now, recent_minutes=recent_minutes)
    rules = {rule.rate_card_id: rule for rule in UsageAlertRule.objects.all()}
    fired = 0
    for customer in Customer.objects.filter(pk__in=customer_ids).order_by("pk"):
        for subscription in active_subscriptions(customer, now):
            fired += subscription_alerts_evaluate(subscription, now=now, rules=rules)
        fired += spend_alert_evaluate(customer, now=now)
    return fired


KEY_MAX = 255


def alert_key(text: str) -> str:
    """``text`` as a :attr:`FiredAlert.key`: as is when it fits, else cut with a digest of the whole (two long keys
    sharing a prefix stay apart)."""
    if len(text) <= KEY_MAX:
        return text
    return f"{text[:KEY_MAX - 17]}#{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _storable(quantity: Decimal) -> Decimal:
    """A quantity for :attr:`FiredAlert.value` (38 digits, 15 decimals); an absurd one is kept in the event only."""
    return quantity.quantize(Decimal("1e-15")) if quantity.adjusted() < 22 else Decimal(0)


def _utc_day(now: dt.datetime) -> dt.datetime:
    return now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def usage_surprise_record(*, kind: str, key: str, data: dict[str, Any], now: dt.datetime | None = None,
                          customer: Customer | None = None, rate_card: RateCard | None = None,
                          value: Decimal = Decimal(0)) -> bool:
    """``usage.unpriced`` / ``usage.unattributed`` once per key (subject, or rate card and model) per UTC day."""
    now = now or timezone.now()
    day = _utc_day(now)
    alert_kind = FiredAlert.Kind.UNPRICED if kind == "usage.unpriced" else FiredAlert.Kind.UNATTRIBUTED
    key = alert_key(key)
    if FiredAlert.objects.filter(kind=alert_kind, key=key, period_start=day).exists():
        return False
    alert = FiredAlert(kind=alert_kind, key=key, customer=customer, rate_card=rate_card, period_start=day,
                       period_end=day + dt.timedelta(days=1), threshold=Decimal(0), value=value, fired_at=now)
    return _fire(alert, event_type=kind, data={**data, "date": day.date().isoformat()}, customer=customer)


def unpriced_key(unpriced: UnpricedWindow) -> str:
    """``<plan key>@v<version>/<rate card key>/<dimension>=<value>,…``: which table lacks which row."""
    plan = unpriced.subscription.plan
    values = ",".join(f"{name}={value if value is not None else '(none)'}" for name, value in unpriced.usage.values)
    return f"{plan.key}@v{plan.version}/{unpriced.rate_card.key}/{values}"


MAX_SUBJECTS_LISTED = 20


def unpriced_payload(unpriced: UnpricedWindow, *, key: str, subjects: list[str]) -> dict[str, Any]:
    rate_card, plan = unpriced.rate_card, unpriced.subscription.plan
    feature = rate_card.usage_feature
    dimensions = unpriced.dimensions
    return {
        "key": key, "customer": unpriced.subscription.customer.key,
        "subject": subjects[0] if subjects else None, "subjects": subjects[:MAX_SUBJECTS_LISTED],
        "plan": plan.key, "plan_version": plan.version, "rate_card": rate_card.key, "feature": feature.key,
        "meter": feature.meter.slug if feature.meter is not None else None,
        "model": dimensions.get("model"), "dimensions": dimensions,
        "quantity": _plain(unpriced.usage.quantity), "warning": unpriced.usage.label,
        "period": {"from": format_rfc3339(max(unpriced.start, unpriced.subscription.start)),
                   "to": format_rfc3339(unpriced.end)},
    }


def usage_unpriced_evaluate(*, now: dt.datetime | None = None, recent_minutes: int = 10,
                            customer_ids: list[int] | None = None) -> int:
    """``usage.unpriced`` for the customers whose subjects sent usage lately (:func:`customers_with_recent_usage`):
    what their dimensional rate cards leave unpriced of their usage since the start of the UTC day (or the last
    ``recent_minutes``, whichever is longer: usage of just before midnight is not missed), once per key and day.
    Returns how many fired."""
    now = now or timezone.now()
    if customer_ids is None:
        customer_ids = customers_with_recent_usage(now=now, recent_minutes=recent_minutes)
    if not customer_ids:
        return 0
    day = _utc_day(now)
    since = min(day, now - dt.timedelta(minutes=recent_minutes))
    done = set(FiredAlert.objects.filter(kind=FiredAlert.Kind.UNPRICED, period_start=day)
               .values_list("key", flat=True))
    context = BillingContext()  # the plans' rate cards read once per plan version
    fired = 0
    for customer in Customer.objects.filter(pk__in=customer_ids).order_by("pk"):
        for subscription in active_subscriptions(customer, now):
            for unpriced in unpriced_usage_between(subscription, start=since, end=now, context=context):
                key = unpriced_key(unpriced)
                if alert_key(key) in done:
                    continue
                done.add(alert_key(key))
                data = unpriced_payload(unpriced, key=key, subjects=unpriced_subjects(unpriced))
                fired += usage_surprise_record(kind="usage.unpriced", key=key, data=data, now=now,
                                               customer=customer, rate_card=unpriced.rate_card,
                                               value=_storable(unpriced.usage.quantity))
    return fired


def usage_surprises_evaluate(*, now: dt.datetime | None = None) -> int:
    """Subjects that sent usage today that no customer includes (``usage.unattributed``)."""
    now = now or timezone.now()
    day = _utc_day(now)
    fired = 0
    for subject in unattributed_subjects().filter(last_seen__gte=day).values_list("subject", flat=True)[:1000]:
        fired += usage_surprise_record(kind="usage.unattributed", key=subject, data={"subject": subject}, now=now)
    return fired


def on_usage_announcement(event_type: str, objects: dict[str, Any]) -> None:
    """:mod:`common.announcements` listener for ``usage.unattributed`` from lower apps (``usage.unpriced`` is found
    by :func:`usage_unpriced_evaluate`, which knows the customer and the rate card)."""
    if event_type == "usage.unattributed" and "key" in objects:
        usage_surprise_record(kind=event_type, key=str(objects["key"]), data=dict(objects.get("data") or {}))


def endpoints_disable_stale(*, now: dt.datetime) -> int:
    """Disable endpoints whose deliveries have been failing for ``WEBHOOK_DISABLE_AFTER_DAYS`` days."""
    cutoff = now - dt.timedelta(days=settings.WEBHOOK_DISABLE_AFTER_DAYS)
    return WebhookEndpoint.objects.filter(enabled=True, failing_since__lte=cutoff).update(
        enabled=False, disabled_at=now,
        disabled_reason=f"Deliveries failed for {settings.WEBHOOK_DISABLE_AFTER_DAYS} days without a success.")
