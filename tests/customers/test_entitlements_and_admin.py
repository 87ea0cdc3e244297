"""Entitlement check API, event attribution in the events list, and the customer/subscription admin."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone

from catalog.services.plans import RateCardSpec
from customers.models import Customer, Subscription
from customers.services.subscriptions import subscription_create
from tests import builders
from tests.builders import bearer, ingest, iso, llm_event, platform_fee, quota, roll_up, sso_feature, token_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def kong_air():
    return builders.kong_air(since=timezone.now() - dt.timedelta(days=400))


def subscribe(customer, **plan_kwargs):
    start = timezone.now() - dt.timedelta(days=1)
    return subscription_create(customer=customer, plan=token_plan(**plan_kwargs), start=start)


def value(api, token, customer="kong-air", feature="ai-token"):
    response = api.get(f"/api/v1/customers/{customer}/entitlements/{feature}/value", **bearer(token))
    return response.status_code, response.json()


@pytest.mark.parametrize("tokens, soft, expected", [
    (400, False, {"hasAccess": True, "balance": 100, "usage": 400, "overage": 0}),
    (500, False, {"hasAccess": False, "balance": 0, "usage": 500, "overage": 0}),
    (650, False, {"hasAccess": False, "balance": 0, "usage": 650, "overage": 150}),
    (650, True, {"hasAccess": True, "balance": 0, "usage": 650, "overage": 150}),
    (0, False, {"hasAccess": True, "balance": 500, "usage": 0, "overage": 0}),
])
def test_metered_entitlement_below_at_and_above_the_limit(api, read_token, kong_air, tokens, soft, expected):
    subscription = subscribe(kong_air, extra=[quota(limit="500", soft=soft)])
    if tokens:
        recent = max(subscription.start, timezone.now() - dt.timedelta(hours=1))
        ingest([llm_event(tokens=tokens, time=iso(recent))])
    ingest([llm_event(tokens=10_000, kind="response", time=iso(timezone.now()))])  # another feature's usage
    status, body = value(api, read_token)
    assert status == 200
    assert body == expected


def test_boolean_and_static_entitlements(api, read_token, kong_air):
    sso_feature()
    subscribe(kong_air, extra=[RateCardSpec(key="sso", feature="sso", entitlement_type="static",
                                            entitlement_config={"seats": 5})])
    assert value(api, read_token) == (200, {"hasAccess": True})
    status, body = value(api, read_token, feature="sso")
    assert status == 200 and body["hasAccess"] is True and json.loads(body["config"]) == {"seats": 5}


def test_no_subscription_means_no_access(api, read_token, kong_air):
    token_plan()
    assert value(api, read_token) == (200, {"hasAccess": False})


def test_customer_by_id_works_too(api, read_token, kong_air):
    subscribe(kong_air)
    assert value(api, read_token, customer=str(kong_air.pk)) == (200, {"hasAccess": True})


def test_unknown_customer_or_feature_is_404_problem(api, read_token, kong_air):
    token_plan()
    for customer, feature in (("nobody", "ai-token"), ("kong-air", "teleport")):
        response = api.get(f"/api/v1/customers/{customer}/entitlements/{feature}/value", **bearer(read_token))
        assert response.status_code == 404
        assert response["Content-Type"] == "application/problem+json"


def test_entitlement_check_needs_read_scope(api, ingest_token, kong_air):
    token_plan()
    assert api.get("/api/v1/customers/kong-air/entitlements/ai-token/value", **bearer(ingest_token)).status_code == 403


def test_events_list_shows_customer_or_why_not(api, read_token, kong_air):
    token_plan()
    ingest([llm_event(event_id="mine", subject="kong-air", time=None),
            llm_event(event_id="stranger", subject="stranger", time=None)])
    items = {i["event"]["id"]: i for i in api.get("/api/v1/events", **bearer(read_token)).json()}
    assert items["mine"]["customerId"] == "kong-air" and items["mine"]["validationError"] is None
    assert items["stranger"]["validationError"] == "no customer found for event subject: stranger"


def test_event_explorer_shows_the_customer(admin_client, kong_air):
    token_plan()
    ingest([llm_event(subject="kong-air", time=None), llm_event(subject="stranger", time=None)])
    page = admin_client.get("/admin/metering/event/").content.decode()
    assert "kong-air" in page and "no customer found for event subject: stranger" in page


def test_meter_query_filter_customer_id(api, read_token, kong_air):
    token_plan()
    ingest([llm_event(subject="kong-air", tokens=5, time=None), llm_event(subject="other", tokens=7, time=None)])
    data = api.get("/api/v1/meters/llm_tokens/query", {"filterCustomerId": "kong-air"}, **bearer(read_token)).json()
    assert [(r["subject"], r["value"]) for r in data["data"]] == [("kong-air", 5)]
    bad = api.get("/api/v1/meters/llm_tokens/query", {"filterCustomerId": "nobody"}, **bearer(read_token))
    assert bad.status_code == 400


def test_customer_admin_create_with_subjects_and_usage_panel(admin_client):
    plan = token_plan(extra=[quota()])
    response = admin_client.post("/admin/customers/customer/add/", {
        "key": "kong-air", "name": "Kong Air", "email": "", "currency": "USD", "collection_method":
        "charge_automatically", "metadata": "{}",
        "attributions-TOTAL_FORMS": "1", "attributions-INITIAL_FORMS": "0", "attributions-0-subject": "kong-air",
        "subscriptions-TOTAL_FORMS": "0", "subscriptions-INITIAL_FORMS": "0"})
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    air = Customer.objects.get(key="kong-air")
    assert [a.subject for a in air.attributions.all()] == ["kong-air"]
    other = admin_client.post("/admin/customers/customer/add/", {
        "key": "thief", "name": "Thief", "currency": "USD", "collection_method": "charge_automatically",
        "metadata": "{}", "attributions-TOTAL_FORMS": "1", "attributions-INITIAL_FORMS": "0",
        "attributions-0-subject": "kong-air", "subscriptions-TOTAL_FORMS": "0", "subscriptions-INITIAL_FORMS": "0"})
    assert other.status_code == 200 and b"belongs to Kong Air" in other.content
    subscription_create(customer=air, plan=plan, start=timezone.now() - dt.timedelta(days=1))
    page = admin_client.get(f"/admin/customers/customer/{air.pk}/change/").content.decode()
    assert "0 of 500,000 (hard limit)" in page
    assert "ai-token (token) by day this period" in page and ("<svg" in page or "No usage in this range" in page)


def test_customer_admin_form_errors(admin_client):
    response = admin_client.post("/admin/customers/customer/add/", {
        "key": "x", "name": "X", "currency": "XYZ", "collection_method": "send_invoice", "metadata": "{}",
        "attributions-TOTAL_FORMS": "0", "attributions-INITIAL_FORMS": "0",
        "subscriptions-TOTAL_FORMS": "0", "subscriptions-INITIAL_FORMS": "0"})
    assert {"currency", "days_until_due"} <= set(response.context["adminform"].form.errors)


def test_subscription_admin_create_confirm_cancel_change(admin_client, kong_air):
    basic, pro = token_plan(key="basic", extra=[platform_fee("49.00")]), token_plan(key="pro")
    form = {"customer": kong_air.pk, "plan": basic.pk, "start": "2026-10-16 00:00:00", "anchor": "calendar"}
    review = admin_client.post("/admin/customers/subscription/add/", form).content.decode()
    assert "Confirm subscription" in review and "2026-10-16 00:00" in review and "2026-11-01 00:00" in review
    assert Subscription.objects.count() == 0
    done = admin_client.post("/admin/customers/subscription/add/", {**form, "confirmed": "yes"})
    subscription = Subscription.objects.get()
    assert done["Location"].endswith(f"/{subscription.pk}/change/")
    change = admin_client.post(f"/admin/customers/subscription/{subscription.pk}/change-plan/",
                               {"plan": pro.pk, "when": "now"}).content.decode()
    assert "Unused Platform fee" in change and "-" in change
    admin_client.post(f"/admin/customers/subscription/{subscription.pk}/change-plan/",
                      {"plan": pro.pk, "when": "now", "confirmed": "yes"})
    new = Subscription.objects.get(plan=pro)
    assert new.previous == subscription
    admin_client.post(f"/admin/customers/subscription/{new.pk}/cancel/", {"when": "period_end", "confirmed": "yes"})
    new.refresh_from_db()
    assert new.cancel_at is not None and new.log.values_list("action", flat=True).first() == "canceled"


@pytest.mark.django_db(transaction=True)
def test_unbilled_subjects_list_and_include_action(admin_client, kong_air):

    ingest([llm_event(subject="kong-air", time=None), llm_event(subject="new-consumer", time=None)])
    roll_up()
    page = admin_client.get("/admin/customers/unbilledsubject/").content.decode()
    assert "new-consumer" in page and ">kong-air<" not in page
    from metering.models import SubjectActivity

    activity = SubjectActivity.objects.get(subject="new-consumer")
    admin_client.post("/admin/customers/unbilledsubject/", {"action": "include_in_customer",
                                                           "_selected_action": [activity.pk], "customer": kong_air.pk})
    assert kong_air.attributions.filter(subject="new-consumer", end__isnull=True).exists()


def test_unicode_digits_are_not_ids(api, read_token, kong_air):
    token_plan()
    for odd in ("²", "٣"):
        response = api.get(f"/api/v1/customers/{odd}/entitlements/ai-token/value", **bearer(read_token))
        assert response.status_code == 404
    assert api.get("/api/v1/meters/²", **bearer(read_token)).status_code == 404
    assert api.get("/api/v1/invoices/²", **bearer(read_token)).status_code == 404


def test_numbers_too_big_for_an_id_are_not_ids(api, read_token, kong_air):
    token_plan()
    for number in ("9223372036854775807", "9223372036854775808", "9" * 25, "9" * 5000):
        for feature in ("ai-token", "no-such-feature"):
            response = api.get(f"/api/v1/customers/{number}/entitlements/{feature}/value", **bearer(read_token))
            assert response.status_code == 404, (number[:30], feature)
            assert response["Content-Type"] == "application/problem+json"


def test_a_daily_usage_period_resets_the_metered_balance(api, read_token, kong_air):
    now = timezone.now()
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(days=3)
    subscription_create(customer=kong_air, plan=token_plan(extra=[quota(limit="100", period="P1D")]), start=start)
    ingest([llm_event(tokens=90, time=iso(now - dt.timedelta(days=1))),
            llm_event(tokens=30, time=iso(max(now - dt.timedelta(minutes=1), start)))])
    status, body = value(api, read_token)
    assert status == 200
    today = 30 if now - dt.timedelta(minutes=1) >= now.replace(hour=0, minute=0, second=0, microsecond=0) else 120
    assert body["usage"] == today and body["hasAccess"] is (today < 100)


def test_a_warm_check_reads_the_customer_its_subscriptions_and_subjects_in_one_statement(kong_air):
    """The gateway's hot path: one statement for a boolean check; a metered one adds only its newest events (its
    settled usage remembered). Attribution windows come with the customer, and stay exact: a subject added later
    counts at once."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from catalog.selectors import feature_by_key
    from customers.selectors import entitlement_check
    from customers.services.customers import attribution_add

    sso_feature()
    subscribe(kong_air, extra=[quota(limit="500"), RateCardSpec(key="sso", feature="sso", entitlement_type="boolean")])
    ingest([llm_event(tokens=120, time=iso(timezone.now() - dt.timedelta(minutes=5)))])
    ingest([llm_event(tokens=30, subject="kong-air-eu", time=iso(timezone.now() - dt.timedelta(minutes=5)))])
    metered, boolean = feature_by_key("ai-token"), feature_by_key("sso")
    assert metered is not None and boolean is not None

    def check(feature, id_or_key="kong-air"):
        value = entitlement_check(id_or_key=id_or_key, feature=feature, at=timezone.now())
        assert value is not None
        return value

    for feature in (metered, boolean):
        check(feature)  # warm
    with CaptureQueriesContext(connection) as statements:
        assert check(boolean).has_access
    assert len(statements) == 1
    with CaptureQueriesContext(connection) as statements:
        assert check(metered).usage == 120
    assert len(statements) == 2
    attribution_add(customer=kong_air, subject="kong-air-eu", start=timezone.now() - dt.timedelta(hours=1))
    assert check(metered).usage == 150
    assert check(metered, str(kong_air.pk)).usage == 150
    assert entitlement_check(id_or_key="nobody", feature=metered, at=timezone.now()) is None
