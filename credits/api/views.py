"""Prepaid credits over HTTP.

``GET /api/v1/customers/{idOrKey}/credits`` (read scope): the live balance, what the current period's usage will
take from it, and every grant with what is left of it. ``POST /api/v1/customers/{idOrKey}/credits/grants``
(manage scope) creates a grant (201); ``POST …/credits/grants/{id}/void`` voids what is left of one. Staff
sessions need ``credits.view_creditgrant`` to read and ``credits.manage_credits`` to write.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response

from catalog.money import minor_unit_exponent, to_minor
from common.problems import Problem
from customers.models import Customer
from customers.selectors import as_row_id, customer_by_id_or_key
from metering.api.params import json_object_body, parse_rfc3339
from metering.api.schema import NO_NUL, component, date_time, optional_body, problems
from metering.api.views import ReadView, WriteView
from metering.authentication import api_actor

from ..models import CreditGrant
from ..selectors import customer_credits, grant_json, grant_states
from ..services.grants import CreditError, grant_bought_or_created, grant_void


class GrantWriteView(WriteView):
    """A change to a customer's grants: the `manage` scope, or a staff session allowed to manage credits."""

    permission_model = "credits.creditgrant"
    required_permissions = {"POST": "credits.manage_credits"}


AMOUNT_RE = re.compile(r"^(0|[1-9][0-9]{0,14})(\.[0-9]{1,3})?$")
GRANT_FIELDS = ("amount", "currency", "priority", "effective_at", "expires_at", "applies_to", "source", "description",
                "available")
MAX_FEATURES = 100
MAX_DESCRIPTION = 500
MAX_PRIORITY = 2**31 - 1

_MONEY = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$",
          "description": "Major units of the customer's currency as an exact decimal string, e.g. `20.00`."}
GRANT = component("CreditGrant", {
    "type": "object",
    "required": ["id", "amount", "remaining", "priority", "effective_at", "expires_at", "applies_to", "source",
                 "description", "status"],
    "properties": {
        "id": {"type": "string"},
        "amount": _MONEY,
        "remaining": {**_MONEY, "description": "What is left of it: the sum of its ledger entries."},
        "priority": {"type": "integer", "description": "Lower is used first."},
        "effective_at": date_time(""),
        "expires_at": date_time("", nullable=True),
        "applies_to": {"type": "array", "items": {"type": "string"},
                       "description": "Feature keys it pays for; empty: every charge."},
        "source": {"type": "string", "enum": list(CreditGrant.Source.values)},
        "description": {"type": "string"},
        "status": {"type": "string", "enum": ["active", "used", "scheduled", "expired", "void", "pending"]},
    },
})
CUSTOMER_CREDITS = component("CustomerCredits", {
    "type": "object",
    "required": ["currency", "balance", "pending_usage", "available", "grants"],
    "properties": {
        "currency": {"type": "string"},
        "balance": {**_MONEY, "description": "What the usable grants (effective, not expired, not void) have left."},
        "pending_usage": {**_MONEY, "description": "The current period's rated usage, not yet invoiced."},
        "available": {**_MONEY, "description": "`balance − pending_usage` (may be negative)."},
        "grants": {"type": "array", "items": GRANT, "description": "Every grant, in the order credits are used."},
    },
    "example": {"currency": "USD", "balance": "20.00", "pending_usage": "3.10", "available": "16.90", "grants": [
        {"id": "1", "amount": "20.00", "remaining": "20.00", "priority": 10, "effective_at": "2026-11-01T00:00:00Z",
         "expires_at": None, "applies_to": [], "source": "promotional", "description": "$20 free",
         "status": "active"}]},
})
GRANT_BODY = component("CreditGrantCreate", {
    "type": "object",
    "additionalProperties": False,
    "required": ["amount"],
    "description": "A grant in the customer's currency. Refused (400, `errors` naming the field) beyond what the "
                   "schema says: a zero amount, more decimals than the currency has, another currency than the "
                   "customer's, an expiry not after the effective time, a feature that does not exist.",
    "properties": {
        "amount": {"type": "string", "pattern": AMOUNT_RE.pattern,
                   "description": "Major units, more than zero, e.g. `20.00`."},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$",
                     "description": "Optional; must be the customer's currency."},
        "priority": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY,
                     "description": "Lower is used first (default 100)."},
        "effective_at": date_time("From when it can be used (default: now)."),
        "expires_at": date_time("When what is left expires (default: never).", nullable=True),
        "applies_to": {"type": "array", "maxItems": MAX_FEATURES,
                       "items": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": NO_NUL},
                       "description": "Feature keys it pays for (default: every charge)."},
        "source": {"type": "string", "enum": [s for s in CreditGrant.Source.values if s != "recurring"],
                   "description": "Default `manual`."},
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION, "pattern": NO_NUL},
        "available": {"type": "string", "enum": ["immediately", "on_payment"],
                      "description": "`purchased` only: a top-up is billed on its own invoice (a *Credit top-up* "
                                     "line); its credits are available when that invoice is paid (`on_payment`, "
                                     "the default) or at once (`immediately`)."},
    },
    "example": {"amount": "20.00", "priority": 10, "source": "promotional", "description": "$20 free"},
})
optional_body("voidCreditGrant")
VOID_BODY = component("CreditGrantVoid", {
    "type": "object",
    "additionalProperties": False,
    "properties": {"reason": {"type": "string", "maxLength": MAX_DESCRIPTION, "pattern": NO_NUL}},
})
CUSTOMER = OpenApiParameter("id_or_key", str, OpenApiParameter.PATH, description="The customer's id or key.",
                            examples=[OpenApiExample("key", value="kong-air")])
GRANT_ID = OpenApiParameter("grant_id", {"type": "string", "pattern": "^[0-9]{1,18}$"}, OpenApiParameter.PATH,
                            description="The grant's id.")


def _customer(id_or_key: str) -> Customer:
    customer = customer_by_id_or_key(id_or_key) if "\x00" not in id_or_key else None
    if customer is None:
        raise Problem(404, "Not Found", f"No customer with id or key {id_or_key!r}.")
    return customer


def _invalid(field: str, message: str) -> Problem:
    return Problem(400, "Invalid body", f"{field}: {message}", errors=[{"field": field, "message": message}])


def _text(body: dict, name: str, *, maximum: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value or len(value) > maximum:
        raise _invalid(name, f"must be text of at most {maximum} characters")
    return value


class CustomerCreditsView(ReadView):
    permission_model = "credits.creditgrant"

    @extend_schema(operation_id="getCustomerCredits", summary="A customer's prepaid credits", tags=["Credits"],
                   description="The live balance: what usable grants have left, the current period's rated usage "
                               "not yet invoiced, and `available = balance − pending_usage`.",
                   parameters=[CUSTOMER], responses={200: CUSTOMER_CREDITS, **problems(404)})
    def get(self, request, id_or_key: str):
        customer = _customer(id_or_key)
        return Response(customer_credits(customer, timezone.now()).as_json())


def parse_grant_body(body: dict[str, Any], customer: Customer) -> dict[str, Any]:
    """The grant a request body asks for, as :func:`grant_create` arguments (400 naming a malformed field)."""
    unknown = sorted(str(name) for name in body if name not in GRANT_FIELDS)
    if unknown:
        raise _invalid(unknown[0], "unknown field")
    amount_text = body.get("amount")
    if not isinstance(amount_text, str) or not AMOUNT_RE.match(amount_text):
        raise _invalid("amount", 'must be a decimal string of major units, e.g. "20.00"')
    try:
        amount = Decimal(amount_text)
    except InvalidOperation:
        raise _invalid("amount", "is not a decimal") from None
    if amount <= 0:
        raise _invalid("amount", "must be more than zero")
    if -amount.as_tuple().exponent > minor_unit_exponent(customer.currency):  # type: ignore[operator]
        raise _invalid("amount", f"has more decimals than {customer.currency} has")
    currency = body.get("currency")
    if currency is not None and (not isinstance(currency, str) or not re.fullmatch(r"[A-Z]{3}", currency)):
        raise _invalid("currency", "must be an upper-case ISO 4217 code")
    priority = body.get("priority", 100)
    if isinstance(priority, float) and priority.is_integer() and 0 <= priority <= MAX_PRIORITY:
        priority = int(priority)  # JSON Schema's integer: 10.0 is 10
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        raise _invalid("priority", f"must be a whole number from 0 to {MAX_PRIORITY}")
    effective_at = body.get("effective_at")
    expires_at = body.get("expires_at")
    applies_to = body.get("applies_to", [])
    if (not isinstance(applies_to, list) or len(applies_to) > MAX_FEATURES
            or any(not isinstance(key, str) or not key or len(key) > 64 or "\x00" in key for key in applies_to)):
        raise _invalid("applies_to", f"must be a list of at most {MAX_FEATURES} feature keys")
    source = body.get("source", CreditGrant.Source.MANUAL)
    if source not in CreditGrant.Source.values or source == CreditGrant.Source.RECURRING:
        raise _invalid("source", "must be promotional, purchased or manual")
    available = body.get("available", "on_payment")
    if available not in ("immediately", "on_payment"):
        raise _invalid("available", "must be immediately or on_payment")
    return {
        "amount": to_minor(amount, customer.currency),
        "currency": currency,
        "priority": priority,
        "effective_at": parse_rfc3339("effective_at", effective_at) if effective_at is not None else None,
        "expires_at": parse_rfc3339("expires_at", expires_at) if expires_at is not None else None,
        "applies_to": applies_to,
        "source": source,
        "description": _text(body, "description", maximum=MAX_DESCRIPTION) or "",
        "available": available == "immediately",
    }


def _created(grant: CreditGrant) -> dict[str, Any]:
    state = next(s for s in grant_states(grant.customer_id) if s.grant.pk == grant.pk)
    return grant_json(state)


class CustomerGrantsView(GrantWriteView):
    @extend_schema(operation_id="createCreditGrant", summary="Grant prepaid credits", tags=["Credits"],
                   description="Needs the `manage` scope, or a staff session allowed to manage credits. The credits "
                               "are available from `effective_at`; a `purchased` grant is a top-up billed on its "
                               "own invoice, available when it is paid (or at once with `available: immediately`).",
                   parameters=[CUSTOMER], request={"application/json": GRANT_BODY},
                   responses={201: OpenApiResponse(GRANT, description="The grant."), **problems(400, 404)})
    def post(self, request, id_or_key: str):
        customer = _customer(id_or_key)
        fields = parse_grant_body(json_object_body(request), customer)
        actor, label = api_actor(request)
        available = fields.pop("available")
        try:
            grant = grant_bought_or_created(customer=customer, actor=actor, label=label,
                                            available_immediately=available, **fields)
        except CreditError as exc:
            raise Problem(400, "Invalid body", str(exc),
                          errors=[{"field": name, "message": text} for name, text in exc.errors.items()]) from exc
        return Response(_created(grant), status=201)


class GrantVoidView(GrantWriteView):
    @extend_schema(operation_id="voidCreditGrant", summary="Void what is left of a grant", tags=["Credits"],
                   description="Needs the `manage` scope, or a staff session allowed to manage credits. 409 when "
                               "the grant is already void.",
                   parameters=[CUSTOMER, GRANT_ID], request={"application/json": VOID_BODY},
                   responses={200: GRANT, **problems(400, 404, 409)})
    def post(self, request, id_or_key: str, grant_id: str):
        customer = _customer(id_or_key)
        number = as_row_id(grant_id)
        grant = CreditGrant.objects.filter(pk=number, customer=customer).first() if number is not None else None
        if grant is None:
            raise Problem(404, "Not Found", f"No grant {grant_id!r} of this customer.")
        body = json_object_body(request, example='{"reason": "duplicate"}')
        unknown = sorted(str(name) for name in body if name != "reason")
        if unknown:
            raise _invalid(unknown[0], "unknown field")
        reason = _text(body, "reason", maximum=MAX_DESCRIPTION) or ""
        actor, label = api_actor(request)
        try:
            grant = grant_void(grant=grant, reason=reason.strip(), actor=actor, label=label)
        except CreditError as exc:
            raise Problem(409, "Conflict", str(exc)) from exc
        return Response(_created(grant))
