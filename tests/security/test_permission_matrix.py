"""The role × action matrix, walked whole: every action through the admin (a representative page or action per
row, as a logged-in user of each role) and through the API (each endpoint × method, as each role's staff session
and as each token scope). Allowed → 2xx; anything else → 403 (problem+json on the API) and nothing changed.

``MATRIX`` is the source of truth; README's "Who may do what" table is checked against it, cell by cell.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from customers.services.subscriptions import subscription_create
from invoicing.models import CreditNote, Invoice
from invoicing.services.lifecycle import invoice_void
from metering.models import Event, Meter
from metering.services.tokens import api_token_create
from tests.builders import bearer, built_once, cancelled_in_december, kong_air, llm_event, make_meter, monthly_close
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


def event(n: int) -> str:
    return json.dumps(llm_event(event_id=f"matrix-{n}", subject="globex", time="2026-12-20T10:00:00Z"))


NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)


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
    Row("preview invoices", OPERATORS,
        admin=(Page("/admin/invoicing/invoice/preview/customer/{customer}/"),)),
    Row("read invoices", READERS,
        api=(Api("GET", "/api/v1/invoices"), Api("GET", "/api/v1/invoices/{issued}")),
        admin=(Page("/admin/invoicing/invoice/"), Page("/admin/invoicing/invoice/{issued}/change/"))),
    Row("read credit notes", READERS,
        api=(Api("GET", "/api/v1/credit-notes"), Api("GET", "/api/v1/credit-notes/{credit_note}")),
        admin=(Page("/admin/invoicing/creditnote/"),)),
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
    Row("settings: schedules (periodic tasks)", ISSUERS,
        admin=(Page("/admin/django_celery_beat/periodictask/"),)),
    Row("operations: job runs, Stripe webhook events", ISSUERS,
        admin=(Page("/admin/common/jobrun/"), Page("/admin/invoicing/stripewebhookevent/"))),
)


# --- the world: built once for the module's tests, each of which runs in a rolled-back transaction -------------

@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    with built_once(django_db_blocker):
        cancelled_in_december()  # kong-air: cycles 0 and 1 issued, a credit note against cycle 1
        globex = kong_air("globex")
        plan = Invoice.objects.get(cycle=0, customer__key="kong-air").lines.first().subscription.plan
        subscription_create(customer=globex, plan=plan, start=NOV)
        monthly_close(NOV, DEC)
        globex_invoices = Invoice.objects.filter(customer=globex).order_by("cycle")
        issued, to_void = globex_invoices.get(cycle=1), globex_invoices.get(cycle=0)
        invoice_void(invoice=to_void, label="matrix", reason="to reissue")
        make_meter(slug="spare", name="Spare", event_type="spare.event", aggregation="COUNT", value_property="",
                   group_by={})
        users = {role: _staff(role) for role in (VIEWER, OPERATOR, ADMIN)}
        users[SUPERUSER] = User.objects.create_superuser("root", password="pw-123456")
        tokens = {role: api_token_create(name=role, scopes=[scope])[1] for role, scope in TOKEN_SCOPES.items()}
        yield {
            "users": users, "tokens": tokens, "customer": globex.pk, "plan": plan.pk, "issued": issued.pk,
            "voided": to_void.pk, "credit_note": CreditNote.objects.get().pk,
            "spare_meter": Meter.objects.get(slug="spare").pk,
        }


def _staff(role: str) -> User:
    user = User.objects.create_user(role.lower().replace(" ", "-"), password="pw-123456", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def _path(template: str, world: dict) -> str:
    return template.format(**{k: v for k, v in world.items() if isinstance(v, int)})


def _call(client: Client, call: Api, world: dict, headers: dict):
    body = call.body if isinstance(call.body, str) or call.body is None else json.dumps(call.body)
    kwargs = {"data": body, "content_type": call.content_type} if body is not None else {}
    return client.generic(call.method, _path(call.path, world), **kwargs, **headers)


def _cases():
    for row in MATRIX:
        for role in ROLES:
            if row.api or role in SESSIONS:
                yield pytest.param(row, role, id=f"{row.action} | {role}")


# --- the walk ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("row, role", list(_cases()))
def test_the_matrix(world, db, row: Row, role: str):
    allowed = role in row.allowed
    client = Client()
    if role in SESSIONS:
        client.force_login(world["users"][role])
        headers: dict = {}
    else:
        headers = bearer(world["tokens"][role])
    # The admin first: its pages only look (or change a meter the API rows leave alone); the API then acts.
    for page in (row.admin if role in SESSIONS else ()):
        before = page.state(world) if page.state else None
        path = _path(page.path, world)
        response = client.post(path, page.data) if page.data is not None else client.get(path)
        what = f"{role}: admin {'POST' if page.data is not None else 'GET'} {page.path}"
        if allowed:
            assert response.status_code == page.ok, f"{what} → {response.status_code}"
            if page.state:
                assert page.state(world) != before, f"{what} was allowed but changed nothing"
        else:
            assert admin_refused(client, response), f"{what} → {response.status_code}, expected a refusal"
            if page.state:
                assert page.state(world) == before, f"{what} was refused but changed something"

    for call in row.api:
        before = call.state(world) if call.state else None
        response = _call(client, call, world, headers)
        what = f"{role}: {call.method} {call.path}"
        if allowed:
            assert 200 <= response.status_code < 300, f"{what} → {response.status_code} {response.content[:300]!r}"
            if call.state:
                assert call.state(world) != before, f"{what} was allowed but changed nothing"
        else:
            assert response.status_code == 403, f"{what} → {response.status_code}, expected 403"
            assert response["Content-Type"] == PROBLEM, what
            assert response.json()["status"] == 403
            if call.state:
                assert call.state(world) == before, f"{what} was refused but changed something"


def admin_refused(client: Client, response) -> bool:
    """The admin refuses with 403, or (its confirmation pages, the gateway connection) by redirecting back with an
    error message."""
    if response.status_code == 403:
        return True
    if response.status_code != 302 or "/login/" in response["Location"]:
        return False
    page = client.get(response["Location"]).content.decode()
    return "You may not do that." in page or "is for Billing admins" in page


def test_a_finance_viewer_cannot_turn_a_sum_meter_into_a_count(world, db):
    """The issue's own case: a Finance viewer's PUT /api/v1/meters/llm_tokens is 403 and the meter stays SUM."""
    client = Client()
    client.force_login(world["users"][VIEWER])
    response = client.put("/api/v1/meters/llm_tokens", json.dumps({"aggregation": "COUNT"}),
                          content_type="application/json")
    assert response.status_code == 403 and response["Content-Type"] == PROBLEM
    assert "metering.change_meter" in response.json()["detail"]
    assert Meter.objects.get(slug="llm_tokens").aggregation == "SUM"
    created = client.post("/api/v1/meters", json.dumps({"slug": "x", "eventType": "x", "aggregation": "COUNT"}),
                          content_type="application/json")
    deleted = client.delete("/api/v1/meters/spare")
    assert (created.status_code, deleted.status_code) == (403, 403)
    assert set(Meter.objects.values_list("slug", flat=True)) == {"llm_tokens", "spare"}


def test_tokens_do_not_open_the_admin(world, db):
    client = Client()
    for token in world["tokens"].values():
        response = client.get("/admin/metering/meter/", **bearer(token))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


# --- README's table is this matrix --------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"
TABLE_COLUMNS = (VIEWER, OPERATOR, ADMIN, SUPERUSER, "ingest", "read", "manage")


def readme_matrix() -> dict[str, set[str]]:
    text = README.read_text()
    start, end = text.index("<!-- permission-matrix -->"), text.index("<!-- /permission-matrix -->")
    rows: dict[str, set[str]] = {}
    for line in text[start:end].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 1 + len(TABLE_COLUMNS) or not cells[0] or set(cells[0]) <= {"-", ":"} or cells[0] == "action":
            continue
        marks = cells[1:1 + len(TABLE_COLUMNS)]
        assert all(mark in ("✓", "—") for mark in marks), line
        roles = (*SESSIONS, INGEST, READ, MANAGE)
        rows[re.sub(r"\s+", " ", cells[0])] = {role for role, mark in zip(roles, marks, strict=True) if mark == "✓"}
    return rows


def test_readme_shows_exactly_this_matrix():
    assert readme_matrix() == {row.action: set(row.allowed) for row in MATRIX}
