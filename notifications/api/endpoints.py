"""Webhook endpoints over HTTP (``manage`` scope, or a staff session with the webhook endpoint permissions):

``GET/POST /api/v1/webhook-endpoints``, ``GET/PUT/DELETE /api/v1/webhook-endpoints/{id}``. The secret is in the
answer to the POST only (``whsec_…``); rotating it is an admin action.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from common.parsers import JsonBodyParser
from common.problems import Problem
from common.time import format_rfc3339
from metering.api.schema import NO_NUL, component, date_time, problems

from ..event_types import SUBSCRIBABLE
from ..models import WebhookEndpoint
from ..services.endpoints import (
    MAX_DESCRIPTION,
    EndpointError,
    endpoint_create,
    endpoint_delete,
    endpoint_update,
)

MANAGE = dict.fromkeys(("GET", "HEAD", "OPTIONS", "POST", "PUT", "DELETE"), "manage")
FIELDS = {"url", "event_types", "description", "enabled"}
MAX_ID_DIGITS = 18

_PROPERTIES: dict[str, Any] = {
    "url": {"type": "string", "maxLength": 1000, "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[^\u0000\s]+$",
            "description": "https:// (http:// only with WEBHOOKS_ALLOW_HTTP); a host that resolves to public "
                           "addresses only (unless WEBHOOKS_ALLOW_PRIVATE_NETWORKS)."},
    "event_types": {"type": "array", "items": {"type": "string", "enum": SUBSCRIBABLE},
                    "description": "The event types it wants; empty or absent: all."},
    "description": {"type": "string", "maxLength": MAX_DESCRIPTION, "pattern": NO_NUL},
    "enabled": {"type": "boolean"},
}
ENDPOINT_BODY = component("WebhookEndpointInput", {
    "type": "object", "additionalProperties": False, "required": ["url"], "properties": _PROPERTIES,
    "example": {"url": "https://example.com/hooks/billing", "event_types": ["invoice.issued"],
                "description": "product backend"},
})
ENDPOINT = component("WebhookEndpoint", {
    "type": "object",
    "required": ["id", "url", "event_types", "description", "enabled", "disabled_reason", "failing_since",
                 "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"}, "url": {"type": "string"},
        "event_types": {"type": "array", "items": {"type": "string"}}, "description": {"type": "string"},
        "enabled": {"type": "boolean"},
        "disabled_reason": {"type": "string", "description": "Why it was disabled (410, failing for days)."},
        "failing_since": date_time("First failed delivery since the last success.", nullable=True),
        "created_at": date_time(""), "updated_at": date_time(""),
    },
})
CREATED_ENDPOINT = component("WebhookEndpointCreated", {
    "allOf": [ENDPOINT, {"type": "object", "required": ["secret"], "properties": {
        "secret": {"type": "string", "description": "whsec_…: shown this once; verify signatures with it."}}}],
})
ENDPOINT_ID = OpenApiParameter("endpoint_id", {"type": "string", "pattern": NO_NUL}, OpenApiParameter.PATH,
                               description="The endpoint's id.")


def endpoint_json(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "id": str(endpoint.pk), "url": endpoint.url, "event_types": list(endpoint.event_types),
        "description": endpoint.description, "enabled": endpoint.enabled,
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": format_rfc3339(endpoint.failing_since) if endpoint.failing_since else None,
        "created_at": format_rfc3339(endpoint.created_at), "updated_at": format_rfc3339(endpoint.updated_at),
    }


def _body(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise Problem(400, "Invalid body", 'send a JSON object such as {"url": "https://example.com/hooks"}')
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise Problem(400, "Invalid body", f"unknown fields: {', '.join(unknown)[:200]}",
                      errors=[{"field": name[:100], "message": "unknown field"} for name in unknown[:20]])
    if "url" not in data:
        raise Problem(400, "Invalid body", "url is required", errors=[{"field": "url", "message": "required"}])
    if "enabled" in data and not isinstance(data["enabled"], bool):
        raise Problem(400, "Invalid body", "enabled must be true or false",
                      errors=[{"field": "enabled", "message": "not a boolean"}])
    return data


def _invalid(exc: EndpointError) -> Problem:
    return Problem(400, "Invalid webhook endpoint", str(exc), errors=[{"field": exc.field, "message": str(exc)}])


def _endpoint_or_404(endpoint_id: str) -> WebhookEndpoint:
    found = None
    if endpoint_id.isascii() and endpoint_id.isdigit() and len(endpoint_id) <= MAX_ID_DIGITS:
        found = WebhookEndpoint.objects.filter(pk=int(endpoint_id)).first()
    if found is None:
        raise Problem(404, "Not Found", f"No webhook endpoint {endpoint_id[:100]!r}.")
    return found


class WebhookEndpointListView(APIView):
    required_scopes = MANAGE
    permission_model = "notifications.webhookendpoint"
    parser_classes = [JsonBodyParser]

    @extend_schema(operation_id="listWebhookEndpoints", summary="List webhook endpoints", tags=["Webhooks"],
                   description="Needs the `manage` scope (or a staff session allowed to view webhook endpoints).",
                   responses={200: {"type": "array", "items": ENDPOINT}})
    def get(self, request):
        return Response([endpoint_json(e) for e in WebhookEndpoint.objects.order_by("id")])

    @extend_schema(operation_id="createWebhookEndpoint", summary="Create a webhook endpoint", tags=["Webhooks"],
                   description="The answer carries the signing secret, once. A URL that is not https, does not "
                               "resolve, or resolves to a loopback/private address is refused (400).",
                   request={"application/json": ENDPOINT_BODY},
                   responses={201: OpenApiResponse(CREATED_ENDPOINT, description="Created; `secret` shown once."),
                              **problems(400)})
    def post(self, request):
        data = _body(request.data)
        try:
            new = endpoint_create(url=data["url"], event_types=data.get("event_types"),
                                  description=data.get("description", ""), enabled=data.get("enabled", True))
        except EndpointError as exc:
            raise _invalid(exc) from None
        return Response({**endpoint_json(new.endpoint), "secret": new.secret}, status=201)


class WebhookEndpointDetailView(APIView):
    required_scopes = MANAGE
    permission_model = "notifications.webhookendpoint"
    parser_classes = [JsonBodyParser]

    @extend_schema(operation_id="getWebhookEndpoint", summary="Get a webhook endpoint", tags=["Webhooks"],
                   parameters=[ENDPOINT_ID], responses={200: ENDPOINT, **problems(404)})
    def get(self, request, endpoint_id: str):
        return Response(endpoint_json(_endpoint_or_404(endpoint_id)))

    @extend_schema(operation_id="updateWebhookEndpoint", summary="Change a webhook endpoint", tags=["Webhooks"],
                   description="Replaces url, event_types, description and enabled (absent: empty list, empty "
                               "description, enabled). Enabling a disabled endpoint sends what waited.",
                   parameters=[ENDPOINT_ID], request={"application/json": ENDPOINT_BODY},
                   responses={200: ENDPOINT, **problems(400, 404)})
    def put(self, request, endpoint_id: str):
        endpoint = _endpoint_or_404(endpoint_id)
        data = _body(request.data)
        try:
            endpoint = endpoint_update(endpoint=endpoint, url=data["url"], event_types=data.get("event_types"),
                                       description=data.get("description", ""), enabled=data.get("enabled", True))
        except EndpointError as exc:
            raise _invalid(exc) from None
        return Response(endpoint_json(endpoint))

    @extend_schema(operation_id="deleteWebhookEndpoint", summary="Delete a webhook endpoint", tags=["Webhooks"],
                   parameters=[ENDPOINT_ID],
                   responses={204: OpenApiResponse(description="Deleted, with its delivery log."), **problems(404)})
    def delete(self, request, endpoint_id: str):
        endpoint_delete(endpoint=_endpoint_or_404(endpoint_id))
        return Response(status=204)
