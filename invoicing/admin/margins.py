"""Metering → Margins: revenue of per-model prices (billed and previewed) against provider cost, per customer ×
model × period, with a chart (:func:`invoicing.selectors.margins.margin_report`)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.utils import timezone

from catalog.money import format_major, to_major
from common.charts import bar_chart_svg

from ..models import Invoice
from ..selectors.margins import GROUPS, margin_report


def _month_start(moment: dt.datetime) -> dt.datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _date(value: str, default: dt.datetime) -> tuple[dt.datetime, str | None]:
    value = (value or "").strip().replace("\x00", "")
    if not value:
        return default, None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return default, f"{value!r} is not a date (YYYY-MM-DD)"
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC), None


def margins_page(model_admin, request):
    if not request.user.has_perm("invoicing.view_invoice"):
        raise PermissionDenied
    now = timezone.now()
    default_start = _month_start(_month_start(now) - dt.timedelta(days=1))
    start, start_error = _date(request.GET.get("from", ""), default_start)
    end, end_error = _date(request.GET.get("to", ""), _month_start(now + dt.timedelta(days=32)))
    errors = [e for e in (start_error, end_error) if e]
    if not errors and start >= end:
        errors.append("“to” must be after “from”")
    group_by = request.GET.get("group") or None
    if group_by not in (None, *GROUPS):
        errors.append(f"group must be one of {', '.join(GROUPS)}")
        group_by = None
    rows = [] if errors else margin_report(start=start, end=end, now=now, group_by=group_by)
    by_label: dict[str, Decimal] = {}
    for row in rows:
        label = row.model if group_by != "customer" else row.customer
        by_label[label or "—"] = by_label.get(label or "—", Decimal(0)) + to_major(row.margin, row.currency)
    context = {
        **model_admin.admin_site.each_context(request), "opts": Invoice._meta, "title": "Margins",
        "errors": errors, "start": f"{start:%Y-%m-%d}", "end": f"{end:%Y-%m-%d}", "group": group_by or "",
        "groups": GROUPS,
        "rows": [{"row": r, "billed": format_major(r.revenue_billed, r.currency),
                  "previewed": format_major(r.revenue_previewed, r.currency),
                  "cost": format_major(r.cost_minor, r.currency), "margin": format_major(r.margin, r.currency),
                  "missing": ", ".join(sorted(r.cost_missing))} for r in rows],
        "chart": bar_chart_svg(sorted(by_label.items()), unit=" margin") if rows else "",
    }
    return TemplateResponse(request, "admin/invoicing/margins.html", context)
