"""Features: what customers get, optionally metered by a meter filtered to some group-by values."""

from __future__ import annotations

from django.db import transaction

from common.deletion import delete_unless_protected
from metering.models import Meter

from ..models import Feature
from ..rules import feature_filter_problems, key_problem


class FeatureError(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


def feature_problems(*, key: str, name: str, meter: Meter | None, filters: dict | None) -> dict[str, str]:
    errors: dict[str, str] = {}
    problem = key_problem(key)
    if problem:
        errors["key"] = problem
    if not name or not str(name).strip():
        errors["name"] = "name is required"
    filter_problems = feature_filter_problems(filters, meter.group_by if meter else None)
    if filter_problems:
        errors["meter_group_by_filters"] = "; ".join(filter_problems)
    return errors


def _clean_filters(filters: dict | None) -> dict[str, str]:
    return {str(k): str(v) for k, v in (filters or {}).items()}


@transaction.atomic
def feature_create(*, key: str, name: str, meter: Meter | None = None, filters: dict | None = None) -> Feature:
    errors = feature_problems(key=key, name=name, meter=meter, filters=filters)
    if "key" not in errors and Feature.objects.filter(key=key).exists():
        errors["key"] = f"a feature with key {key!r} already exists"
    if errors:
        raise FeatureError(errors)
    return Feature.objects.create(
        key=key, name=name.strip(), meter=meter, meter_group_by_filters=_clean_filters(filters)
    )


@transaction.atomic
def feature_update(*, feature: Feature, name: str, meter: Meter | None, filters: dict | None) -> Feature:
    """Changing the meter or filters changes what every plan using the feature bills from now on."""
    feature = Feature.objects.select_for_update().get(pk=feature.pk)
    errors = feature_problems(key=feature.key, name=name, meter=meter, filters=filters)
    if errors:
        raise FeatureError(errors)
    feature.name, feature.meter, feature.meter_group_by_filters = name.strip(), meter, _clean_filters(filters)
    feature.save()
    return feature


@transaction.atomic
def feature_delete(*, feature: Feature) -> None:
    delete_unless_protected(
        feature, lambda exc: FeatureError({"key": f"feature {feature.key} is used by rate cards; remove them first"}))
