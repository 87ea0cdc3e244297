"""Creating, changing and deleting meters. A new or changed definition rebuilds the meter's rollups."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
from django.db.models import ProtectedError

from common.deletion import delete_unless_protected
from common.queue import enqueue_on_commit

from ..enrichment import meter_update_refusals
from ..meter_rules import KONG_PRESETS, preset_meters, validate_meter
from ..models import Meter
from .rollups import meter_rollups_reset

DEFINITION_FIELDS = ("event_type", "aggregation", "value_property", "value_absent", "group_by")
EDITABLE_FIELDS = ("name", "description", *DEFINITION_FIELDS)
VALIDATED_FIELDS = ("slug", *EDITABLE_FIELDS)


class MeterValidationError(ValueError):
    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


class MeterFrozen(MeterValidationError):
    """The change is refused because of what uses the meter, not because it is malformed: features of
    published (or archived) plan versions freeze its event type, aggregation and value property (and the
    JSONPaths of the group-bys they filter on), and no feature may lose a group-by it filters on.
    ``errors`` maps each refused field to a message naming what holds it; the API answers 409."""

    def __init__(self, slug: str, errors: dict[str, str]) -> None:
        self.slug = slug
        super().__init__(errors)
        self.args = (self.detail(),)

    def detail(self, field_name: Callable[[str], str] = str) -> str:
        """Each distinct reason once, after the fields it refuses (``field_name`` renames them)."""
        by_message: dict[str, list[str]] = {}
        for field, message in self.errors.items():
            by_message.setdefault(message, []).append(field_name(field))
        return "; ".join(f"{', '.join(fields)}: {message}" for message, fields in by_message.items())


class MeterSlugTaken(MeterValidationError):
    """Another meter has the slug (the API answers 409)."""


class MeterInUse(ValueError):
    pass


def _queue_rebuild(meter_id: int) -> None:
    enqueue_on_commit("metering.catch_up_meter", meter_id=meter_id)


def _normalized(fields: dict[str, Any]) -> dict[str, Any]:
    fields = dict(fields)
    for key in ("slug", "name", "event_type", "value_property"):
        if isinstance(fields.get(key), str):
            fields[key] = fields[key].strip()
    if fields.get("value_property") is None:
        fields["value_property"] = ""
    if fields.get("group_by") is None:
        fields["group_by"] = {}
    if fields.get("value_absent") is None:
        fields["value_absent"] = Meter.ValueAbsent.INVALID
    if fields.get("description") is None:
        fields["description"] = ""
    return fields


@transaction.atomic
def meter_create(*, slug: str, name: str, event_type: str, aggregation: str, value_property: str | None = "",
                 group_by: dict[str, str] | None = None, description: str = "",
                 value_absent: str | None = Meter.ValueAbsent.INVALID) -> Meter:
    fields = _normalized({"slug": slug, "name": name, "event_type": event_type, "aggregation": aggregation,
                          "value_property": value_property, "group_by": group_by, "description": description,
                          "value_absent": value_absent})
    errors = validate_meter(**{k: fields[k] for k in VALIDATED_FIELDS})
    if errors:
        raise MeterValidationError(errors)
    if Meter.objects.filter(slug=fields["slug"]).exists():
        raise MeterSlugTaken({"slug": f'a meter with slug "{fields["slug"]}" already exists'})
    meter = Meter.objects.create(**fields)
    _queue_rebuild(meter.pk)  # folds every existing event of its type into the new meter's rollups
    return meter


def meter_update_check(*, meter: Meter, **changes: Any) -> dict[str, Any]:
    """The meter's fields after ``changes``, or :class:`MeterValidationError` (malformed) /
    :class:`MeterFrozen` (refused by what uses the meter). Writes nothing: the admin form runs it to show
    the same refusals as form errors, :func:`meter_update` before it saves."""
    unknown = set(changes) - set(EDITABLE_FIELDS)
    if unknown:
        raise MeterValidationError({field: f"{field} cannot be changed" for field in sorted(unknown)})
    merged = _normalized({**{f: getattr(meter, f) for f in ("slug", *EDITABLE_FIELDS)}, **changes})
    errors = validate_meter(**{k: merged[k] for k in VALIDATED_FIELDS})
    if errors:
        raise MeterValidationError(errors)
    if any(merged[f] != getattr(meter, f) for f in DEFINITION_FIELDS):
        refused: dict[str, list[str]] = {}
        for refusal in meter_update_refusals(meter, {f: merged[f] for f in DEFINITION_FIELDS}):
            refused.setdefault(refusal.field, []).append(refusal.message)
        if refused:
            raise MeterFrozen(meter.slug, {field: "; ".join(messages) for field, messages in refused.items()})
    return merged


@transaction.atomic
def meter_update(*, meter: Meter, **changes: Any) -> Meter:
    """Change name/description freely; a changed definition resets the rollups and rebuilds them.

    Raises :class:`MeterValidationError` for a malformed definition and :class:`MeterFrozen` for a change
    what uses the meter forbids (see :func:`metering.enrichment.register_meter_update_check`)."""
    meter = Meter.objects.select_for_update().get(pk=meter.pk)
    merged = meter_update_check(meter=meter, **changes)
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
    def in_use(exc: ProtectedError) -> MeterInUse:
        users = ", ".join(sorted({str(obj) for obj in exc.protected_objects})[:5])
        return MeterInUse(f"meter {meter.slug} is used by: {users}; remove those first")

    delete_unless_protected(meter, in_use)


def preset_missing(preset: str) -> list[dict[str, Any]]:
    """The meters of a preset (its own and its companions) that no meter's slug holds yet."""
    meters = preset_meters(preset)
    taken = set(Meter.objects.filter(slug__in=[m["slug"] for m in meters]).values_list("slug", flat=True))
    return [m for m in meters if m["slug"] not in taken]


@transaction.atomic
def meter_create_from_preset(*, preset: str) -> list[Meter]:
    """Create the meters of a Kong preset that are missing (the preset's meter, then its companions, e.g.
    llm_tokens with llm_cache_read_tokens, llm_cache_write_tokens and llm_reasoning_tokens); returns those
    created. A slug already taken is left as it is; when all are taken, :class:`MeterSlugTaken`."""
    if preset not in KONG_PRESETS:
        raise MeterValidationError({"preset": f"unknown preset {preset}; known: {', '.join(KONG_PRESETS)}"})
    missing = preset_missing(preset)
    if not missing:
        raise MeterSlugTaken({"slug": f"the meters of preset {preset} "
                                      f"({', '.join(m['slug'] for m in preset_meters(preset))}) already exist"})
    return [meter_create(**fields) for fields in missing]
