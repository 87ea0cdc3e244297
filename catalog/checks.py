"""Catalog rules other layers enforce through hooks (registered at app start)."""

from __future__ import annotations

from metering.enrichment import MeterUpdateRefusal

from .models import Feature, Plan, RateCard

# What a meter counts: frozen while a published (or archived) plan version bills a feature of the meter.
FROZEN_FIELDS = {"event_type": "event type", "aggregation": "aggregation", "value_property": "value property",
                 "value_absent": "what an absent value means"}
WAY_FORWARD = "To change how a published plan meters, publish a new plan version on a new meter."
NAMED_MAX = 5


def _freezing_plans(meter) -> list[str]:
    """``plan token v1 (published) bills feature ai-token`` for each non-draft plan version whose rate cards
    use a feature of the meter (one query)."""
    rows = (RateCard.objects.filter(feature__meter=meter).exclude(plan__status=Plan.Status.DRAFT)
            .values_list("plan__key", "plan__version", "plan__status", "feature__key")
            .order_by("plan__key", "plan__version", "feature__key").distinct())
    by_plan: dict[tuple, list[str]] = {}
    for key, version, status, feature in rows:
        features = by_plan.setdefault((key, version, status), [])
        if feature not in features:
            features.append(feature)
    return [f"plan {key} v{version} ({status}) bills feature{'s' if len(features) > 1 else ''} {', '.join(features)}"
            for (key, version, status), features in by_plan.items()]


def _named(items: list[str]) -> str:
    shown = "; ".join(items[:NAMED_MAX])
    return shown + (f"; and {len(items) - NAMED_MAX} more" if len(items) > NAMED_MAX else "")


def meter_change_refusals(meter, new: dict) -> list[MeterUpdateRefusal]:
    """The catalog's refusals of a meter change (``new``: the full new definition).

    - No feature (of any plan) may lose a group-by it filters on.
    - A meter a published or archived plan version bills (through a feature on one of its rate cards) is
      frozen: its event type, aggregation, value property and value_absent stay, and so do the JSONPaths of the
      group-bys its features filter on; group-bys may be added (and unfiltered ones removed).
    """
    refusals: list[MeterUpdateRefusal] = []
    new_group_by = new.get("group_by") or {}
    old_group_by = meter.group_by or {}
    filtered: dict[str, list[str]] = {}  # group-by key → features filtering on it
    for key, filters in Feature.objects.filter(meter=meter).order_by("key").values_list(
            "key", "meter_group_by_filters"):
        for name in filters or {}:
            filtered.setdefault(name, []).append(key)
        missing = sorted(set(filters or {}) - set(new_group_by))
        if missing:
            refusals.append(MeterUpdateRefusal(
                "group_by", f"feature {key} filters on {', '.join(missing)}; change the feature first"))
    changed = [name for name in FROZEN_FIELDS if new.get(name, getattr(meter, name)) != getattr(meter, name)]
    repathed = sorted(name for name in filtered if name in new_group_by and name in old_group_by
                      and new_group_by[name] != old_group_by[name])
    if not changed and not repathed:
        return refusals
    freezing = _freezing_plans(meter)
    if not freezing:  # used by draft plans only, or by no plan: free to change
        return refusals
    frozen = (f"meter {meter.slug} is frozen ({_named(freezing)}): its event type, aggregation and value "
              "property (and what an absent value means) cannot change, and group-bys can only be added.")
    for name in changed:
        refusals.append(MeterUpdateRefusal(name, f"{frozen} {WAY_FORWARD}"))
    if repathed:
        features = ", ".join(sorted({f for name in repathed for f in filtered[name]}))
        refusals.append(MeterUpdateRefusal(
            "group_by", f"the JSONPath of {', '.join(repathed)} cannot change (feature{'s' if ',' in features else ''} "
                        f"{features} filter{'' if ',' in features else 's'} on it): {frozen} {WAY_FORWARD}"))
    return refusals
