"""The credits API: the live balance, creating and voiding grants, and hostile bodies (400 problem+json, nothing
written)."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from catalog.models import Feature
from credits.models import CreditGrant, LedgerEntry
from customers.services.subscriptions import subscription_create
from tests.builders import ai_token_feature, bearer, cent_plan, customer, grant, ingest, kong_air, tokens, utc

pytestmark = pytest.mark.django_db
PROBLEM = "application/problem+json"


@pytest.fixture
def manage_token(make_token) -> str:
    return make_token("manage", name="manager")


def post(api, path: str, body, token: str):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return api.generic("POST", path, data, "application/json", **bearer(token))


def test_live_balance_with_pending_usage(api, read_token):
    now = timezone.now()
    air = kong_air()
    start = utc(now.year, now.month, 1)
    subscription_create(customer=air, plan=cent_plan(), start=start)
    ingest([tokens(150, now - (now - start) / 2)])  # $1.50 this period, not yet invoiced
    credit = grant(air, 2000, effective_at=start, priority=10, description="$20 free", source="promotional")
    body = api.get("/api/v1/customers/kong-air/credits", **bearer(read_token)).json()
    assert (body["currency"], body["balance"], body["pending_usage"], body["available"]) == (
        "USD", "20.00", "1.50", "18.50")
    assert body["grants"] == [{
        "id": str(credit.pk), "amount": "20.00", "remaining": "20.00", "priority": 10,
        "effective_at": body["grants"][0]["effective_at"], "expires_at": None, "applies_to": [],
        "source": "promotional", "description": "$20 free", "status": "active"}]


def test_create_a_grant_and_void_it(api, manage_token, read_token):
    ai_token_feature()
    customer("acme")
    response = post(api, "/api/v1/customers/acme/credits/grants",
                    {"amount": "12.50", "priority": 5, "applies_to": ["ai-token"], "source": "promotional",
                     "effective_at": "2026-01-01T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z",
                     "description": "top-up"}, manage_token)
    assert response.status_code == 201, response.content
    created = response.json()
    assert (created["amount"], created["remaining"], created["priority"], created["applies_to"],
            created["source"], created["expires_at"]) == ("12.50", "12.50", 5, ["ai-token"], "promotional",
                                                          "2027-01-01T00:00:00Z")
    grant_row = CreditGrant.objects.get()
    assert (grant_row.amount, grant_row.created_by_label) == (1250, "api")
    voided = post(api, f"/api/v1/customers/acme/credits/grants/{grant_row.pk}/void", {"reason": "refund"},
                  manage_token)
    assert voided.status_code == 200 and voided.json()["status"] == "void" and voided.json()["remaining"] == "0.00"
    assert list(LedgerEntry.objects.order_by("pk").values_list("kind", "amount")) == [("grant", 1250),
                                                                                      ("void", -1250)]
    again = post(api, f"/api/v1/customers/acme/credits/grants/{grant_row.pk}/void", {}, manage_token)
    assert again.status_code == 409 and again["Content-Type"] == PROBLEM
    body = api.get("/api/v1/customers/acme/credits", **bearer(read_token)).json()
    assert body["balance"] == "0.00"


@pytest.mark.parametrize("body, field", [
    ({"amount": "0"}, "amount"),
    ({"amount": "0.00"}, "amount"),
    ({"amount": "-5.00"}, "amount"),
    ({"amount": 5}, "amount"),
    ({"amount": "5.001"}, "amount"),  # USD has 2 decimals
    ({"amount": "1e3"}, "amount"),
    ({"amount": "9999999999999999"}, "amount"),
    ({}, "amount"),
    ({"amount": "5.00", "currency": "EUR"}, "currency"),
    ({"amount": "5.00", "currency": "usd"}, "currency"),
    ({"amount": "5.00", "expires_at": "2026-01-01T00:00:00Z", "effective_at": "2026-02-01T00:00:00Z"},
     "expires_at"),
    ({"amount": "5.00", "expires_at": "2026-01-01T00:00:00Z", "effective_at": "2026-01-01T00:00:00Z"},
     "expires_at"),
    ({"amount": "5.00", "applies_to": ["no-such-feature"]}, "applies_to"),
    ({"amount": "5.00", "applies_to": "ai-token"}, "applies_to"),
    ({"amount": "5.00", "applies_to": [1]}, "applies_to"),
    ({"amount": "5.00", "priority": -1}, "priority"),
    ({"amount": "5.00", "priority": True}, "priority"),
    ({"amount": "5.00", "priority": 2**40}, "priority"),
    ({"amount": "5.00", "priority": 1.5}, "priority"),
    ({"amount": "5.00", "source": "recurring"}, "source"),
    ({"amount": "5.00", "source": "gift"}, "source"),
    ({"amount": "5.00", "effective_at": "yesterday"}, "effective_at"),
    ({"amount": "5.00", "effective_at": "10000-01-01T00:00:00Z"}, "effective_at"),
    ({"amount": "5.00", "description": "x" * 501}, "description"),
    ({"amount": "5.00", "description": "nul\u0000"}, "NUL"),  # the one JSON decoder refuses it
    ({"amount": "5.00", "surprise": 1}, "surprise"),
])
def test_bad_grants_are_400_and_write_nothing(api, manage_token, body, field):
    ai_token_feature()
    customer("acme")
    response = post(api, "/api/v1/customers/acme/credits/grants", body, manage_token)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == PROBLEM
    assert field in json.dumps(response.json())
    assert not CreditGrant.objects.exists() and not LedgerEntry.objects.exists()


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"5"', b"{", b'{"amount": "5.00"'])
def test_bodies_that_are_not_objects_are_400(api, manage_token, raw):
    customer("acme")
    response = post(api, "/api/v1/customers/acme/credits/grants", raw, manage_token)
    assert response.status_code == 400 and response["Content-Type"] == PROBLEM
    assert not CreditGrant.objects.exists()


def test_unknown_customers_and_grants_are_404(api, manage_token, read_token):
    acme = customer("acme")
    other = grant(customer("globex"), 100, effective_at=utc(2026, 1, 1))
    assert api.get("/api/v1/customers/nobody/credits", **bearer(read_token)).status_code == 404
    assert post(api, "/api/v1/customers/nobody/credits/grants", {"amount": "1.00"}, manage_token).status_code == 404
    for grant_id in ("999999", str(other.pk), "abc", "99999999999999999999999"):
        response = post(api, f"/api/v1/customers/{acme.key}/credits/grants/{grant_id}/void", {}, manage_token)
        assert response.status_code == 404, grant_id
    assert CreditGrant.objects.get().voided_at is None


def test_a_void_body_must_be_an_object_with_a_reason_only(api, manage_token):
    acme = customer("acme")
    credit = grant(acme, 100, effective_at=utc(2026, 1, 1))
    bodies: list = [{"reason": 5}, {"why": "x"}, [], {"reason": "x" * 501}]
    for body in bodies:
        response = post(api, f"/api/v1/customers/acme/credits/grants/{credit.pk}/void", body, manage_token)
        assert response.status_code == 400, body
    credit.refresh_from_db()
    assert credit.voided_at is None


def test_an_integral_number_is_an_integer_priority(api, manage_token):
    customer("acme")
    created = post(api, "/api/v1/customers/acme/credits/grants", {"amount": "1.00", "priority": 7.0}, manage_token)
    assert created.status_code == 201 and created.json()["priority"] == 7


def test_a_purchased_grant_is_a_top_up_billed_on_its_own_invoice(api, manage_token):
    from invoicing.models import Invoice

    customer("acme")
    later = post(api, "/api/v1/customers/acme/credits/grants", {"amount": "100.00", "source": "purchased"},
                 manage_token)
    assert later.status_code == 201 and later.json()["status"] == "pending"
    now = post(api, "/api/v1/customers/acme/credits/grants",
               {"amount": "50.00", "source": "purchased", "available": "immediately"}, manage_token)
    assert now.status_code == 201 and now.json()["status"] == "active"
    invoices = Invoice.objects.filter(subscription__isnull=True).order_by("pk")
    assert [(i.total, i.lines.get().kind) for i in invoices] == [(10000, "credit_top_up"), (5000, "credit_top_up")]
    assert post(api, "/api/v1/customers/acme/credits/grants", {"amount": "1.00", "available": "later"},
                manage_token).status_code == 400


def test_jpy_amounts_have_no_decimals(api, manage_token):
    customer("tokyo", currency="JPY")
    assert post(api, "/api/v1/customers/tokyo/credits/grants", {"amount": "500.5"}, manage_token).status_code == 400
    created = post(api, "/api/v1/customers/tokyo/credits/grants", {"amount": "500"}, manage_token)
    assert created.status_code == 201 and created.json()["amount"] == "500"
    assert CreditGrant.objects.get().amount == 500
    assert Feature.objects.count() == 0
