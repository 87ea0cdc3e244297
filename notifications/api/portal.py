"""``GET /api/v1/portal/usage``: the portal's data as JSON, for embedding in the customer's own product, with the
portal token as ``Authorization: Bearer <token>`` (OpenMeter's portal-token idea). The token opens one customer's
data; API tokens and staff sessions are not accepted here (they have the full API)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, permissions
from rest_framework.response import Response
from rest_framework.views import APIView

from credits.api.views import CUSTOMER_CREDITS
from metering.api.schema import component, date_time, problems
from metering.authentication import BearerAuthentication, Principal
from metering.throttles import Throttled

from ..models import PortalLink
from ..selectors.portal import portal_data
from ..services.portal import portal_link_resolve
from ..throttle import portal_wait

_PERIOD = {"type": ["object", "null"], "required": ["from", "to"],
           "properties": {"from": date_time(""), "to": date_time("")}}
_DECIMAL = {"type": ["string", "null"], "description": "An exact decimal."}
_AMOUNT = {"type": "string", "description": "Major units as an exact decimal string."}
PORTAL_USAGE = component("PortalUsage", {
    "type": "object",
    "required": ["customer", "generated_at", "features", "credit_balance", "credits", "preview", "invoices",
                 "credit_notes"],
    "properties": {
        "customer": {"type": "object", "required": ["key", "name", "currency"], "properties": {
            "key": {"type": "string"}, "name": {"type": "string"}, "currency": {"type": "string"}}},
        "generated_at": date_time(""),
        "features": {"type": "array", "items": {"type": "object", "required": [
            "plan", "feature", "name", "kind", "has_access", "usage", "limit", "soft_limit", "period", "daily"],
            "properties": {
                "plan": {"type": "string"}, "feature": {"type": "string"}, "name": {"type": "string"},
                "kind": {"type": "string", "enum": ["metered", "static", "boolean", "none"]},
                "has_access": {"type": "boolean"}, "usage": _DECIMAL, "limit": _DECIMAL,
                "soft_limit": {"type": ["boolean", "null"]}, "period": _PERIOD,
                "daily": {"type": "array", "description": "Cumulative usage by UTC day this period.",
                          "items": {"type": "object", "required": ["date", "usage"], "properties": {
                              "date": {"type": "string", "format": "date"}, "usage": _DECIMAL}}},
            }}},
        "credit_balance": {"type": ["string", "null"],
                           "description": "Prepaid credits left: `credits.balance` (null: the customer never had "
                                          "credits)."},
        "credits": {"oneOf": [CUSTOMER_CREDITS, {"type": "null"}],
                    "description": "The customer's prepaid credits, as `GET /api/v1/customers/{idOrKey}/credits` "
                                   "answers them: balance, pending usage, available and every grant with what is "
                                   "left of it and its expiry. Null for a customer who never had a credit grant."},
        "preview": {"type": "object", "required": ["customer", "currency", "period_start", "period_end", "lines",
                                                    "subtotal", "total"], "properties": {
            "customer": {"type": "string"}, "currency": {"type": "string"},
            "period_start": date_time("", nullable=True), "period_end": date_time("", nullable=True),
            "lines": {"type": "array", "items": {"$ref": "#/components/schemas/InvoiceLine"}},
            "subtotal": _AMOUNT, "total": _AMOUNT,
            "credit_notes": {"type": "array", "items": {"$ref": "#/components/schemas/InvoiceLine"}}}},
        "invoices": {"type": "array", "items": {"type": "object", "required": [
            "id", "number", "status", "total", "currency", "period_start", "period_end", "issued_at"], "properties": {
            "id": {"type": "string"}, "number": {"type": ["string", "null"]}, "status": {"type": "string"},
            "total": _AMOUNT, "currency": {"type": "string"}, "period_start": date_time(""),
            "period_end": date_time(""), "issued_at": date_time("", nullable=True)}}},
        "credit_notes": {"type": "array", "items": {"type": "object", "required": [
            "id", "number", "status", "invoice", "total", "currency", "issued_at"], "properties": {
            "id": {"type": "string"}, "number": {"type": "string"}, "status": {"type": "string"},
            "invoice": {"type": ["string", "null"]}, "total": _AMOUNT, "currency": {"type": "string"},
            "issued_at": date_time("")}}},
    },
})


class PortalPrincipal(Principal):
    def __init__(self, link: PortalLink) -> None:
        super().__init__(f"portal:{link.pk}")
        self.link = link


class PortalTokenAuthentication(BearerAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, value = str(header).partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise exceptions.NotAuthenticated("Send 'Authorization: Bearer <portal token>'.")
        token = value.strip()
        wait = portal_wait(request, token)
        if wait:
            raise Throttled(wait, "Too many portal requests: retry after a minute.")
        link = portal_link_resolve(token)
        if link is None:
            raise exceptions.AuthenticationFailed("Unknown, expired or revoked portal token.")
        return PortalPrincipal(link), link


class PortalTokenScheme(OpenApiAuthenticationExtension):
    target_class = "notifications.api.portal.PortalTokenAuthentication"
    name = "portalToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "A customer portal token (the last part of a shared portal link)."}


class HasPortalLink(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, PortalLink) and request.method in ("GET", "HEAD", "OPTIONS")


class PortalUsageView(APIView):
    authentication_classes = [PortalTokenAuthentication]
    permission_classes = [HasPortalLink]

    @extend_schema(operation_id="getPortalUsage", summary="A customer's usage, preview and invoices (portal token)",
                   tags=["Portal"],
                   description="Authenticated with a customer portal token (not an API token): exactly that "
                               "customer's data.",
                   responses={200: PORTAL_USAGE, **problems(400)})
    def get(self, request):
        link: PortalLink = request.auth
        return Response(portal_data(link.customer))
