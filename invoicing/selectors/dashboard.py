"""The admin home's figures, each with the filtered list behind it. A bounded number of queries, whatever
the number of rows (the unbilled total comes from a snapshot job, not from previewing every customer here)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Sum
from django.db.models.functions import TruncMonth
from django.urls import reverse
from django.utils import timezone

from catalog.models import Plan
from catalog.money import to_major
from common.charts import bar_chart_svg
from common.models import JobRun
from common.money import format_money
from customers.models import Subscription
from customers.selectors import unattributed_subjects
from metering.models import EventTypeActivity, Meter
from metering.selectors.overview import unreadable_events, usage_per_day_of_top_meters

from ..models import CycleClose, Invoice
from .previews import invoice_preview

BILLED = (Invoice.Status.ISSUED, Invoice.Status.PAID, Invoice.Status.UNCOLLECTIBLE)
BEAT_KINDS = ("heartbeat", "process_usage", "close_cycles", "unbilled_snapshot")


def _url(name: str, **params: Any) -> str:
    base = reverse(name)
    return base + ("?" + urlencode(params) if params else "")


def _month_start(moment: dt.datetime) -> dt.datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _billed_url(month: dt.datetime, **params: Any) -> str:
    return _url("admin:invoicing_invoice_changelist", issued=f"{month:%Y-%m}", status__in=",".join(BILLED), **params)


def _billed(start: dt.datetime, end: dt.datetime, currencies: list[str]) -> list[dict[str, Any]]:
    """Billed (issued, paid or uncollectible) invoices issued in ``[start, end)``, one row per currency in use
    (a currency without invoices shows its zero), each linking to those invoices."""
    rows: dict[str, Any] = {
        r["currency"]: r
        for r in Invoice.objects.filter(status__in=BILLED, issued_at__gte=start, issued_at__lt=end)
        .values("currency")
        .annotate(total=Sum("total"), count=Count("id"))
    }
    return [
        {
            "currency": currency,
            "minor": rows.get(currency, {}).get("total") or 0,
            "amount": format_money(rows.get(currency, {}).get("total") or 0, currency),
            "count": rows.get(currency, {}).get("count", 0),
            "url": _billed_url(start, currency__exact=currency),
        }
        for currency in sorted(set(currencies) | set(rows))
    ]


def currencies_in_use() -> list[str]:
    """The currencies of invoices and of published plans: each gets its own row (never a bare "0")."""
    invoiced = Invoice.objects.values_list("currency", flat=True).distinct()
    planned = Plan.objects.filter(status=Plan.Status.PUBLISHED).values_list("currency", flat=True).distinct()
    return sorted(set(invoiced) | set(planned))


def _months_back(this_month: dt.datetime, count: int) -> list[dt.datetime]:
    months = [this_month]
    for _ in range(count - 1):
        months.append(_month_start(months[-1] - dt.timedelta(days=1)))
    return list(reversed(months))


def billed_by_month(*, now: dt.datetime, months: int = 12) -> dict[str, list[tuple[dt.datetime, int]]]:
    """Currency → [(month start, billed minor units)] for the last ``months`` months, oldest first (one query;
    months are UTC calendar months of ``issued_at``)."""
    starts = _months_back(_month_start(now.astimezone(dt.UTC)), months)
    rows = (
        Invoice.objects.filter(status__in=BILLED, issued_at__gte=starts[0], issued_at__lt=now + dt.timedelta(seconds=1))
        .annotate(month=TruncMonth("issued_at", tzinfo=dt.UTC))
        .values("currency", "month")
        .annotate(total=Sum("total"))
    )
    totals: dict[str, dict[dt.datetime, int]] = defaultdict(dict)
    for row in rows:
        totals[row["currency"]][_month_start(row["month"].astimezone(dt.UTC))] = row["total"] or 0
    return {currency: [(month, by_month.get(month, 0)) for month in starts]
            for currency, by_month in sorted(totals.items())}


def top_customers(*, start: dt.datetime, end: dt.datetime, limit: int = 5) -> list[dict[str, Any]]:
    """The customers billed most in ``[start, end)``, per currency (one query)."""
    rows = (
        Invoice.objects.filter(status__in=BILLED, issued_at__gte=start, issued_at__lt=end)
        .values("currency", "customer_id", "customer__key", "customer__name")
        .annotate(total=Sum("total"), count=Count("id"))
        .order_by("currency", "-total", "customer__key")
    )
    found: list[dict[str, Any]] = []
    per_currency: dict[str, int] = defaultdict(int)
    for row in rows:
        if per_currency[row["currency"]] >= limit:
            continue
        per_currency[row["currency"]] += 1
        found.append({
            "name": row["customer__name"] or row["customer__key"], "key": row["customer__key"],
            "currency": row["currency"], "minor": row["total"] or 0,
            "amount": format_money(row["total"] or 0, row["currency"]), "count": row["count"],
            "url": _billed_url(start, q=row["customer__key"], currency__exact=row["currency"]),
        })
    return found


UNPRICED_LISTED = 20


def unbilled_snapshot(*, now: dt.datetime | None = None) -> dict[str, int]:
    """Preview totals (minor units) of every active subscription, per currency: usage so far this period not yet
    invoiced. Run by beat; the dashboard shows the latest result."""
    return preview_snapshot(now=now)[0]


def preview_snapshot(*, now: dt.datetime | None = None) -> tuple[dict[str, int], dict[str, Any]]:
    """:func:`unbilled_snapshot`'s totals (minor units), and the usage no row of a dimensional price prices
    (unpriced: not billed), counted and the first of it listed: ``{"groups": n, "items": [{customer, rate_card,
    warning, quantity}]}``."""
    now = now or timezone.now()
    totals: dict[str, int] = defaultdict(int)
    unpriced: dict[str, Any] = {"groups": 0, "items": []}
    customers_seen = set()
    for subscription in (
        Subscription.objects.filter(start__lte=now).select_related("customer", "plan").iterator(chunk_size=500)
    ):
        if subscription.customer_id in customers_seen or subscription.status_at(now) not in ("active", "canceling"):
            continue
        customers_seen.add(subscription.customer_id)
        preview = invoice_preview(customer=subscription.customer, at=now)
        totals[preview.currency] += preview.total
        for item in preview.unpriced:
            unpriced["groups"] += 1
            if len(unpriced["items"]) < UNPRICED_LISTED:
                unpriced["items"].append({"customer": subscription.customer.key, "rate_card": item.rate_card.key,
                                          "warning": item.usage.label, "quantity": format(item.usage.quantity, "f")})
    return dict(sorted(totals.items())), unpriced


def _unbilled_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The snapshot's totals as rows; older snapshots stored major-unit text only."""
    minor = result.get("minor")
    if isinstance(minor, dict):
        return [{"currency": c, "minor": int(v), "amount": format_money(int(v), c)} for c, v in sorted(minor.items())]
    return [{"currency": c, "minor": None, "amount": f"{v} {c}"} for c, v in sorted(result.get("totals", {}).items())]


def _chart_points(series: list[tuple[dt.datetime, int]], currency: str) -> list[tuple[str, Decimal]]:
    return [(f"{month:%b %Y}", to_major(total, currency)) for month, total in series]


def dashboard(user) -> dict[str, Any]:
    now = timezone.now()
    this_month = _month_start(now)
    last_month = _month_start(this_month - dt.timedelta(days=1))
    can = user.has_perm
    figures: dict[str, Any] = {"now": now}
    if can("invoicing.view_invoice"):
        currencies = currencies_in_use()
        figures["billed_this_month"] = _billed(this_month, now + dt.timedelta(seconds=1), currencies)
        figures["billed_last_month"] = _billed(last_month, this_month, currencies)
        figures["billed_this_month_url"] = _billed_url(this_month)
        figures["billed_last_month_url"] = _billed_url(last_month)
        figures["billed_by_month"] = [
            {"currency": currency, "total": format_money(sum(total for _, total in series), currency),
             "chart": bar_chart_svg(_chart_points(series, currency), unit=f" {currency}", height=150,
                                    label=f"billed per month in {currency}")}
            for currency, series in billed_by_month(now=now).items()
        ]
        figures["top_customers"] = top_customers(start=this_month, end=now + dt.timedelta(seconds=1))
        by_status: dict[str, Mapping[str, Any]] = {
            row["status"]: row
            for row in Invoice.objects.values("status").annotate(count=Count("id"), total=Sum("total"))
        }
        figures["invoices_by_status"] = [
            {
                "status": label,
                "count": by_status.get(value, {}).get("count", 0),
                "url": _url("admin:invoicing_invoice_changelist", status__exact=value),
            }
            for value, label in Invoice.Status.choices
        ]
        figures["sync_failures"] = Invoice.objects.filter(sync_status=Invoice.SyncStatus.FAILED).count()
        figures["sync_failures_url"] = _url("admin:invoicing_invoice_changelist", sync_status__exact="failed")
        figures["held_cycles"] = CycleClose.objects.exclude(error="").filter(state=CycleClose.State.CLAIMED).count()
        figures["held_cycles_url"] = _url("admin:invoicing_cycleclose_changelist", error__isempty="0",
                                           state__exact=CycleClose.State.CLAIMED)
        snapshot = JobRun.objects.filter(kind="unbilled_snapshot", status=JobRun.Status.SUCCEEDED).first()
        figures["unbilled"] = _unbilled_rows(snapshot.result or {}) if snapshot else None
        figures["unbilled_at"] = snapshot.finished_at if snapshot else None
        figures["unpriced"] = (snapshot.result or {}).get("unpriced") if snapshot else None
        figures["unbilled_url"] = _url("admin:customers_subscription_changelist")
    if can("customers.view_unbilledsubject"):
        unattributed = unattributed_subjects().aggregate(subjects=Count("id"), events=Sum("event_count"))
        figures["unattributed_subjects"] = unattributed["subjects"] or 0
        figures["unattributed_events"] = unattributed["events"] or 0
        figures["unattributed_url"] = _url("admin:customers_unbilledsubject_changelist")
    if can("metering.view_eventtypeactivity"):
        metered_types = Meter.objects.values("event_type")
        unmetered = EventTypeActivity.objects.exclude(type__in=metered_types).aggregate(
            types=Count("id"), events=Sum("event_count")
        )
        figures["unmetered_types"] = unmetered["types"] or 0
        figures["unmetered_events"] = unmetered["events"] or 0
        figures["unmetered_url"] = _url("admin:metering_eventtypeactivity_changelist", metered="no")
    if can("metering.view_meter"):
        since = (now - dt.timedelta(days=30)).astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        figures["invalid_values"] = unreadable_events(since=since)
        figures["invalid_values_url"] = _url("admin:metering_event_changelist", within="30d")
        figures["usage_by_day"] = [
            {"meter": item["meter"], "unit": item["unit"], "points": item["points"],
             "url": _url("admin:metering_meter_usage") + "?" + urlencode({"meter": item["meter"].pk}),
             "chart": bar_chart_svg(item["points"], unit=f" {item['unit']}", height=130,
                                    label=f"{item['meter'].name} per day")}
            for item in usage_per_day_of_top_meters(since=since, now=now)
        ]
    if can("common.view_jobrun"):
        latest = []
        for kind in BEAT_KINDS:
            run = (
                JobRun.objects.filter(kind=kind).only("kind", "status", "finished_at", "created_at", "message").first()
            )
            latest.append({"kind": kind, "run": run, "url": _url("admin:common_jobrun_changelist", kind=kind)})
        figures["beat_runs"] = latest
    return figures
