"""Creating, changing and deleting meters. A new or changed definition rebuilds the meter's rollups."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import ProtectedError

from ..enrichment import meter_update_problems
from ..meter_rules import KONG_PRESETS, validate_meter
from ..models import Meter
from .rollups import meter_rollups_reset

DEFINITION_FIELDS = ("event_type", "aggregation", "value_property", "group_by")
EDITABLE_FIELDS = ("name", "description", *DEFINITION_FIELDS)


class MeterValidationError(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


class MeterInUse(ValueError):
    pass


def _queue_rebuild(meter_id: int) -> None:
    from ..tasks import catch_up_meter

    transaction.on_commit(lambda: catch_up_meter.delay(meter_id))


def _normalized(fields: dict[str, Any]) -> dict[str, Any]:
    fields = dict(fields)
    for key in ("slug", "name", "event_type", "value_property"):
        if isinstance(fields.get(key), str):
            fields[key] = fields[key].strip()
    if fields.get("value_property") is None:
        fields["value_property"] = ""
    if fields.get("group_by") is None:
        fields["group_by"] = {}
    if fields.get("description") is None:
        fields["description"] = ""
    return fields


@transaction.atomic
def meter_create(*, slug: str, name: str, event_type: str, aggregation: str, value_property: str | None = "",
                 group_by: dict[str, str] | None = None, description: str = "") -> Meter:
    fields = _normalized({"slug": slug, "name": name, "event_type": event_type, "aggregation": aggregation,
                          "value_property": value_property, "group_by": group_by, "description": description})
    errors = validate_meter(**{k: fields[k] for k in ("slug", "name", "event_type", "aggregation",
                                                         "value_property", "group_by")})
    if "slug" not in errors and Meter.objects.filter(slug=fields["slug"]).exists():
        errors["slug"] = f'a meter with slug "{fields["slug"]}" already exists'
    if errors:
        raise MeterValidationError(errors)
    meter = Meter.objects.create(**fields)
    _queue_rebuild(meter.pk)  # folds every existing event of its type into the new meter's rollups
    return meter


@transaction.atomic
def meter_update(*, meter: Meter, **changes: Any) -> Meter:
    """Change name/description freely; a changed definition resets the rollups and rebuilds them."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise MeterValidationError({field: f"{field} cannot be changed" for field in sorted(unknown)})
    meter = Meter.objects.select_for_update().get(pk=meter.pk)
    merged = _normalized({**{f: getattr(meter, f) for f in ("slug", *EDITABLE_FIELDS)}, **changes})
    errors = validate_meter(**{k: merged[k] for k in ("slug", "name", "event_type", "aggregation",
                                                         "value_property", "group_by")})
    if "group_by" not in errors:
        problems = meter_update_problems(meter, merged["group_by"])
        if problems:
            errors["group_by"] = "; ".join(problems)
    if errors:
        raise MeterValidationError(errors)
    definition_changed = any(merged[f] != getattr(meter, f) for f in DEFINITION_FIELDS)
    for field in EDITABLE_FIELDS:
        setattr(meter, field, merged[field])
    if definition_changed:
        meter.definition_version += 1
    meter.save()
    if definition_changed:
        meter = meter_rollups_reset(meter=meter)
        _queue_rebuild(meter.pk)
    return meter


@transaction.atomic
def meter_delete(*, meter: Meter) -> None:
    try:
        meter.delete()
    except ProtectedError as exc:
        users = ", ".join(sorted({str(obj) for obj in exc.protected_objects})[:5])
        raise MeterInUse(f"meter {meter.slug} is used by: {users}; remove those first") from exc


def meter_create_from_preset(*, preset: str) -> Meter:
    if preset not in KONG_PRESETS:
        raise MeterValidationError({"preset": f"unknown preset {preset}; known: {', '.join(KONG_PRESETS)}"})
    return meter_create(**KONG_PRESETS[preset])
