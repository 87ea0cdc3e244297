"""What the events list and explorer show beside each event, contributed by the layers that know it.

``metering`` knows meters, so it can say "no meter found for event type: X"; only ``customers`` knows
which customer a subject belongs to. Higher layers register an enricher here at app-ready time, so
metering shows their findings without importing them (dependencies stay downward).

An enricher takes a list of events and returns ``{event pk: {"validationError": str, "customerId": str,
...}}``. The first validation error reported for an event wins, in registration order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Enricher = Callable[[list], dict[int, dict[str, Any]]]
_enrichers: list[tuple[int, str, Enricher]] = []


def register_event_enricher(name: str, enricher: Enricher, *, order: int = 100) -> None:
    """Register (or replace) an enricher; lower ``order`` runs first."""
    global _enrichers
    _enrichers = [item for item in _enrichers if item[1] != name]
    _enrichers.append((order, name, enricher))
    _enrichers.sort(key=lambda item: (item[0], item[1]))


def enrich_events(events: Iterable) -> dict[int, dict[str, Any]]:
    events = list(events)
    merged: dict[int, dict[str, Any]] = {event.pk: {"validationError": None} for event in events}
    for _, _, enricher in _enrichers:
        for pk, extra in enricher(events).items():
            target = merged.setdefault(pk, {"validationError": None})
            for key, value in extra.items():
                if key == "validationError":
                    if target["validationError"] is None and value:
                        target["validationError"] = value
                elif key not in target:
                    target[key] = value
    return merged


# --- customer → subjects, for the meter query's filterCustomerId -------------------------------------------

SubjectResolver = Callable[[list[str]], dict[str, list[str]]]
_subject_resolver: list[SubjectResolver] = []


def register_customer_subject_resolver(resolver: SubjectResolver) -> None:
    """``resolver(customer ids or keys) → {id or key: [subjects]}`` (unknown ones absent)."""
    _subject_resolver[:] = [resolver]


def customer_subjects(customer_ids: list[str]) -> dict[str, list[str]] | None:
    """None when no layer above metering knows customers."""
    if not _subject_resolver:
        return None
    return _subject_resolver[0](customer_ids)


# --- checks higher layers run before a meter's definition changes ------------------------------------------


@dataclass(frozen=True)
class MeterUpdateRefusal:
    """Why a higher layer refuses a meter change: the field it concerns and a message naming what holds it
    (e.g. catalog: the published plan versions whose features use the meter, a feature filtering on a key)."""

    field: str  # event_type, aggregation, value_property, value_absent or group_by
    message: str


MeterCheck = Callable[[Any, dict], list[MeterUpdateRefusal]]
_meter_checks: list[MeterCheck] = []


def register_meter_update_check(check: MeterCheck) -> None:
    """``check(meter, new) → refusals``: ``meter`` as stored, ``new`` the full new definition
    (``event_type``, ``aggregation``, ``value_property``, ``value_absent``, ``group_by``). E.g. catalog refuses
    dropping a group-by a feature filters on, and any change of what a published plan's meter counts ("frozen")."""
    if check not in _meter_checks:
        _meter_checks.append(check)


def meter_update_refusals(meter, new: dict) -> list[MeterUpdateRefusal]:
    return [refusal for check in _meter_checks for refusal in check(meter, new)]
