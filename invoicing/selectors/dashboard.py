"""The admin home's figures, each with the filtered list behind it. A bounded number of queries, whatever
the number of rows (the unbilled total comes from a snapshot job, not from previewing every customer here)."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, F, Sum
from django.urls import reverse
from django.utils import timezone

from catalog.money import format_major
from common.models import JobRun
from customers.models import Subscription
from customers.selectors import unattributed_subjects
from metering.models import DailyUsage, EventTypeActivity, Meter

from ..models import CycleClose, Invoice
from .previews import invoice_preview

BILLED = (Invoice.Status.ISSUED, Invoice.Status.PAID, Invoice.Status.UNCOLLECTIBLE)
BEAT_KINDS = ("heartbeat", "process_usage", "close_cycles", "unbilled_snapshot")


def _url(name: str, **params: Any) -> str:
    base = reverse(name)
    return base + ("?" + urlencode(params) if params else "")


def _month_start(moment: dt.datetime) -> dt.datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _billed(start: dt.datetime, end: dt.datetime) -> list[dict[str, str]]:
    rows = (
        Invoice.objects.filter(status__in=BILLED, issued_at__gte=start, issued_at__lt=end)
        .values("currency")
        .annotate(total=Sum("total"), count=Count("id"))
        .order_by("currency")
    )
    return [
        {"currency": r["currency"], "amount": format_major(r["total"] or 0, r["currency"]), "count": r["count"]}
        for r in rows
    ]


UNPRICED_LISTED = 20


def unbilled_snapshot(*, now: dt.datetime | None = None) -> dict[str, str]:
    """Preview totals of every active subscription, per currency: usage so far this period not yet invoiced.
    Run by beat; the dashboard shows the latest result."""
    return preview_snapshot(now=now)[0]


def preview_snapshot(*, now: dt.datetime | None = None) -> tuple[dict[str, str], dict[str, Any]]:
    """:func:`unbilled_snapshot`'s totals, and the usage no row of a dimensional price prices (unpriced: not
    billed), counted and the first of it listed: ``{"groups": n, "items": [{customer, rate_card, warning,
    quantity}]}``."""
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
    return {currency: format_major(total, currency) for currency, total in sorted(totals.items())}, unpriced


def dashboard(user) -> dict[str, Any]:
    now = timezone.now()
    this_month = _month_start(now)
    last_month = _month_start(this_month - dt.timedelta(days=1))
    can = user.has_perm
    figures: dict[str, Any] = {"now": now}
    if can("invoicing.view_invoice"):
        figures["billed_this_month"] = _billed(this_month, now + dt.timedelta(seconds=1))
        figures["billed_last_month"] = _billed(last_month, this_month)
        figures["billed_this_month_url"] = _url("admin:invoicing_invoice_changelist", issued=f"{this_month:%Y-%m}")
        figures["billed_last_month_url"] = _url("admin:invoicing_invoice_changelist", issued=f"{last_month:%Y-%m}")
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
        figures["held_cycles_url"] = _url("admin:invoicing_cycleclose_changelist", error__isempty="0")
        snapshot = JobRun.objects.filter(kind="unbilled_snapshot", status=JobRun.Status.SUCCEEDED).first()
        figures["unbilled"] = snapshot.result.get("totals", {}) if snapshot else None
        figures["unbilled_at"] = snapshot.finished_at if snapshot else None
        figures["unpriced"] = (snapshot.result or {}).get("unpriced") if snapshot else None
        figures["unbilled_url"] = _url("admin:customers_customer_changelist")
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
        figures["unmetered_url"] = _url("admin:metering_eventtypeactivity_changelist")
    if can("metering.view_meter"):
        since = (now - dt.timedelta(days=30)).astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        invalid = (  # UTC days: the daily rollups
            DailyUsage.objects.filter(bucket_start__gte=since)
            .exclude(series__meter__aggregation="COUNT")
            .aggregate(bad=Sum(F("event_count") - F("value_count")))
        )
        figures["invalid_values"] = invalid["bad"] or 0
        figures["invalid_values_url"] = _url("admin:metering_meter_changelist")
    if can("common.view_jobrun"):
        latest = []
        for kind in BEAT_KINDS:
            run = (
                JobRun.objects.filter(kind=kind).only("kind", "status", "finished_at", "created_at", "message").first()
            )
            latest.append({"kind": kind, "run": run, "url": _url("admin:common_jobrun_changelist", kind=kind)})
        figures["beat_runs"] = latest
    return figures
