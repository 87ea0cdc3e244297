"""The event types a webhook endpoint can subscribe to, with the JSON Schema of each one's ``data`` (documented in
the OpenAPI schema's ``webhooks`` section and the README)."""

from __future__ import annotations

from typing import Any

_STR = {"type": "string"}
_NSTR = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_NTIME = {"type": ["string", "null"], "format": "date-time"}
_AMOUNT = {"type": "string", "description": "Major units as an exact decimal string, e.g. `12.34`."}
_DECIMAL = {"type": "string", "description": "An exact decimal, e.g. `800000`."}

INVOICE = {
    "type": "object",
    "required": ["id", "number", "status", "customer", "currency", "total", "period_start", "period_end",
                 "issued_at", "due_at"],
    "properties": {
        "id": _STR, "number": _NSTR, "status": _STR, "customer": {**_STR, "description": "The customer's key."},
        "currency": _STR, "total": _AMOUNT, "period_start": _TIME, "period_end": _TIME, "issued_at": _NTIME,
        "due_at": _NTIME,
    },
}
CREDIT_NOTE = {
    "type": "object",
    "required": ["id", "number", "status", "invoice", "customer", "currency", "total", "reason", "issued_at"],
    "properties": {"id": _STR, "number": _STR, "status": _STR, "invoice": _NSTR, "customer": _STR,
                   "currency": _STR, "total": _AMOUNT, "reason": _STR, "issued_at": _TIME},
}
SUBSCRIPTION = {
    "type": "object",
    "required": ["id", "customer", "plan", "plan_version", "start", "cancel_at", "previous"],
    "properties": {"id": _STR, "customer": _STR, "plan": _STR, "plan_version": {"type": "integer"},
                   "start": _TIME, "cancel_at": _NTIME,
                   "previous": {**_NSTR, "description": "The subscription this one replaced (a plan change)."}},
}
PERIOD = {"type": "object", "required": ["from", "to"], "properties": {"from": _TIME, "to": _TIME}}


def _obj(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties}


EVENT_TYPES: dict[str, tuple[str, dict[str, Any]]] = {
    "invoice.issued": ("An invoice was issued (numbered).", _obj(["invoice"], {"invoice": INVOICE})),
    "invoice.paid": ("An invoice was paid.", _obj(["invoice"], {"invoice": INVOICE})),
    "invoice.voided": ("An invoice was voided.", _obj(["invoice"], {"invoice": INVOICE})),
    "invoice.payment_failed": ("A payment attempt failed (Stripe).", _obj(["invoice"], {"invoice": INVOICE})),
    "invoice.uncollectible": ("An invoice was marked uncollectible.", _obj(["invoice"], {"invoice": INVOICE})),
    "credit_note.issued": ("A credit note was issued against an invoice.",
                           _obj(["credit_note"], {"credit_note": CREDIT_NOTE})),
    "subscription.created": ("A customer subscribed to a plan.",
                             _obj(["subscription"], {"subscription": SUBSCRIPTION})),
    "subscription.canceled": ("A subscription was canceled (now or at period end: see cancel_at).",
                              _obj(["subscription"], {"subscription": SUBSCRIPTION})),
    "subscription.changed": ("A plan change: the new subscription, replacing `previous`.",
                             _obj(["subscription"], {"subscription": SUBSCRIPTION})),
    "entitlement.threshold": ("A customer's usage of a metered entitlement passed a threshold (once per "
                              "threshold per usage period).",
                              _obj(["customer", "feature", "threshold_percent", "usage", "limit", "period"],
                                   {"customer": _STR, "feature": _STR, "threshold_percent": {"type": "integer"},
                                    "usage": _DECIMAL, "limit": _DECIMAL, "period": PERIOD})),
    "spend.threshold": ("A customer's previewed total for the current period passed their spend alert amount.",
                        _obj(["customer", "currency", "amount", "threshold", "period"],
                             {"customer": _STR, "currency": _STR, "amount": _AMOUNT, "threshold": _AMOUNT,
                              "period": PERIOD})),
    "credits.low": ("A customer's available prepaid credits (balance less the current period's usage not yet "
                    "invoiced) fell below its low-credit alert's threshold. Once per crossing; again only after "
                    "they were back at or above it.",
                    _obj(["customer", "available", "threshold"],
                         {"customer": {**_STR, "description": "The customer's key."},
                          "available": {**_AMOUNT, "description": "Major units, may be negative, e.g. `-1.50`."},
                          "threshold": _AMOUNT})),
    "usage.unpriced": (
        "A customer used, today (UTC), a model (dimension values of a dimensional rate card) that no price row and no "
        "default prices: it is not billed. Once per `key` per UTC day, whichever customer used it first that day; "
        "found within about a minute of the usage arriving. `key` is `<plan key>@v<version>/<rate card key>/"
        "<dimension>=<value>,…` (e.g. `ai@v3/llm/model=gpt-5,type=request`, `(none)` for a missing value): the "
        "table to add a row to, and that row's match.",
        _obj(["key", "customer", "subject", "subjects", "plan", "plan_version", "rate_card", "feature", "meter",
              "model", "dimensions", "quantity", "warning", "period", "date"],
             {"key": _STR, "customer": {**_STR, "description": "The customer's key."},
              "subject": {**_NSTR, "description": "A subject of the customer that sent the usage (the first of "
                                                  "`subjects`)."},
              "subjects": {"type": "array", "items": _STR, "maxItems": 20,
                           "description": "The customer's subjects that sent it in `period` (at most 20)."},
              "plan": _STR, "plan_version": {"type": "integer"}, "rate_card": _STR,
              "feature": {**_STR, "description": "The rate card's feature key."},
              "meter": {**_NSTR, "description": "The feature's meter slug."},
              "model": {**_NSTR, "description": "The `model` dimension's value (null: none, or no such dimension)."},
              "dimensions": {"type": "object", "additionalProperties": _NSTR,
                             "description": "The usage's value of each dimension of the table, e.g. "
                                            "`{\"model\": \"gpt-5\", \"type\": \"request\"}` (null: the event "
                                            "had none)."},
              "quantity": {**_DECIMAL, "description": "The customer's unpriced usage of it in `period`."},
              "warning": {**_STR, "description": "As the invoice preview shows it: `no price for model=gpt-5, "
                                                 "type=request`."},
              "period": {**PERIOD, "description": "What `quantity` counts: from the start of the UTC day (or of "
                                                  "the subscription) until the evaluation."},
              "date": {"type": "string", "format": "date", "description": "The UTC day it is announced for."}})),
    "usage.unattributed": ("Usage arrived from a subject that no customer includes: nobody is billed for it. "
                           "Once per subject per day.",
                           _obj(["subject", "date"], {"subject": _STR, "date": {"type": "string", "format": "date"}})),
    "test": ("A test event sent from the admin.", _obj(["message"], {"message": _STR})),
}
SUBSCRIBABLE = [name for name in EVENT_TYPES if name != "test"]


def webhook_schemas() -> dict[str, Any]:
    """The OpenAPI 3.1 ``webhooks`` entries: one POST per event type with its body."""
    result = {}
    for name, (description, data) in EVENT_TYPES.items():
        body = {"type": "object", "required": ["type", "timestamp", "data"], "properties": {
            "type": {"type": "string", "const": name}, "timestamp": _TIME, "data": data}}
        result[name] = {"post": {
            "operationId": f"webhook_{name.replace('.', '_')}", "summary": name, "description": description,
            "tags": ["Webhooks"],
            "parameters": [
                {"name": "webhook-id", "in": "header", "required": True, "schema": _STR,
                 "description": "msg_…: the same for every attempt of this event (dedupe on it)."},
                {"name": "webhook-timestamp", "in": "header", "required": True, "schema": _STR,
                 "description": "Unix seconds of this attempt."},
                {"name": "webhook-signature", "in": "header", "required": True, "schema": _STR,
                 "description": "`v1,<base64 HMAC-SHA256>` (Standard Webhooks); two during a secret rotation."},
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"2XX": {"description": "Received. Anything else is retried (410 disables the "
                                                 "endpoint)."}},
        }}
    return result
