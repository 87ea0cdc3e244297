"""Rules of a meter definition (pure: no database), shared by the admin, the API and ``billing_apply``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import jsonpath
from .jsonpath import JsonPath, JsonPathError
from .models import Meter

SLUG_RE = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
SLUG_MAX = 64
NAME_MAX = 200  # Meter.name's column
EVENT_TYPE_MAX = 255
VALUE_PROPERTY_MAX = 255  # Meter.value_property's column
GROUP_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_GROUP_NAMES = frozenset({"subject", "customer_id", "customerId"})
AGGREGATIONS = tuple(Meter.Aggregation.values)
VALUE_ABSENT = tuple(Meter.ValueAbsent.values)
# The aggregations of a number, where "absent means zero" makes sense (COUNT has no value; UNIQUE_COUNT counts
# distinct values, and an absent value is not one).
ABSENT_ZERO_AGGREGATIONS = tuple(a for a in AGGREGATIONS
                                 if a not in (Meter.Aggregation.COUNT, Meter.Aggregation.UNIQUE_COUNT))
# The aggregator builds each series' group object with one jsonb_build_object / json_object call of two
# arguments per key: PostgreSQL takes at most 100 arguments (SQLite 127), so 50 keys is the ceiling.
MAX_GROUP_BY = 50

# The Kong meters of ../shared/fixtures/kong_events.json, offered as one-click presets.
KONG_PRESETS: dict[str, dict[str, Any]] = {
    "llm_tokens": {
        "slug": "llm_tokens", "name": "AI Gateway Tokens", "event_type": "kong.llm_request", "aggregation": "SUM",
        "value_property": "$.tokens", "description": "Tokens of LLM calls through Kong's AI Gateway.",
        "group_by": {"model": "$.model", "provider": "$.provider", "type": "$.type"},
    },
    "api_requests": {
        "slug": "api_requests", "name": "API Requests", "event_type": "kong.api_request", "aggregation": "COUNT",
        "value_property": "", "description": "Requests through the Kong gateway.",
        "group_by": {"request_method": "$.request_method", "route_name": "$.route_name",
                     "service_name": "$.service_name", "status": "$.response_http_status"},
    },
}

# Companion meters of a preset: the same events and group-bys, another value. Kong's kong.llm_request events are
# flat (data.tokens, data.model, data.type …), so the token counts a gateway may add sit beside data.tokens. They
# are sent only when there is something to count: an event without one counts nothing (value_absent: zero).
LLM_TOKEN_COMPANIONS = (
    ("llm_cache_read_tokens", "AI Gateway Cache Read Tokens", "$.cache_read_tokens",
     "Prompt tokens read from the provider's prompt cache"),
    ("llm_cache_write_tokens", "AI Gateway Cache Write Tokens", "$.cache_write_tokens",
     "Prompt tokens written to the provider's prompt cache"),
    ("llm_reasoning_tokens", "AI Gateway Reasoning Tokens", "$.reasoning_tokens",
     "Reasoning (thinking) tokens of the completion"),
)
# What a token of each companion costs, as a token type of the cost table (catalog.ModelCost): providers bill
# reasoning tokens at their output (response) rate. Keyed by the value property, so a meter made by hand that
# counts the same field is costed the same way.
COMPANION_COST_TOKEN_TYPES = {"$.cache_read_tokens": "cache_read", "$.cache_write_tokens": "cache_write",
                              "$.reasoning_tokens": "response"}
PRESET_COMPANIONS: dict[str, tuple[dict[str, Any], ...]] = {
    "llm_tokens": tuple(
        {**KONG_PRESETS["llm_tokens"], "slug": slug, "name": name, "value_property": path,
         "value_absent": Meter.ValueAbsent.ZERO,
         "description": f"{what} of LLM calls through Kong's AI Gateway ({path}; an event without it counts 0)."}
        for slug, name, path, what in LLM_TOKEN_COMPANIONS),
}


def cost_token_type(value_property: str | None) -> str | None:
    """The cost-table token type every token of a meter counting ``value_property`` is (a companion meter's), or
    None when the events' own ``type`` says it (``request`` / ``response`` of ``llm_tokens``)."""
    return COMPANION_COST_TOKEN_TYPES.get(value_property or "")


def preset_meters(preset: str) -> list[dict[str, Any]]:
    """The meters a preset adds: its own, then its companions (empty for an unknown preset)."""
    if preset not in KONG_PRESETS:
        return []
    return [KONG_PRESETS[preset], *PRESET_COMPANIONS.get(preset, ())]


@dataclass(frozen=True)
class MeterDefinition:
    event_type: str
    aggregation: str
    value_path: JsonPath | None
    group_by: dict[str, JsonPath]
    absent_zero: bool = False  # Meter.value_absent == zero: a missing or null value is 0, not a problem

    @property
    def required_value_path(self) -> JsonPath:
        """The path of the value a meter other than COUNT aggregates (a valid one always has it)."""
        if self.value_path is None:
            raise ValueError(f"a {self.aggregation} meter needs a value property")
        return self.value_path


def _required_text_problem(value: Any, label: str, maximum: int, *, example: str = "") -> str | None:
    """What is wrong with a required line of text (missing or blank, too long, with a NUL), or None."""
    if not isinstance(value, str) or not value.strip():
        return f"{label} is required{example}"
    if len(value) > maximum:
        return f"{label} must be at most {maximum} characters"
    if "\x00" in value:
        return f"{label} must not contain NUL characters"
    return None


def validate_meter(*, slug: str, name: str, event_type: str, aggregation: str, value_property: str | None,
                   group_by: Any, description: Any = "", value_absent: Any = Meter.ValueAbsent.INVALID
                   ) -> dict[str, str]:
    """Field → message for every problem; empty when the meter is valid."""
    errors: dict[str, str] = {}
    if not isinstance(slug, str) or not SLUG_RE.match(slug):
        errors["slug"] = "slug must be lowercase letters and digits in words joined by single underscores " \
                         "(e.g. llm_tokens)"
    elif len(slug) > SLUG_MAX:
        errors["slug"] = f"slug must be at most {SLUG_MAX} characters"
    problem = _required_text_problem(name, "name", NAME_MAX)
    if problem:
        errors["name"] = problem
    if description is not None and not isinstance(description, str):
        errors["description"] = "description must be text"
    elif description and "\x00" in description:
        errors["description"] = "description must not contain NUL characters"
    problem = _required_text_problem(event_type, "event type", EVENT_TYPE_MAX,
                                     example=" (the CloudEvent type, e.g. kong.llm_request)")
    if problem:
        errors["event_type"] = problem
    if aggregation not in AGGREGATIONS:
        errors["aggregation"] = f"aggregation must be one of {', '.join(AGGREGATIONS)}"
    if value_property is not None and not isinstance(value_property, str):
        errors["value_property"] = "value property must be text (a JSONPath such as $.tokens)"
    else:
        problem = _value_property_problem(aggregation, value_property or "")
        if problem:
            errors["value_property"] = problem
    problem = _value_absent_problem(aggregation, value_absent)
    if problem:
        errors["value_absent"] = problem
    if group_by is None:
        group_by = {}
    if not isinstance(group_by, dict):
        errors["group_by"] = 'group by must be an object of name → JSONPath, e.g. {"model": "$.model"}'
    elif len(group_by) > MAX_GROUP_BY:
        errors["group_by"] = f"a meter has at most {MAX_GROUP_BY} group-by keys, not {len(group_by)}"
    else:
        problems = []
        for key, path in group_by.items():
            if not isinstance(key, str) or not GROUP_NAME_RE.match(key):
                problems.append(f'"{key}" is not a valid group name (letters, digits and _)')
            elif key in RESERVED_GROUP_NAMES:
                problems.append(f'"{key}" is reserved; choose another group name')
            try:
                jsonpath.parse(path)
            except JsonPathError as exc:
                problems.append(f"{key}: {exc}")
        if problems:
            errors["group_by"] = "; ".join(problems)
    return errors


def _value_property_problem(aggregation: str, value_property: str) -> str | None:
    if aggregation == Meter.Aggregation.COUNT:
        return "COUNT counts events: it takes no value property" if value_property else None
    if aggregation not in AGGREGATIONS:
        return None
    if not value_property:
        return f"{aggregation} needs a value property (a JSONPath such as $.tokens)"
    try:
        jsonpath.parse(value_property)
    except JsonPathError as exc:
        return str(exc)
    if len(value_property) > VALUE_PROPERTY_MAX:
        return f"value property must be at most {VALUE_PROPERTY_MAX} characters"
    return None


def _value_absent_problem(aggregation: str, value_absent: Any) -> str | None:
    if value_absent not in VALUE_ABSENT:
        return f"value absent must be one of {', '.join(VALUE_ABSENT)}"
    if value_absent == Meter.ValueAbsent.ZERO and aggregation in AGGREGATIONS \
            and aggregation not in ABSENT_ZERO_AGGREGATIONS:
        return (f"an absent value can count as zero only for {', '.join(ABSENT_ZERO_AGGREGATIONS)}, "
                f"not {aggregation}")
    return None


def meter_definition(meter) -> MeterDefinition:
    """The parsed definition of a stored (valid) meter."""
    value_path = jsonpath.parse(meter.value_property) if meter.value_property else None
    group_by = {name: jsonpath.parse(path) for name, path in (meter.group_by or {}).items()}
    return MeterDefinition(meter.event_type, meter.aggregation, value_path, group_by,
                           absent_zero=meter.value_absent == Meter.ValueAbsent.ZERO)


def adds_nothing(definition: MeterDefinition, data: Any) -> bool:
    """Whether the event adds nothing to a SUM meter's usage: its value is 0 (e.g. a companion meter's field the
    event does not carry), so there is nothing to price either."""
    if definition.aggregation != Meter.Aggregation.SUM or definition.value_path is None:
        return False
    value, _ = jsonpath.numeric_value(definition.value_path, data, absent_zero=definition.absent_zero)
    return value == 0


def value_problem(definition: MeterDefinition, data: Any) -> str | None:
    """Why this event's data would not be counted by the meter, or None."""
    if definition.aggregation == Meter.Aggregation.COUNT or definition.value_path is None:
        return None
    if definition.aggregation == Meter.Aggregation.UNIQUE_COUNT:
        value = jsonpath.group_value(definition.value_path, data)
        return None if value is not None else f"value at {definition.value_path.text} is missing"
    _, problem = jsonpath.numeric_value(definition.value_path, data, absent_zero=definition.absent_zero)
    return problem
