"""``usage.unpriced``: usage of a model no row and no default of a customer's dimensional rate card prices is
announced once per key (plan version, rate card, dimension values) per UTC day, for customers with recent usage,
through the outbox; priced and default-priced usage, and customers without that rate card, announce nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone

from customers.services.customers import attribution_add
from customers.services.subscriptions import subscription_create
from notifications import tasks
from notifications.models import FiredAlert, OutboxEvent
from notifications.services.alerts import alert_key, usage_unpriced_evaluate
from notifications.services.endpoints import endpoint_create
from tests.builders import ingest, kong_air, llm_plan, roll_up, token_plan, tokens, utc

NOV = utc(2026, 11, 1)
DAY = utc(2026, 11, 3, 12)
KEY = "llm@v1/llm/model=gpt-5,type=request"


@pytest.fixture(autouse=True)
def _no_portal_rate_limit(settings):
    """These requests are not about the rate limit: they must not use up this process's per-address budget (a
    cache shared by the tests of the minute) that the rate-limit tests count on."""
    settings.PORTAL_REQUESTS_PER_MINUTE = 0


def _subscribe(key: str = "kong-air", plan=None, **table):
    buyer = kong_air(key)
    subscription_create(customer=buyer, plan=plan or llm_plan(**table), start=NOV, billing_anchor="calendar")
    return buyer


def _evaluate(*customers, now: dt.datetime = DAY) -> int:
    return usage_unpriced_evaluate(now=now, customer_ids=[c.pk for c in customers])


def _announced() -> list[dict]:
    return [e.data for e in OutboxEvent.objects.filter(type="usage.unpriced").order_by("id")]


@pytest.mark.django_db
def test_an_unpriced_model_is_announced_once_per_key_per_day_and_again_the_next_day():
    air = _subscribe()
    ingest([tokens(500, utc(2026, 11, 3, 10), "request", model="gpt-5"),
            tokens(100, utc(2026, 11, 3, 10, 5), "response", model="gpt-5"),
            tokens(1000, utc(2026, 11, 3, 10), "request", model="gpt-4o")])  # priced: not announced
    assert _evaluate(air) == 2  # the table is keyed by model and type: two rows are missing
    assert _evaluate(air) == 0
    ingest([tokens(700, utc(2026, 11, 3, 11), "request", model="gpt-5")])
    assert _evaluate(air, now=DAY + dt.timedelta(hours=1)) == 0  # more of it the same day: still once
    first = {data["key"]: data for data in _announced()}
    assert set(first) == {KEY, "llm@v1/llm/model=gpt-5,type=response"}
    data = first[KEY]
    assert data == {
        "key": KEY, "customer": "kong-air", "subject": "kong-air", "subjects": ["kong-air"], "plan": "llm",
        "plan_version": 1, "rate_card": "llm", "feature": "llm-tokens", "meter": "llm_tokens", "model": "gpt-5",
        "dimensions": {"model": "gpt-5", "type": "request"}, "quantity": "500",
        "warning": "no price for model=gpt-5, type=request",
        "period": {"from": "2026-11-03T00:00:00Z", "to": "2026-11-03T12:00:00Z"}, "date": "2026-11-03",
    }
    alert = FiredAlert.objects.get(kind="unpriced", key=KEY)
    assert alert.customer == air and alert.rate_card is not None and alert.rate_card.key == "llm"
    assert alert.value == Decimal(500)
    assert OutboxEvent.objects.get(data__key=KEY).customer_key == "kong-air"

    next_day = utc(2026, 11, 4, 12)
    assert _evaluate(air, now=next_day) == 0  # nothing of it used that day
    ingest([tokens(40, utc(2026, 11, 4, 9), "request", model="gpt-5")])
    assert _evaluate(air, now=next_day) == 1
    assert _evaluate(air, now=next_day) == 0
    again = _announced()[-1]
    assert (again["key"], again["date"], again["quantity"]) == (KEY, "2026-11-04", "40")  # that day's usage


@pytest.mark.django_db
def test_usage_priced_by_a_row_or_by_the_default_announces_nothing():
    air = _subscribe(default="0.000001")
    ingest([tokens(500, utc(2026, 11, 3, 10), "request", model="gpt-5"),
            tokens(500, utc(2026, 11, 3, 10), "request", model="gpt-4o-mini")])
    assert _evaluate(air) == 0
    assert _announced() == [] and not FiredAlert.objects.filter(kind="unpriced").exists()


@pytest.mark.django_db
def test_a_customer_without_that_rate_card_announces_nothing():
    globex = _subscribe("globex", plan=token_plan())  # the same meter, priced per unit: nothing is unpriced
    air = _subscribe()  # kong-air has the table, and uses only priced models
    stranger = kong_air("initech")  # no subscription at all
    ingest([tokens(500, utc(2026, 11, 3, 10), "request", model="gpt-5", subject="globex"),
            tokens(500, utc(2026, 11, 3, 10), "request", model="gpt-5", subject="initech"),
            tokens(500, utc(2026, 11, 3, 10), "request", model="gpt-4o", subject="kong-air")])
    assert _evaluate(globex, air, stranger) == 0
    assert _announced() == []


@pytest.mark.django_db
def test_usage_before_the_subscription_or_of_another_customers_subject_is_not_counted():
    air = kong_air()
    subscription_create(customer=air, plan=llm_plan(), start=utc(2026, 11, 3, 11), billing_anchor="calendar")
    kong_air("globex")
    ingest([tokens(500, utc(2026, 11, 3, 10), "request", model="gpt-5"),  # before the subscription
            tokens(500, utc(2026, 11, 3, 11, 30), "request", model="gpt-5", subject="globex")])
    assert _evaluate(air) == 0
    ingest([tokens(9, utc(2026, 11, 3, 11, 30), "request", model="gpt-5")])
    assert _evaluate(air) == 1
    data = _announced()[0]
    assert data["quantity"] == "9" and data["subjects"] == ["kong-air"]
    assert data["period"]["from"] == "2026-11-03T11:00:00Z"  # clipped to the subscription's start


@pytest.mark.django_db
def test_one_announcement_per_key_and_day_whichever_customers_use_it():
    air = _subscribe()
    globex = kong_air("globex")
    subscription_create(customer=globex, plan=air.subscriptions.get().plan, start=NOV, billing_anchor="calendar")
    attribution_add(customer=air, subject="kong-air-staging", start=NOV)
    ingest([tokens(5, utc(2026, 11, 3, 10), "request", model="gpt-5"),
            tokens(6, utc(2026, 11, 3, 10), "request", model="gpt-5", subject="kong-air-staging"),
            tokens(7, utc(2026, 11, 3, 10), "request", model="gpt-5", subject="globex")])
    assert _evaluate(air, globex) == 1
    data = _announced()[0]
    assert (data["customer"], data["quantity"]) == ("kong-air", "11")
    assert data["subjects"] == ["kong-air", "kong-air-staging"] and data["subject"] == "kong-air"


@pytest.mark.django_db
def test_a_missing_dimension_value_and_usage_just_before_midnight():
    air = _subscribe()
    ingest([tokens(3, utc(2026, 11, 3, 23, 58), "request", model=None)])
    assert _evaluate(air, now=utc(2026, 11, 4, 0, 1)) == 1  # the last minutes of the day before still count
    data = _announced()[0]
    assert data["key"] == "llm@v1/llm/model=(none),type=request" and data["date"] == "2026-11-04"
    assert data["dimensions"] == {"model": None, "type": "request"} and data["model"] is None
    assert data["warning"] == "no price for model=(none), type=request"


@pytest.mark.django_db
def test_long_keys_are_cut_with_a_digest_and_stay_apart():
    base = "llm@v1/llm/model=" + "x" * 300
    one, two = alert_key(base + "a"), alert_key(base + "b")
    assert len(one) == len(two) == 255 and one != two
    assert alert_key(KEY) == KEY
    air = _subscribe()
    ingest([tokens(3, utc(2026, 11, 3, 10), "request", model="m" * 300)])
    assert _evaluate(air) == 1
    assert _evaluate(air) == 0
    assert len(FiredAlert.objects.get(kind="unpriced").key) == 255
    assert _announced()[0]["key"].endswith("m" * 200 + ",type=request")  # the payload keeps the whole key


def drain_with_beat(rounds: int = 20) -> None:
    for _ in range(rounds):
        if not tasks.sweep():
            return


@pytest.mark.django_db(transaction=True)  # the aggregator folds committed events only (on PostgreSQL)
def test_the_beat_job_announces_recent_unpriced_usage_to_a_verifying_receiver(receiver):
    receiver.secret = endpoint_create(url=receiver.url, event_types=["usage.unpriced"]).secret
    now = timezone.now()
    air = kong_air()
    subscription_create(customer=air, plan=llm_plan(), start=now - dt.timedelta(days=2))
    kong_air("globex")  # used the model too, but has no subscription: not evaluated as unpriced
    ingest([tokens(42, now - dt.timedelta(minutes=1), "response", model="gpt-5"),
            tokens(42, now - dt.timedelta(minutes=1), "response", model="gpt-5", subject="globex")])
    roll_up()
    tasks.evaluate_alerts()
    tasks.evaluate_alerts()  # the next minute: nothing new
    drain_with_beat()
    bodies = [r.body for r in receiver.requests if r.body and r.body["type"] == "usage.unpriced"]
    assert len(bodies) == 1 and all(r.verified for r in receiver.requests)
    data = bodies[0]["data"]
    assert data["key"] == "llm@v1/llm/model=gpt-5,type=response"
    assert (data["customer"], data["quantity"], data["date"]) == ("kong-air", "42", now.date().isoformat())
    assert receiver.accepted() == [OutboxEvent.objects.get(type="usage.unpriced").uid]


@pytest.mark.django_db
def test_the_payload_matches_the_documented_webhook_schema(make_token):
    from django.test import Client
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # drf-spectacular's dependency

    from tests.builders import bearer

    schema = Client().get("/api/schema/", {"format": "json"}, **bearer(make_token("read"))).json()
    body = schema["webhooks"]["usage.unpriced"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = Draft202012Validator(body["properties"]["data"], format_checker=Draft202012Validator.FORMAT_CHECKER)
    air = _subscribe()
    ingest([tokens(3, utc(2026, 11, 3, 10), "request", model="gpt-5"), tokens(4, utc(2026, 11, 3, 10), "response",
                                                                            model=None)])
    assert _evaluate(air) == 2
    for data in _announced():
        assert not list(validator.iter_errors(data)), data
    assert not validator.is_valid({**_announced()[0], "quantity": 3})


@pytest.mark.django_db
def test_staff_see_the_alert_on_the_customer_page_and_the_customer_does_not_in_the_portal(admin_client):
    from django.test import Client

    from notifications.services.portal import portal_link_create

    air = _subscribe()
    ingest([tokens(3, utc(2026, 11, 3, 10), "request", model="gpt-5")])
    assert _evaluate(air) == 1
    page = admin_client.get(f"/admin/customers/customer/{air.pk}/change/").content.decode()
    table = page.split('id="fired-alerts"', 1)[1].split("</table>", 1)[0]
    assert "Unpriced usage" in table and KEY in table
    portal = Client().get(f"/portal/{portal_link_create(customer=air).token}/").content.decode()
    assert "Unpriced usage" not in portal and "gpt-5" not in portal.split('id="alerts"', 1)[1]
