"""The customer portal shows the credit balance: for a customer who has or had grants, balance, pending usage,
available and each grant's remaining amount and expiry (the page in the project's money and date formats, the JSON
as the credits API answers it); nothing for a customer who never had credits; another customer's credits never;
nothing once the link is revoked or expired; a fixed number of queries however many grants."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from credits.models import CreditGrant
from credits.services.grants import grant_void
from customers.services.subscriptions import subscription_create
from notifications.models import PortalLink
from notifications.services.portal import portal_link_create, portal_link_revoke
from tests.builders import bearer, grant, ingest, kong_air, llm_event, token_plan

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_portal_rate_limit(settings):
    """These requests are not about the rate limit: they must not use up this process's per-address budget (a
    cache shared by the tests of the minute) that the rate-limit tests count on."""
    settings.PORTAL_REQUESTS_PER_MINUTE = 0


@pytest.fixture
def customers_with_credits():
    """Kong Air: 100,000 tokens used this period ($2.00 pending) and two grants; Globex: one grant of its own."""
    now = timezone.now()
    plan = token_plan()
    air, globex = kong_air(), kong_air("globex", "Globex Corp")
    for buyer in (air, globex):
        subscription_create(customer=buyer, plan=plan, start=now - dt.timedelta(days=2))
    ingest([llm_event(tokens=100_000, time=(now - dt.timedelta(minutes=5)).isoformat().replace("+00:00", "Z"))])
    grant(air, 2000, effective_at=now - dt.timedelta(days=1), description="Welcome credit", priority=1,
          expires_at=dt.datetime(2031, 3, 31, tzinfo=dt.UTC))
    grant(air, 550, effective_at=now - dt.timedelta(days=1), description="Goodwill")
    grant(globex, 98765, effective_at=now - dt.timedelta(days=1), description="Globex deal")
    return air, globex


def page(token: str) -> str:
    response = Client().get(f"/portal/{token}/")
    assert response.status_code == 200
    return response.content.decode()


def test_the_json_carries_the_credits_apis_answer_for_this_customer_only(customers_with_credits, make_token):
    air, _ = customers_with_credits
    token = portal_link_create(customer=air).token
    body = Client().get("/api/v1/portal/usage", **bearer(token)).json()
    api = Client().get("/api/v1/customers/kong-air/credits", **bearer(make_token("read"))).json()
    assert body["credits"] == api
    credits = body["credits"]
    assert (credits["balance"], credits["pending_usage"], credits["available"]) == ("25.50", "2.00", "23.50")
    assert [(g["description"], g["remaining"], g["expires_at"]) for g in credits["grants"]] == [
        ("Welcome credit", "20.00", "2031-03-31T00:00:00Z"), ("Goodwill", "5.50", None)]
    assert body["credit_balance"] == "25.50"
    assert "Globex" not in str(body) and "987.65" not in str(body)


def test_the_page_shows_balance_pending_available_and_each_grant_formatted(customers_with_credits):
    air, _ = customers_with_credits
    shown = page(portal_link_create(customer=air).token)
    section = shown.split('<section id="credits">', 1)[1].split("</section>", 1)[0]
    for text in ("$25.50", "$2.00", "$23.50", "Welcome credit", "$20.00", "Mar 31, 2031", "Goodwill", "$5.50",
                 "never", "active"):
        assert text in section, text
    assert "Globex" not in shown and "$987.65" not in shown


def test_another_customers_link_shows_only_their_own_credits(customers_with_credits):
    _, globex = customers_with_credits
    shown = page(portal_link_create(customer=globex).token)
    assert "$987.65" in shown and "Globex deal" in shown
    assert "Welcome credit" not in shown and "Goodwill" not in shown and "$25.50" not in shown
    body = Client().get("/api/v1/portal/usage", **bearer(portal_link_create(customer=globex).token)).json()
    assert [g["description"] for g in body["credits"]["grants"]] == ["Globex deal"]


def test_nothing_is_shown_for_a_customer_who_never_had_credits():
    buyer = kong_air("initech")
    subscription_create(customer=buyer, plan=token_plan(), start=timezone.now() - dt.timedelta(days=2))
    token = portal_link_create(customer=buyer).token
    assert 'id="credits"' not in page(token) and "Credit balance" not in page(token)
    body = Client().get("/api/v1/portal/usage", **bearer(token)).json()
    assert body["credits"] is None and body["credit_balance"] is None


def test_a_customer_whose_credits_are_gone_still_sees_them(customers_with_credits):
    _, globex = customers_with_credits
    grant_void(grant=CreditGrant.objects.get(customer=globex))
    token = portal_link_create(customer=globex).token
    body = Client().get("/api/v1/portal/usage", **bearer(token)).json()
    assert body["credits"]["grants"][0]["status"] == "void"
    assert "void" in page(token)


@pytest.mark.parametrize("end", ["revoke", "expire"])
def test_a_revoked_or_expired_link_shows_no_credits(customers_with_credits, end):
    air, _ = customers_with_credits
    shared = portal_link_create(customer=air)
    if end == "revoke":
        portal_link_revoke(link=shared.link)
    else:
        PortalLink.objects.filter(pk=shared.link.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = Client().get(f"/portal/{shared.token}/")
    assert response.status_code == 404 and b"25.50" not in response.content
    refused = Client().get("/api/v1/portal/usage", **bearer(shared.token))
    assert refused.status_code == 401 and b"25.50" not in refused.content


def test_the_query_count_does_not_grow_with_the_number_of_grants(customers_with_credits,
                                                                 django_assert_max_num_queries):
    air, _ = customers_with_credits
    token = portal_link_create(customer=air).token
    with CaptureQueriesContext(connection) as two_grants_page:
        page(token)
    with CaptureQueriesContext(connection) as two_grants_json:
        Client().get("/api/v1/portal/usage", **bearer(token))
    for n in range(10):
        grant(air, 100 + n, effective_at=timezone.now() - dt.timedelta(hours=1), description=f"extra {n}",
              expires_at=timezone.now() + dt.timedelta(days=30 + n))
    with django_assert_max_num_queries(len(two_grants_page.captured_queries)):
        shown = page(token)
    assert "extra 9" in shown
    with django_assert_max_num_queries(len(two_grants_json.captured_queries)):
        body = Client().get("/api/v1/portal/usage", **bearer(token)).json()
    assert len(body["credits"]["grants"]) == 12


def test_the_json_matches_its_documented_schema_with_and_without_credits(customers_with_credits, make_token):
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # drf-spectacular's dependency

    schema = Client().get("/api/schema/", {"format": "json"}, **bearer(make_token("read"))).json()
    validator = Draft202012Validator({"$ref": "#/components/schemas/PortalUsage", "components": schema["components"]},
                                     format_checker=Draft202012Validator.FORMAT_CHECKER)
    air, _ = customers_with_credits
    none = kong_air("initech")
    for buyer in (air, none):
        body = Client().get("/api/v1/portal/usage", **bearer(portal_link_create(customer=buyer).token)).json()
        assert not list(validator.iter_errors(body))
        assert (body["credits"] is None) == (buyer == none)
    assert not validator.is_valid({**body, "credits": {"balance": "1.00"}})  # the schema can say no
