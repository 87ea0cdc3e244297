"""The OpenAPI description shared by every API module (drf-spectacular).

- :class:`BearerTokenScheme` describes the Bearer-token authentication;
- ``Problem`` is the RFC 9457 problem body every error answers with, and :func:`problems` declares error
  responses as ``application/problem+json``;
- :func:`component` registers a raw JSON Schema as a named component (for request bodies a serializer cannot
  state exactly: ``additionalProperties: false``, ``oneOf``, ``propertyNames``), and :func:`ref` points at it;
- :func:`postprocess` (``SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]``) adds those components and the errors
  every operation can answer (401, 403, 429, 503) to the generated document.

The schema is generated as OpenAPI 3.1 so that JSON Schema's ``propertyNames``, ``const`` and ``null`` types
can say exactly what the handlers accept; schemathesis fuzzes the API against it in CI (``.ci/run``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse

PROBLEM_MEDIA_TYPE = "application/problem+json"
# No string the API stores may hold a NUL character (PostgreSQL cannot store it).
NO_NUL = r"^[^\u0000]*$"
DATE_TIME_DESCRIPTION = "RFC 3339 date-time with a UTC offset (`Z` or `+02:00`), e.g. `2026-03-27T00:00:00Z`."

PROBLEM_DESCRIPTIONS = {
    400: "The request is malformed: a parameter or the body is invalid (`errors` names each field).",
    401: "No API token, or an unknown or revoked one (`Authorization: Bearer <token>`).",
    403: "The token lacks the scope this operation needs, or the staff user lacks the permission.",
    404: "No such resource.",
    406: "No representation matches the `Accept` header (or `?format=`).",
    409: "The request conflicts with the current state of the resource.",
    413: "The body is over the size limit (5 MiB) or the batch over 10,000 events.",
    415: "Unsupported `Content-Type` or `Content-Encoding`.",
    429: "Too many requests: retry after the `Retry-After` header's seconds.",
    503: "The service is temporarily unavailable (e.g. the database): retry after `Retry-After` seconds.",
}
# Every operation can answer these, whatever its parameters: authentication, authorization, throttling, outage.
COMMON_PROBLEMS = (401, 403, 429, 503)


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "metering.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API token created in the admin."}


_COMPONENTS: dict[str, dict[str, Any]] = {}
# Operations whose body may be left out (the others' bodies are marked required).
_OPTIONAL_BODIES: set[str] = set()
# A parameter declared with this extension is sent as JSON text: its schema goes under `content`.
JSON_CONTENT = {"x-content": "application/json"}


# The OpenAPI ``webhooks`` section (calls this service makes to receivers), filled by the app that sends them.
_WEBHOOKS: dict[str, Any] = {}


def register_webhooks(webhooks: dict[str, Any]) -> None:
    """Add ``{name: path item}`` entries to the document's ``webhooks`` section."""
    _WEBHOOKS.update(webhooks)


def optional_body(operation_id: str) -> None:
    _OPTIONAL_BODIES.add(operation_id)


def component(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Register ``schema`` as ``#/components/schemas/<name>``; returns a reference to it."""
    _COMPONENTS[name] = schema
    return ref(name)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


PROBLEM = component("Problem", {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string", "description": "`about:blank`"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "index": {"type": ["integer", "null"], "description": "The event's position in a batch (ingest)."},
                "field": {"type": ["string", "null"], "description": "The parameter or field at fault."},
                "message": {"type": "string"},
            },
        }},
    },
})


def problems(*codes: int) -> dict[tuple[int, str], OpenApiResponse]:
    """``responses=`` entries for these status codes, each an ``application/problem+json`` problem."""
    return {(code, PROBLEM_MEDIA_TYPE): OpenApiResponse(PROBLEM, description=PROBLEM_DESCRIPTIONS[code])
            for code in codes}


def date_time(description: str = DATE_TIME_DESCRIPTION, *, nullable: bool = False) -> dict[str, Any]:
    return {"type": ["string", "null"] if nullable else "string", "format": "date-time", "description": description}


def postprocess(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """Add the raw components and the problems every operation can answer."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(_COMPONENTS)
    for path in result.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for parameter in operation.get("parameters", []):
                media_type = parameter.pop("x-content", None)
                if media_type:
                    parameter.pop("style", None)
                    parameter.pop("explode", None)
                    parameter["content"] = {media_type: {"schema": parameter.pop("schema")}}
                elif (parameter["in"] == "query" and parameter["schema"].get("type") in ("string", "integer")
                      and not parameter.get("required")):
                    # every handler reads an empty query parameter (`?to=`) as an absent one (a required one: 400)
                    schema = parameter["schema"]
                    parameter["schema"] = {"anyOf": [schema, {"type": "string", "maxLength": 0}]}
                    if "default" in schema:
                        parameter["schema"]["default"] = schema.pop("default")
                    parameter["description"] = (parameter.get("description", "") + " Empty: as if absent.").strip()
            if "requestBody" in operation:
                operation["requestBody"]["required"] = operation.get("operationId") not in _OPTIONAL_BODIES
            responses = operation["responses"]
            for code in COMMON_PROBLEMS:
                responses.setdefault(str(code), {
                    "description": PROBLEM_DESCRIPTIONS[code],
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": ref("Problem")}},
                })
            operation["responses"] = dict(sorted(responses.items()))
    if _WEBHOOKS:
        result["webhooks"] = dict(sorted(_WEBHOOKS.items()))
    return result
