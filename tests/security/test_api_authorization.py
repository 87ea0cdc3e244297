"""The one authorization rule, beyond the matrix: every API view declares what it acts on, the permission is derived
in one place, undeclared things are refused, users who are not active staff are refused, session writes need CSRF,
and hostile Authorization headers are a 401 problem+json (never a 5xx, never a database lookup)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from rest_framework.response import Response
from rest_framework.test import APIClient, APIRequestFactory, force_authenticate
from rest_framework.views import APIView

from catalog.api.features import FeatureListView
from invoicing.api.invoices import InvoiceReissueView, InvoiceVoidView
from metering.api.events import EventsView, KongEventsView
from metering.api.meters import MeterDetailView, MeterListView, MeterQueryView
from metering.authentication import required_permission, required_scope
from metering.models import Meter
from tests.builders import bearer
from tests.security.matrix import ADMIN, MATRIX, PROBLEM, SESSIONS, api_call, api_views

pytestmark = pytest.mark.django_db


def test_every_api_view_declares_what_it_acts_on():
    views = api_views()
    assert {"/api/v1/events", "/api/v3/openmeter/events", "/v3/openmeter/events", "/api/v1/meters",
            "/api/v1/meters/<str:id_or_slug>", "/api/v1/meters/<str:id_or_slug>/query", "/api/v1/features",
            "/api/v1/plans", "/api/v1/customers/<str:id_or_key>/entitlements/<str:feature_key>/value",
            "/api/v1/invoices", "/api/v1/invoices/<str:invoice_id>", "/api/v1/invoices/<str:invoice_id>/void",
            "/api/v1/invoices/<str:invoice_id>/reissue", "/api/v1/invoices/<str:invoice_id>/pdf",
            "/api/v1/credit-notes", "/api/v1/credit-notes/<str:credit_note_id>",
            "/api/v1/credit-notes/<str:credit_note_id>/pdf", "/api/v1/margins", "/api/v1/webhook-endpoints",
            "/api/v1/webhook-endpoints/<str:endpoint_id>", "/api/v1/customers/<str:id_or_key>/credits",
            "/api/v1/customers/<str:id_or_key>/credits/grants",
            "/api/v1/customers/<str:id_or_key>/credits/grants/<str:grant_id>/void"} == set(views)
    for route, cls in views.items():
        view = cls()
        methods = [m.upper() for m in cls.http_method_names if m not in ("options", "head") and hasattr(cls, m)]
        assert methods, route
        for method in methods:
            scope = required_scope(view, method)
            assert scope in ("ingest", "read", "manage"), f"{method} {route} declares no scope"
            permission = required_permission(view, method)
            if scope == "ingest":
                assert permission is None, f"{method} {route}: posting events must stay token-only"
                continue
            assert permission, f"{method} {route} declares no model or permission"
            app_label, codename = permission.split(".")
            assert Permission.objects.filter(content_type__app_label=app_label, codename=codename).exists(), (
                f"{method} {route} needs {permission}, which does not exist")


@pytest.mark.parametrize("view, method, expected", [
    (MeterListView, "GET", "metering.view_meter"),
    (MeterListView, "HEAD", "metering.view_meter"),
    (MeterListView, "OPTIONS", "metering.view_meter"),
    (MeterListView, "POST", "metering.add_meter"),
    (MeterDetailView, "PUT", "metering.change_meter"),
    (MeterDetailView, "DELETE", "metering.delete_meter"),
    (MeterQueryView, "POST", "metering.view_meter"),  # a POST that reads
    (FeatureListView, "GET", "catalog.view_feature"),
    (EventsView, "GET", "metering.view_event"),
    (EventsView, "POST", None),  # ingest: tokens only
    (KongEventsView, "POST", None),
    (InvoiceVoidView, "POST", "invoicing.issue_invoice"),
    (InvoiceReissueView, "POST", "invoicing.issue_invoice"),
    (MeterDetailView, "PATCH", None),  # not declared: nobody
])
def test_the_permission_is_derived_in_one_place(view, method, expected):
    assert required_permission(view(), method) == expected


class Undeclared(APIView):
    """Reads without a model; writes without a scope."""

    def get(self, request):
        return Response({"ok": True})

    def patch(self, request):
        return Response({"ok": True})


class Declared(APIView):
    required_scopes = {"GET": "read"}
    permission_model = "metering.meter"

    def get(self, request):
        return Response({"ok": True})


def test_undeclared_views_and_methods_are_refused_even_to_superusers(make_token):
    factory = APIRequestFactory()
    root = User.objects.create_superuser("root", password="pw-123456")
    for method, view in (("get", Undeclared), ("patch", Undeclared)):
        request = getattr(factory, method)("/x")
        force_authenticate(request, user=root)
        assert view.as_view()(request).status_code == 403
    for scope in ("read", "manage", "ingest"):
        token = make_token(scope)
        response = Undeclared.as_view()(factory.patch("/x", **bearer(token)))
        assert response.status_code == 403, scope  # an undeclared write is no scope's
    request = factory.get("/x")
    force_authenticate(request, user=root)
    assert Declared.as_view()(request).status_code == 200
    delete = factory.delete("/x")
    force_authenticate(delete, user=root)
    assert Declared.as_view()(delete).status_code == 405  # not implemented: 405, not a permission question


def test_an_inactive_or_non_staff_user_object_is_refused():
    """HasScope itself: whatever authenticates a user who is not active staff, the answer is 403."""
    factory = APIRequestFactory()
    variants: list[dict[str, Any]] = [{"is_staff": True, "is_active": False, "is_superuser": True},
                                      {"is_staff": False}]
    for fields in variants:
        user = User.objects.create_user(f"u{len(fields)}", password="pw-123456", **fields)
        request = factory.get("/x")
        force_authenticate(request, user=user)
        response = Declared.as_view()(request)
        assert response.status_code == 403 and "active staff" in str(response.data["detail"])


def all_calls():
    return [call for row in MATRIX for call in row.api]


def test_every_endpoint_refuses_whoever_is_not_active_staff_or_a_token(world):
    billing = Group.objects.get(name=ADMIN)
    no_group = User.objects.create_user("staff-without-role", password="pw-123456", is_staff=True)
    not_staff = User.objects.create_user("customer-user", password="pw-123456")
    not_staff.groups.add(billing)  # every permission of a Billing admin, but not staff
    inactive = User.objects.create_user("left-the-company", password="pw-123456", is_staff=True)
    inactive.groups.add(billing)
    clients = {"anonymous": Client()}
    for name, user in (("staff without a role", no_group), ("not staff", not_staff), ("inactive", inactive)):
        clients[name] = Client()
        clients[name].force_login(user)
    inactive.is_active = False
    inactive.save()
    meters = sorted(Meter.objects.values_list("slug", "aggregation", "name"))
    for name, client in clients.items():
        for call in all_calls():
            response = api_call(client, call, world, {})
            expected = 401 if name in ("anonymous", "inactive") else 403  # a deactivated user's session is gone
            assert response.status_code == expected, f"{name}: {call.method} {call.path} → {response.status_code}"
            assert response["Content-Type"] == PROBLEM
            if expected == 401:
                assert response["WWW-Authenticate"] == "Bearer"
    assert sorted(Meter.objects.values_list("slug", "aggregation", "name")) == meters


def test_session_writes_need_the_csrf_token(world):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(world["users"][ADMIN])
    body = json.dumps({"name": "Renamed"})
    refused = client.put("/api/v1/meters/llm_tokens", body, content_type="application/json")
    assert refused.status_code == 403 and refused["Content-Type"] == PROBLEM and "CSRF" in refused.json()["detail"]
    assert Meter.objects.get(slug="llm_tokens").name != "Renamed"
    client.get("/admin/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    allowed = client.put("/api/v1/meters/llm_tokens", body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert allowed.status_code == 200 and Meter.objects.get(slug="llm_tokens").name == "Renamed"


def test_a_session_with_every_permission_still_cannot_post_events(world):
    client = Client()
    for role in SESSIONS:
        client.force_login(world["users"][role])
        response = client.post("/api/v1/events", json.dumps({"specversion": "1.0"}),
                               content_type="application/cloudevents+json")
        assert response.status_code == 403 and "ingest" in response.json()["detail"]


# --- hostile Authorization headers --------------------------------------------------------------------------------

HOSTILE = {
    "NUL in the token": "Bearer bbo_abc\x00def",
    "NUL after a real-looking token": "Bearer bbo_" + "a" * 43 + "\x00",
    "10 KB token": "Bearer " + "a" * 10_240,
    "10 KB of spaces": "Bearer" + " " * 10_240,
    "nothing after Bearer": "Bearer",
    "only spaces after Bearer": "Bearer    ",
    "non-ASCII": "Bearer bbo_\u00e9\u00e8\u00ea",
    "a tab inside": "Bearer bbo_abc\tdef",
    "two tokens": "Bearer bbo_abc bbo_def",
    "quotes and SQL": "Bearer bbo_'OR'1'='1",
    "unknown": "Bearer bbo_not-a-real-token",
}


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("method, path", [("GET", "/api/v1/meters"), ("POST", "/api/v1/events"),
                                          ("POST", "/v3/openmeter/events"), ("PUT", "/api/v1/meters/llm_tokens")])
def test_hostile_authorization_headers_are_401(db, name, method, path, django_assert_max_num_queries):
    client = Client(REMOTE_ADDR="198.51.100.9")
    header = HOSTILE[name]
    malformed = name not in ("unknown", "quotes and SQL")
    with django_assert_max_num_queries(0 if malformed else 1):  # malformed tokens never reach the database
        response = client.generic(method, path, "{}", content_type="application/json", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401 and response["Content-Type"] == PROBLEM
    assert response["WWW-Authenticate"] == "Bearer"


def test_other_schemes_and_case(db, read_token):
    client = Client()
    assert client.get("/api/v1/meters", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz").status_code == 401
    assert client.get("/api/v1/meters", HTTP_AUTHORIZATION=f"bearer {read_token}").status_code == 200
    assert client.get("/api/v1/meters", HTTP_AUTHORIZATION=f"BEARER   {read_token}  ").status_code == 200
    assert client.get("/api/v1/meters", HTTP_AUTHORIZATION=f"Bearer {read_token}x").status_code == 401
    assert client.get("/api/v1/meters", HTTP_AUTHORIZATION=f"Bearer {read_token[:-1]}").status_code == 401
