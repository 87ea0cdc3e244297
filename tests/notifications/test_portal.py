"""The customer portal: one customer's data only (tampered tokens and other customers' ids get nothing), signed,
expiring, revocable, read-only, rate-limited, under the site's CSP; the same data as JSON with the portal token."""

from __future__ import annotations

import datetime as dt
import time
from types import SimpleNamespace

import pytest
from django.core import signing
from django.test import Client
from django.utils import timezone

from customers.services.subscriptions import subscription_create
from invoicing.models import CreditNote, Invoice
from notifications import throttle
from notifications.models import PortalLink
from notifications.services.portal import portal_link_create, portal_link_revoke
from tests.builders import bearer, cancelled_in_december, kong_air, monthly_close, utc

pytestmark = pytest.mark.django_db
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)


@pytest.fixture
def two_customers():
    """Kong Air (invoices, a credit note) and Globex (its own invoices) on the same plan."""
    cancelled_in_december()
    globex = kong_air("globex", "Globex Corp")
    subscription = Invoice.objects.filter(customer__key="kong-air").get(cycle=0).subscription
    assert subscription is not None
    plan = subscription.plan
    subscription_create(customer=globex, plan=plan, start=NOV)
    monthly_close(NOV, DEC)
    air = Invoice.objects.filter(customer__key="kong-air").get(cycle=0).customer
    return air, globex


def portal(token: str) -> str:
    return f"/portal/{token}/"


def test_the_page_shows_this_customers_data_only(two_customers):
    air, globex = two_customers
    token = portal_link_create(customer=air).token
    response = Client().get(portal(token))
    assert response.status_code == 200
    page = response.content.decode()
    mine = Invoice.objects.filter(customer=air).exclude(status="draft")
    theirs = Invoice.objects.filter(customer=globex).exclude(status="draft")
    assert mine and theirs
    assert all(str(i.number) in page for i in mine)
    assert not any(str(i.number) in page for i in theirs)
    assert "Globex" not in page
    assert CreditNote.objects.get().number in page
    assert "<script" not in page  # no script at all, so nothing the CSP would have to allow
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert response["Cache-Control"] == "private, no-store" and response["Referrer-Policy"] == "no-referrer"


def test_another_customers_invoice_and_credit_note_are_not_reachable_by_id(two_customers):
    air, globex = two_customers
    token = portal_link_create(customer=globex).token
    theirs = Invoice.objects.filter(customer=air).exclude(status="draft").earliest("pk")
    note = CreditNote.objects.get()  # Kong Air's
    client = Client()
    assert client.get(f"/portal/{token}/invoices/{theirs.pk}.pdf").status_code == 404
    assert client.get(f"/portal/{token}/credit-notes/{note.pk}.pdf").status_code == 404
    own = Invoice.objects.filter(customer=globex).exclude(status="draft").earliest("pk")
    pdf = client.get(f"/portal/{token}/invoices/{own.pk}.pdf")
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    for bad in ("0", "-1", "1e3", "99999999999999999999", "%00", "１"):
        assert client.get(f"/portal/{token}/invoices/{bad}.pdf").status_code == 404


@pytest.mark.parametrize("tamper", [
    lambda token: token[:-1] + ("A" if token[-1] != "A" else "B"),  # the signature
    lambda token: "9" + token,  # another link id
    lambda token: token.split("~")[0] + "~" + token.split("~", 1)[1][::-1],
    lambda token: "",
    lambda token: "x" * 500,
    lambda token: token + "\x00",
])
def test_a_tampered_token_opens_nothing(two_customers, tamper):
    air, _ = two_customers
    token = portal_link_create(customer=air).token
    response = Client().get(portal(tamper(token)) if tamper(token) else "/portal//")
    assert response.status_code in (400, 404)
    assert b"Kong Air" not in response.content


def test_a_token_naming_another_link_with_a_valid_signature_still_needs_that_links_nonce(two_customers):
    air, globex = two_customers
    portal_link_create(customer=air)
    theirs = portal_link_create(customer=globex).link
    forged = signing.TimestampSigner(salt="notifications.portal", sep="~").sign(f"{theirs.pk}.guessed-nonce")
    assert Client().get(portal(forged)).status_code == 404


def test_revoked_and_expired_links_stop_working(two_customers):
    air, _ = two_customers
    shared = portal_link_create(customer=air)
    client = Client()
    assert client.get(portal(shared.token)).status_code == 200
    portal_link_revoke(link=shared.link)
    assert client.get(portal(shared.token)).status_code == 404
    old = portal_link_create(customer=air, days=1)
    PortalLink.objects.filter(pk=old.link.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    assert client.get(portal(old.token)).status_code == 404


def test_the_portal_is_read_only(two_customers):
    air, _ = two_customers
    token = portal_link_create(customer=air).token
    client = Client(enforce_csrf_checks=False)
    for method in ("post", "put", "delete", "patch"):
        assert getattr(client, method)(portal(token)).status_code == 405


def test_the_portal_is_rate_limited(two_customers, settings, monkeypatch):
    settings.PORTAL_REQUESTS_PER_MINUTE = 3
    air, _ = two_customers
    token = portal_link_create(customer=air).token
    client = Client(REMOTE_ADDR="203.0.113.9")
    # The limit counts in fixed one-minute windows: the throttle's clock stands still 5 s into the current one, so
    # the five requests share it (instead of waiting for a fresh minute when this one is nearly over).
    still = time.time() // 60 * 60 + 5
    monkeypatch.setattr(throttle, "time", SimpleNamespace(time=lambda: still))
    codes = [client.get(portal(token)).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]


def test_the_json_api_takes_the_portal_token_and_nothing_else(two_customers, make_token):
    air, globex = two_customers
    token = portal_link_create(customer=air).token
    client = Client()
    response = client.get("/api/v1/portal/usage", **bearer(token))
    assert response.status_code == 200
    body = response.json()
    assert body["customer"]["key"] == "kong-air"
    numbers = {i["number"] for i in body["invoices"]}
    assert numbers == set(Invoice.objects.filter(customer=air).exclude(status="draft").values_list("number",
                                                                                                 flat=True))
    assert body["credit_notes"][0]["number"] == CreditNote.objects.get().number
    assert "globex" not in response.content.decode().lower()
    api_token = make_token("read", "manage")
    for header in (bearer(api_token), bearer(token + "x"), {}, {"HTTP_AUTHORIZATION": "Basic eDp5"}):
        refused = client.get("/api/v1/portal/usage", **header)
        assert refused.status_code == 401 and refused["Content-Type"] == "application/problem+json"
    assert client.post("/api/v1/portal/usage", **bearer(token)).status_code in (403, 405)


@pytest.mark.django_db(transaction=True)  # the aggregator folds committed events only (on PostgreSQL)
def test_usage_against_the_limit_is_shown_with_a_chart():
    from customers.services.customers import attribution_add
    from tests.builders import customer, ingest, llm_event, quota, roll_up, token_plan

    now = timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    air = customer("kong-air")
    attribution_add(customer=air, subject="kong-air", start=start - dt.timedelta(days=40))
    subscription_create(customer=air, plan=token_plan(extra=[quota("1000")]), start=start)
    ingest([llm_event(tokens=400, time=(now - dt.timedelta(minutes=5)).isoformat().replace("+00:00", "Z"))])
    roll_up()
    token = portal_link_create(customer=air).token
    body = Client().get("/api/v1/portal/usage", **bearer(token)).json()
    metered = [f for f in body["features"] if f["kind"] == "metered"]
    assert metered and metered[0]["usage"] == "400" and metered[0]["limit"] == "1000"
    assert metered[0]["daily"][-1]["usage"] == "400"
    page = Client().get(portal(token)).content.decode()
    assert "400 of 1000" in page and "<svg" in page
