"""Metering's part of the admin home (registered with common.dashboard from MeteringConfig.ready)."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from .selectors.meters import meters_with_rollup_errors


def dashboard(user) -> dict[str, Any]:
    """``meter_rollup_errors``: the meters the aggregator fails on, for people who may see meters (one query)."""
    if not user.has_perm("metering.view_meter"):
        return {}
    return {"meter_rollup_errors": [
        {"slug": meter.slug, "error": meter.rollup_error, "failed_at": meter.rollup_failed_at,
         "url": reverse("admin:metering_meter_change", args=[meter.pk])}
        for meter in meters_with_rollup_errors()
    ]}
