"""The role × action matrix (``MATRIX``) and the data it is walked on (``build_world``): who may do what, through
the admin and the API. ``tests/security/test_permission_matrix.py`` walks it; README's table is checked against it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.views import APIView

from billing_site.api_docs import DocsAccess
from credits.models import CreditGrant
from customers.models import Subscription
from customers.services.subscriptions import subscription_create
from invoicing.models import CreditNote, Invoice
from invoicing.services.lifecycle import invoice_void
from metering.authentication import HasScope
from metering.models import Event, Meter
from metering.services.tokens import api_token_create
from notifications.models import WebhookEndpoint
from notifications.services.endpoints import endpoint_create
from tests.builders import cancelled_in_december, grant, kong_air, llm_event, make_meter, monthly_close
from tests.builders.moments import utc

VIEWER, OPERATOR, ADMIN, SUPERUSER = "Finance viewer", "Billing operator", "Billing admin", "superuser"
INGEST, READ, MANAGE = "ingest token", "read token", "manage token"
SESSIONS = (VIEWER, OPERATOR, ADMIN, SUPERUSER)
TOKEN_SCOPES = {INGEST: "ingest", READ: "read", MANAGE: "manage"}
ROLES = (*SESSIONS, *TOKEN_SCOPES)
READERS = frozenset({VIEWER, OPERATOR, ADMIN, SUPERUSER, READ})
OPERATORS = frozenset({OPERATOR, ADMIN, SUPERUSER})
ISSUERS = frozenset({ADMIN, SUPERUSER})
PROBLEM = "application/problem+json"
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)
PUBLIC_HOOK = "https://93.184.215.14/hooks"  # a public address literal: no DNS lookup in the SSRF check


def event(n: int) -> str:
    return json.dumps(llm_event(event_id=f"matrix-{n}", subject="globex", time="2026-12-20T10:00:00Z"))


@dataclass(frozen=True)
class Api:
    """One API call; ``path`` may name world keys in braces. ``state`` reads what a refused call must not change."""

    method: str
    path: str
    body: Any = None
    content_type: str = "application/json"
    state: Callable[[dict], Any] | None = None


@dataclass(frozen=True)
class Page:
    """One admin request: a page (GET) or a form (POST with ``data``); ``ok`` is the allowed answer."""

    path: str
    data: dict | None = None
    ok: int = 200
    state: Callable[[dict], Any] | None = None


@dataclass(frozen=True)
class Row:
    action: str
    allowed: frozenset
    api: tuple[Api, ...] = ()
    admin: tuple[Page, ...] = ()


def _meter(slug: str) -> Callable[[dict], Any]:
    return lambda world: list(Meter.objects.filter(slug=slug).values_list("name", "aggregation", "description"))


def _invoice(key: str) -> Callable[[dict], Any]:
    return lambda world: (Invoice.objects.get(pk=world[key]).status, Invoice.objects.count())


def _webhooks(world: dict) -> Any:
    return list(WebhookEndpoint.objects.order_by("pk").values_list("url", "description", "enabled"))


def _grants(world: dict) -> Any:
    return list(CreditGrant.objects.order_by("pk").values_list("pk", "voided_at"))


def _events(world: dict) -> int:
    return Event.objects.count()


MATRIX: tuple[Row, ...] = (
    Row("read events", READERS,
        api=(Api("GET", "/api/v1/events"),),
        admin=(Page("/admin/metering/event/"),)),
    Row("post events", frozenset({INGEST}),
        api=(Api("POST", "/api/v1/events", event(1), "application/cloudevents+json", _events),
             Api("POST", "/api/v3/openmeter/events", event(2), "application/cloudevents+json", _events),
             Api("POST", "/v3/openmeter/events", event(3), "application/cloudevents+json", _events))),
    Row("read meters and usage", READERS,
        api=(Api("GET", "/api/v1/meters"), Api("GET", "/api/v1/meters/llm_tokens"),
             Api("GET", "/api/v1/meters/llm_tokens/query?windowSize=DAY"),
             Api("POST", "/api/v1/meters/llm_tokens/query", {"windowSize": "MONTH"})),
        admin=(Page("/admin/metering/meter/"), Page("/admin/metering/meter/usage/"))),
    Row("create meters", OPERATORS | {MANAGE},
        api=(Api("POST", "/api/v1/meters", {"slug": "matrix_meter", "eventType": "matrix.event",
                                            "aggregation": "COUNT"}, state=_meter("matrix_meter")),),
        admin=(Page("/admin/metering/meter/add/"),)),
    Row("change meters", OPERATORS | {MANAGE},
        api=(Api("PUT", "/api/v1/meters/llm_tokens", {"name": "Renamed", "description": "by the matrix"},
                 state=_meter("llm_tokens")),),
        admin=(Page("/admin/metering/meter/{spare_meter}/change/",
                    {"name": "Renamed spare", "description": "", "event_type": "spare.event", "aggregation": "COUNT",
                     "value_property": "", "group_by": "{}", "_save": "Save"}, ok=302, state=_meter("spare")),)),
    Row("delete meters", OPERATORS | {MANAGE},
        api=(Api("DELETE", "/api/v1/meters/spare", state=_meter("spare")),),
        admin=(Page("/admin/metering/meter/{spare_meter}/delete/"),)),
    Row("read features", READERS,
        api=(Api("GET", "/api/v1/features"),),
        admin=(Page("/admin/catalog/feature/"),)),
    Row("read plans", READERS,
        api=(Api("GET", "/api/v1/plans"),),
        admin=(Page("/admin/catalog/plan/"), Page("/admin/catalog/plan/{plan}/change/"))),
    Row("edit the catalog (features, plans, rate cards)", OPERATORS,
        admin=(Page("/admin/catalog/feature/add/"), Page("/admin/catalog/plan/add/"))),
    Row("read customers and their entitlements", READERS,
        api=(Api("GET", "/api/v1/customers/kong-air/entitlements/ai-token/value"),),
        admin=(Page("/admin/customers/customer/"), Page("/admin/customers/customer/{customer}/change/"))),
    Row("edit customers", OPERATORS,
        admin=(Page("/admin/customers/customer/add/"),)),
    Row("edit subscriptions", OPERATORS,
        admin=(Page("/admin/customers/subscription/add/"),)),
    Row("read prepaid credits", READERS,
        api=(Api("GET", "/api/v1/customers/globex/credits"),),
        admin=(Page("/admin/credits/creditgrant/"), Page("/admin/credits/ledgerentry/"))),
    Row("grant, adjust and void prepaid credits", ISSUERS | {MANAGE},
        api=(Api("POST", "/api/v1/customers/globex/credits/grants", {"amount": "5.00"}, state=_grants),
             Api("POST", "/api/v1/customers/globex/credits/grants/{grant}/void", {"reason": "matrix"},
                 state=_grants)),
        admin=(Page("/admin/credits/creditgrant/add/"), Page("/admin/credits/creditgrant/{grant}/do/adjust/"))),
    Row("preview invoices", OPERATORS,
        admin=(Page("/admin/invoicing/invoice/preview/customer/{customer}/"),)),
    Row("read invoices", READERS,
        api=(Api("GET", "/api/v1/invoices"), Api("GET", "/api/v1/invoices/{issued}"),
             Api("GET", "/api/v1/invoices/{issued}/pdf")),
        admin=(Page("/admin/invoicing/invoice/"), Page("/admin/invoicing/invoice/{issued}/change/"),
               Page("/admin/invoicing/invoice/{issued}/pdf/"))),
    Row("read margins of per-model prices", READERS,
        api=(Api("GET", "/api/v1/margins?from=2026-01-01T00:00:00Z&to=2026-12-01T00:00:00Z&groupBy=model"),),
        admin=(Page("/admin/invoicing/invoice/margins/"),)),
    Row("read credit notes", READERS,
        api=(Api("GET", "/api/v1/credit-notes"), Api("GET", "/api/v1/credit-notes/{credit_note}"),
             Api("GET", "/api/v1/credit-notes/{credit_note}/pdf")),
        admin=(Page("/admin/invoicing/creditnote/"), Page("/admin/invoicing/creditnote/{credit_note}/pdf/"))),
    Row("void invoices", ISSUERS | {MANAGE},
        api=(Api("POST", "/api/v1/invoices/{issued}/void", {"reason": "matrix"}, state=_invoice("issued")),),
        admin=(Page("/admin/invoicing/invoice/{issued}/do/void/"),)),
    Row("reissue invoices", ISSUERS | {MANAGE},
        api=(Api("POST", "/api/v1/invoices/{voided}/reissue", state=_invoice("voided")),),
        admin=(Page("/admin/invoicing/invoice/{voided}/do/reissue/"),)),
    Row("issue invoices, record payments, close cycles", ISSUERS,
        admin=(Page("/admin/invoicing/invoice/{issued}/do/mark_paid/"),)),
    Row("API tokens (create, rate limits, revoke)", ISSUERS,
        admin=(Page("/admin/metering/apitoken/"), Page("/admin/metering/apitoken/add/"),
               Page("/admin/metering/apitoken/connect/"))),
    Row("operations: schedules (periodic tasks)", frozenset({SUPERUSER}),
        admin=(Page("/admin/django_celery_beat/periodictask/"),)),
    Row("read webhook endpoints and their delivery log", READERS - {READ} | {MANAGE},
        api=(Api("GET", "/api/v1/webhook-endpoints"), Api("GET", "/api/v1/webhook-endpoints/{webhook}")),
        admin=(Page("/admin/notifications/webhookendpoint/"), Page("/admin/notifications/delivery/"))),
    Row("manage webhook endpoints (create, change, delete)", ISSUERS | {MANAGE},
        api=(Api("POST", "/api/v1/webhook-endpoints", {"url": f"{PUBLIC_HOOK}/new"}, state=_webhooks),
             Api("PUT", "/api/v1/webhook-endpoints/{webhook}", {"url": f"{PUBLIC_HOOK}/a", "description": "changed"},
                 state=_webhooks),
             Api("DELETE", "/api/v1/webhook-endpoints/{spare_webhook}", state=_webhooks)),
        admin=(Page("/admin/notifications/webhookendpoint/add/"),)),
    Row("share customer portal links", OPERATORS,
        admin=(Page("/admin/notifications/portallink/share/{customer}/"),)),
    Row("operations: job runs, Stripe webhook events", ISSUERS,
        admin=(Page("/admin/common/jobrun/"), Page("/admin/invoicing/stripewebhookevent/"))),
)


# --- the world ---------------------------------------------------------------------------------------------------

def build_world() -> dict:
    """Kong Air (cycles 0 and 1 issued, a credit note), Globex (cycle 1 issued, cycle 0 void), a spare meter, a user
    per role and a token per scope. Built once (``built_once``): the tests only read it or roll back."""
    cancelled_in_december()  # kong-air: cycles 0 and 1 issued, a credit note against cycle 1
    globex = kong_air("globex")
    plan = Subscription.objects.get(customer__key="kong-air").plan
    subscription_create(customer=globex, plan=plan, start=NOV)
    monthly_close(NOV, DEC)
    globex_invoices = Invoice.objects.filter(customer=globex).order_by("cycle")
    issued, to_void = globex_invoices.get(cycle=1), globex_invoices.get(cycle=0)
    invoice_void(invoice=to_void, label="matrix", reason="to reissue")
    credit = grant(globex, 2000, effective_at=DEC, description="matrix credits")
    make_meter(slug="spare", name="Spare", event_type="spare.event", aggregation="COUNT", value_property="",
               group_by={})
    webhook = endpoint_create(url=f"{PUBLIC_HOOK}/a", description="matrix").endpoint
    spare_webhook = endpoint_create(url=f"{PUBLIC_HOOK}/spare").endpoint
    users = {role: _staff(role) for role in (VIEWER, OPERATOR, ADMIN)}
    users[SUPERUSER] = User.objects.create_superuser("root", password="pw-123456")
    tokens = {role: api_token_create(name=role, scopes=[scope])[1] for role, scope in TOKEN_SCOPES.items()}
    return {
        "users": users, "tokens": tokens, "customer": globex.pk, "plan": plan.pk, "issued": issued.pk,
        "voided": to_void.pk, "credit_note": CreditNote.objects.get().pk,
        "spare_meter": Meter.objects.get(slug="spare").pk, "webhook": webhook.pk, "spare_webhook": spare_webhook.pk,
        "grant": credit.pk,
    }


def _staff(role: str) -> User:
    user = User.objects.create_user(role.lower().replace(" ", "-"), password="pw-123456", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def path_in(template: str, world: dict) -> str:
    return template.format(**{k: v for k, v in world.items() if isinstance(v, int)})


def api_call(client: Client, call: Api, world: dict, headers: dict[str, Any]):
    body = call.body if isinstance(call.body, str) or call.body is None else json.dumps(call.body)
    return client.generic(call.method, path_in(call.path, world), body or "", call.content_type, **headers)


def api_views() -> dict[str, type[APIView]]:
    """Route → view class of every DRF view of the project that uses the default permission (the API)."""
    found: dict[str, type[APIView]] = {}

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                cls = getattr(pattern.callback, "cls", None)
                if not (isinstance(cls, type) and issubclass(cls, APIView)):
                    continue
                permissions = cls().get_permissions()
                # The schema and docs pages are not data: tests/billing_site/test_api_docs.py covers who reads them.
                if cls is not None and any(isinstance(permission, HasScope) for permission in permissions) and not any(
                        isinstance(permission, DocsAccess) for permission in permissions):
                    found[prefix + str(pattern.pattern)] = cls

    walk(get_resolver().url_patterns, "/")
    return found
