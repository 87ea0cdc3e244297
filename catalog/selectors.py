"""Reads of the catalog: features and plans for the read API, and features by key for the entitlement check."""

from __future__ import annotations

from django.db.models import Prefetch

from common.caches import ProcessCache

from .models import Feature, Plan, RateCard

FEATURE_CACHE_SECONDS = 5.0
FEATURE_CACHE_SIZE = 10_000
_features: ProcessCache[Feature] = ProcessCache(maxsize=FEATURE_CACHE_SIZE, ttl=FEATURE_CACHE_SECONDS,
                                                 spread=0.5)


def forget_cached_features() -> None:
    _features.clear()


def feature_by_key(key: str) -> Feature | None:
    """Features by key, remembered for a few seconds per process (a changed feature applies within 5 s)."""
    hit = _features.get(key)
    if hit is not None:
        return hit
    feature = Feature.objects.select_related("meter").filter(key=key).first()
    if feature is None:
        _features.forget(key)
        return None
    _features.set(key, feature)
    return feature


def feature_list(*, meter_slug: str | None = None) -> list[Feature]:
    features = Feature.objects.select_related("meter").order_by("key")
    if meter_slug:
        features = features.filter(meter__slug=meter_slug)
    return list(features)


def plan_list(*, key: str | None = None, status: str | None = None) -> list[Plan]:
    """Every version of the plans, by key then newest version first, with rate cards and tiers."""
    plans = Plan.objects.prefetch_related(
        Prefetch("rate_cards", RateCard.objects.select_related("feature").prefetch_related("tiers"))
    ).order_by("key", "-version")
    if status:
        plans = plans.filter(status=status)
    if key:
        plans = plans.filter(key=key)
    return list(plans)
