"""The usage explorer (Metering → Usage explorer): meter, subjects, range, window, group-by → chart, table, CSV."""

from __future__ import annotations

import datetime as dt

from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from common.charts import bar_chart_svg
from common.csv import csv_writer
from common.time import format_rfc3339

from ..api.params import QUERY_EARLIEST, QUERY_LATEST
from ..forms import UsageExplorerForm
from ..models import Meter
from ..selectors.usage import UsageQueryError, meter_query
from ..windows import floor_to_window, next_window_start, time_zone


def usage_page(model_admin, request):
    """The explorer page of the meter admin (``admin:metering_meter_usage``); reads only."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    initial = {"meter": request.GET.get("meter"), "window_size": "DAY", "time_zone": "UTC",
               "start": (timezone.now() - dt.timedelta(days=30)).replace(hour=0, minute=0, second=0, microsecond=0),
               "end": timezone.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=1)}
    bound = "start" in request.GET
    form = UsageExplorerForm(request.GET if bound else None, initial=initial)
    context = {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta,
               "title": "Usage explorer", "form": form, "rows": None}
    if bound and form.is_valid():
        data = form.cleaned_data
        tz = time_zone(data["time_zone"])
        start, end = _utc_range(data["start"], data["end"], tz)
        size = data["window_size"] or None
        rows = None
        if start is None or end is None:
            form.add_error(None, f"From and To must lie between {QUERY_EARLIEST.date().isoformat()} and "
                                 f"{QUERY_LATEST.date().isoformat()} (UTC): windows must stay within years 1 to 9999.")
        else:
            if size:  # widen to whole windows so the chart never cuts one in half
                start = floor_to_window(start, size, tz)
                floored_end = floor_to_window(end, size, tz)
                end = floored_end if floored_end == end else next_window_start(floored_end, size, tz)
            try:
                rows = meter_query(meter=data["meter"], start=start, end=end, window_size=size,
                                   window_time_zone=data["time_zone"], subjects=data["subjects"] or None,
                                   group_by=data["group_by"])
            except UsageQueryError as exc:
                form.add_error("group_by" if exc.field == "groupBy" else None, str(exc))
        if rows is not None:
            keys = [k for k in data["group_by"] if k != "subject"]
            if request.GET.get("format") == "csv":
                return usage_csv(data["meter"], rows, keys)
            totals: dict = {}
            for row in rows:
                totals[row.window_start] = totals.get(row.window_start, 0) + row.value
            label_format = "%Y-%m-%d %H:%M" if size in ("MINUTE", "HOUR") else "%Y-%m-%d"
            points = [(start_.astimezone(tz).strftime(label_format), value) for start_, value in totals.items()]
            context.update({
                "rows": rows, "keys": keys, "chart": bar_chart_svg(points),
                "show_subject": any(row.subject for row in rows), "tz": tz,
                "csv_url": request.get_full_path() + "&format=csv",
                "total": sum((row.value for row in rows), 0) if data["meter"].aggregation in (
                    "SUM", "COUNT") else None,
            })
    return TemplateResponse(request, "admin/metering/meter/usage.html", context)


def _utc_range(start: dt.datetime, end: dt.datetime, tz) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The form's local From and To in UTC; None for one outside the range a meter query accepts (the API's
    :data:`~metering.api.params.QUERY_EARLIEST` to :data:`~metering.api.params.QUERY_LATEST`)."""
    bounds: list[dt.datetime | None] = []
    for local in (start, end):
        try:
            instant = local.replace(tzinfo=None).replace(tzinfo=tz).astimezone(dt.UTC)
        except OverflowError:
            instant = None
        bounds.append(instant if instant is not None and QUERY_EARLIEST <= instant <= QUERY_LATEST else None)
    return bounds[0], bounds[1]


def usage_csv(meter: Meter, rows, keys: list[str]) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{meter.slug}-usage.csv"'
    writer = csv_writer(response)
    writer.writerow(["window_start", "window_end", "subject", *keys, "value"])
    for row in rows:
        writer.writerow([format_rfc3339(row.window_start), format_rfc3339(row.window_end), row.subject or "",
                         *[row.group_by.get(k) or "" for k in keys], format(row.value, "f")])
    return response
