"""The customer page's "Usage this period": per metered feature of each active subscription, the usage so far by
day against the entitlement limit; other entitlements as access."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from django.utils.html import format_html, format_html_join

from catalog.display import plain_number
from common.charts import bar_chart_svg
from metering.selectors.usage import usage_series

from ..models import Customer
from ..selectors import active_subscriptions, subscription_entitlements, subscription_period_at


def current_usage(customer: Customer) -> str:
    if not customer.pk:
        return "—"
    now = timezone.now()
    rows, charts = [], []
    for subscription in active_subscriptions(customer, now):
        period = subscription_period_at(subscription, now)
        values = dict(subscription_entitlements(subscription, now))
        features = {}
        for rate_card in subscription.plan.rate_cards.select_related("feature", "feature__meter"):
            if rate_card.feature_id and rate_card.feature.meter_id:
                features.setdefault(rate_card.feature.key, (rate_card.feature, None))
            if rate_card in values and values[rate_card].kind == "metered":
                features[rate_card.feature.key] = (rate_card.feature, values[rate_card])
        for rate_card, value in values.items():
            if value.kind == "metered":
                shown = (f"{plain_number(value.usage)} of {plain_number(value.limit)} "
                         f"({'soft' if value.soft else 'hard'} limit)")
            else:
                shown = "access" if value.has_access else "no access"
            rows.append((subscription.plan.key, rate_card.feature.key, shown,
                         f"{period.start:%Y-%m-%d} – {period.end:%Y-%m-%d}" if period else ""))
        if period is not None:
            for key, (feature, value) in sorted(features.items()):
                charts.append((f"{key} ({subscription.plan.key}) by day this period",
                               usage_chart(customer, feature, period.start, period.end,
                                           limit=value.limit if value else None)))
    if not rows and not charts:
        return "No active subscription with entitlements."
    table = format_html(
        "<table><tr><th>plan</th><th>feature</th><th>usage / entitlement</th><th>period</th></tr>{}</table>",
        format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
    ) if rows else ""
    return format_html("{}{}", table, format_html_join("", '<h4 style="margin:8px 0 2px">{}</h4>{}', charts))


def usage_chart(customer: Customer, feature, start, end, *, limit=None):
    """Daily usage of a feature for the customer's subjects included in the range (an SVG bar chart)."""
    day = dt.timedelta(days=1)
    first = start.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = end.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = last if last == end else last + day
    last = min(last, timezone.now().astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) + day)
    subjects = sorted({a.subject for a in customer.attributions.all() if a.clip(first, last)})
    if not subjects:
        return "no subjects"
    rows = usage_series(meter=feature.meter, subjects=subjects, start=first, end=last, window_size="DAY",
                        filters=feature.meter_group_by_filters or None)
    by_day = {row.window_start: row.value for row in rows}
    points, running, cursor = [], 0, first
    while cursor < last:
        running += by_day.get(cursor, 0)
        points.append((f"{cursor:%b %d}", running))
        cursor += day
    return bar_chart_svg(points, limit=limit, limit_label="limit")
