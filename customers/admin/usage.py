"""The customer page's "Usage this period": per metered feature of each active subscription, the usage so far by
day against the entitlement limit; other entitlements as access."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.utils import timezone
from django.utils.html import format_html, format_html_join

from catalog.display import plain_number
from catalog.models import Feature
from common.admin.utils import saved_only
from common.charts import bar_chart_svg
from metering.selectors.usage import usage_series

from ..models import Customer
from ..selectors import EntitlementValue, active_subscriptions, subscription_entitlements, subscription_period_at


def _entitlement_text(value: EntitlementValue) -> str:
    if value.kind != "metered":
        return "access" if value.has_access else "no access"
    usage, limit = value.usage or Decimal(0), value.limit or Decimal(0)
    return f"{plain_number(usage)} of {plain_number(limit)} ({'soft' if value.soft else 'hard'} limit)"


@saved_only
def current_usage(customer: Customer) -> str:
    now = timezone.now()
    rows, charts = [], []
    for subscription in active_subscriptions(customer, now):
        period = subscription_period_at(subscription, now)
        values = dict(subscription_entitlements(subscription, now))
        features: dict[str, tuple[Feature, EntitlementValue | None]] = {}
        for rate_card in subscription.plan.rate_cards.select_related("feature", "feature__meter"):
            feature = rate_card.feature
            if feature is None:
                continue
            if feature.meter_id:
                features.setdefault(feature.key, (feature, None))
            if rate_card in values and values[rate_card].kind == "metered":
                features[feature.key] = (feature, values[rate_card])
        for rate_card, value in values.items():
            rows.append((subscription.plan.key, rate_card.feature.key if rate_card.feature else rate_card.key,
                         _entitlement_text(value),
                         f"{period.start:%Y-%m-%d} – {period.end:%Y-%m-%d}" if period else ""))
        if period is not None:
            for key, (feature, entitlement) in sorted(features.items(), key=lambda item: item[0]):
                charts.append((f"{key} ({subscription.plan.key}) by day this period",
                               usage_chart(customer, feature, period.start, period.end,
                                           limit=entitlement.limit if entitlement else None)))
    if not rows and not charts:
        return "No active subscription with entitlements."
    table = format_html(
        "<table><tr><th>plan</th><th>feature</th><th>usage / entitlement</th><th>period</th></tr>{}</table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
    ) if rows else ""
    return format_html("{}{}", table, format_html_join("", '<h4 style="margin:8px 0 2px">{}</h4>{}', charts))


def usage_chart(customer: Customer, feature: Feature, start: dt.datetime, end: dt.datetime, *,
                limit: Decimal | None = None):
    """Daily usage of a feature for the customer's subjects included in the range (an SVG bar chart)."""
    day = dt.timedelta(days=1)
    first = start.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = end.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = last if last == end else last + day
    last = min(last, timezone.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) + day)
    subjects = sorted({a.subject for a in customer.attributions.all() if a.clip(first, last)})
    if feature.meter is None:
        return "no meter"
    if not subjects:
        return "no subjects"
    rows = usage_series(meter=feature.meter, subjects=subjects, start=first, end=last, window_size="DAY",
                        filters=feature.meter_group_by_filters or None)
    by_day = {row.window_start: row.value for row in rows}
    points: list[tuple[str, Decimal]] = []
    running, cursor = Decimal(0), first
    while cursor < last:
        running += by_day.get(cursor, 0)
        points.append((f"{cursor:%b %d}", running))
        cursor += day
    return bar_chart_svg(points, limit=limit, limit_label="limit")
