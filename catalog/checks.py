"""Catalog rules other layers enforce through hooks (registered at app start)."""

from __future__ import annotations


def features_still_valid(meter, new_group_by: dict) -> list[str]:
    """A meter may not drop a group-by that a feature filters on."""
    from .models import Feature

    problems = []
    for feature in Feature.objects.filter(meter=meter):
        missing = sorted(set(feature.meter_group_by_filters or {}) - set(new_group_by or {}))
        if missing:
            problems.append(f"feature {feature.key} filters on {', '.join(missing)}; change the feature first")
    return problems
