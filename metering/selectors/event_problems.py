"""Why an event would not be billed, as far as metering can tell (no meter, or a bad value)."""

from __future__ import annotations

from collections import defaultdict

from ..meter_rules import meter_definition, value_problem
from ..models import Meter


def meter_problems(events: list) -> dict[int, dict[str, str]]:
    """The events-list enricher of the metering layer."""
    types = {event.type for event in events}
    definitions = defaultdict(list)
    for meter in Meter.objects.filter(event_type__in=types).order_by("slug"):
        definitions[meter.event_type].append(meter_definition(meter))
    problems: dict[int, dict[str, str]] = {}
    for event in events:
        meters = definitions.get(event.type)
        if not meters:
            problems[event.pk] = {"validationError": f"no meter found for event type: {event.type}"}
            continue
        for definition in meters:
            problem = value_problem(definition, event.data)
            if problem:
                problems[event.pk] = {"validationError": problem}
                break
    return problems
