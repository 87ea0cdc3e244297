"""Attribution, periods, subscriptions and feature usage."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from customers.models import KongConsumer, SubjectAttribution
from customers.periods import calendar_anchor, periods_between
from customers.selectors import feature_usage, plan_change_proration, subject_periods, subscription_periods
from customers.services.customers import (
    AttributionError,
    CustomerError,
    attribution_add,
    consumer_include,
    customer_create,
    customer_update,
)
from customers.services.subscriptions import (
    SubscriptionError,
    subscription_cancel,
    subscription_change_plan,
    subscription_create,
)
from tests.builders import ai_token_feature, customer, ingest, iso, llm_event, platform_fee, token_plan, utc

pytestmark = pytest.mark.django_db


def usage(subscription, start, end):
    return feature_usage(subscription=subscription, feature=ai_token_feature(), start=start, end=end)


def test_attribution_by_username_and_by_consumer_id():
    air = customer()
    consumer = KongConsumer.objects.create(kong_id="8f3c2a10-5b1e-4c7d-9e21-3a4b5c6d7e8f", username="kong-air")
    consumer_include(customer=air, consumer=consumer, start=utc(2026, 10, 1))
    assert sorted(a.subject for a in air.attributions.all()) == [
        "consumer:8f3c2a10-5b1e-4c7d-9e21-3a4b5c6d7e8f", "kong-air"]
    subscription = subscription_create(customer=air, plan=token_plan(), start=utc(2026, 11, 1))
    ingest([llm_event(subject="kong-air", tokens=10, time=iso(utc(2026, 11, 3))),
            llm_event(subject="consumer:8f3c2a10-5b1e-4c7d-9e21-3a4b5c6d7e8f", tokens=5, time=iso(utc(2026, 11, 4))),
            llm_event(subject="someone-else", tokens=100, time=iso(utc(2026, 11, 4))),
            llm_event(subject="kong-air", tokens=7, kind="response", time=iso(utc(2026, 11, 4)))])
    assert usage(subscription, utc(2026, 11, 1), utc(2026, 12, 1)) == 15


def test_a_subject_moved_between_customers_bills_each_for_its_own_time():
    first, second = customer("first"), customer("second")
    attribution_add(customer=first, subject="shared-gw", start=utc(2026, 11, 1))
    with pytest.raises(AttributionError, match="already belongs to First"):
        attribution_add(customer=second, subject="shared-gw", start=utc(2026, 11, 10))
    attribution_add(customer=second, subject="shared-gw", start=utc(2026, 11, 10), reassign=True)
    plan = token_plan()
    sub_first = subscription_create(customer=first, plan=plan, start=utc(2026, 11, 1))
    sub_second = subscription_create(customer=second, plan=plan, start=utc(2026, 11, 1))
    ingest([llm_event(subject="shared-gw", tokens=3, time=iso(utc(2026, 11, 9, 23, 59))),
            llm_event(subject="shared-gw", tokens=4, time=iso(utc(2026, 11, 10))),
            llm_event(subject="shared-gw", tokens=5, time=iso(utc(2026, 11, 20)))])
    month = (utc(2026, 11, 1), utc(2026, 12, 1))
    assert usage(sub_first, *month) == 3
    assert usage(sub_second, *month) == 9
    assert SubjectAttribution.objects.get(customer=first).end == utc(2026, 11, 10)
    with pytest.raises(AttributionError, match="can move only after"):
        attribution_add(customer=first, subject="shared-gw", start=utc(2026, 11, 5), reassign=True)


def test_one_open_attribution_per_subject_is_a_database_constraint():
    from django.db import IntegrityError, transaction

    air, other = customer(), customer("other")
    SubjectAttribution.objects.create(customer=air, subject="x", start=utc(2026, 1, 1))
    with pytest.raises(IntegrityError), transaction.atomic():
        SubjectAttribution.objects.create(customer=other, subject="x", start=utc(2026, 2, 1))


def test_events_before_the_subscription_start_are_excluded():
    air = customer(subjects=["kong-air"])
    SubjectAttribution.objects.filter(customer=air).update(start=utc(2026, 1, 1))
    subscription = subscription_create(customer=air, plan=token_plan(), start=utc(2026, 11, 15, 12))
    ingest([llm_event(tokens=100, time=iso(utc(2026, 11, 15, 11, 59))),
            llm_event(tokens=1, time=iso(utc(2026, 11, 15, 12))), llm_event(tokens=2, time=iso(utc(2026, 11, 30)))])
    assert usage(subscription, utc(2026, 11, 1), utc(2026, 12, 1)) == 3


def test_month_end_anchor_across_a_leap_year():
    anchor = utc(2028, 1, 31, 9, 30)
    periods = periods_between(anchor, "P1M", anchor, None, until=utc(2028, 6, 1))
    assert [(p.start.date(), p.end.date()) for p in periods] == [
        (dt.date(2028, 1, 31), dt.date(2028, 2, 29)), (dt.date(2028, 2, 29), dt.date(2028, 3, 31)),
        (dt.date(2028, 3, 31), dt.date(2028, 4, 30)), (dt.date(2028, 4, 30), dt.date(2028, 5, 31)),
        (dt.date(2028, 5, 31), dt.date(2028, 6, 30))]
    non_leap = periods_between(utc(2027, 1, 31), "P1M", utc(2027, 1, 31), None, until=utc(2027, 3, 1))
    assert non_leap[1].start == utc(2027, 2, 28)


@pytest.mark.parametrize("cadence, second_start", [("P1D", utc(2026, 10, 17, 10)), ("P1W", utc(2026, 10, 23, 10)),
                                                    ("P3M", utc(2027, 1, 16, 10)), ("P1Y", utc(2027, 10, 16, 10))])
def test_every_cadence(cadence, second_start):
    periods = periods_between(utc(2026, 10, 16, 10), cadence, utc(2026, 10, 16, 10), None, until=second_start)
    assert periods[-1].end == second_start


def test_calendar_alignment_makes_the_first_period_partial():
    air = customer(subjects=["kong-air"])
    subscription = subscription_create(customer=air, plan=token_plan(), start=utc(2026, 10, 16),
                                       billing_anchor="calendar")
    assert subscription.billing_anchor == calendar_anchor(utc(2026, 10, 16)) == utc(2026, 10, 1)
    first, second = subscription_periods(subscription, until=utc(2026, 11, 2))
    assert (first.start, first.end, first.is_partial) == (utc(2026, 10, 16), utc(2026, 11, 1), True)
    assert first.fraction == Decimal(16) / Decimal(31)
    assert (second.start, second.end, second.is_partial) == (utc(2026, 11, 1), utc(2026, 12, 1), False)


def test_future_start_and_no_overlapping_subscriptions_on_one_plan():
    air = customer()
    plan = token_plan()
    subscription = subscription_create(customer=air, plan=plan, start=utc(2030, 1, 1))
    assert subscription.status_at(utc(2029, 12, 31)) == "scheduled"
    with pytest.raises(SubscriptionError, match="already has a subscription to token"):
        subscription_create(customer=air, plan=plan, start=utc(2031, 1, 1))
    other = token_plan(key="other")
    assert subscription_create(customer=air, plan=other, start=utc(2030, 1, 1)).plan.key == "other"


def test_subscriptions_need_a_published_plan_in_the_customers_currency():
    air = customer()
    with pytest.raises(SubscriptionError, match="need a published plan version"):
        subscription_create(customer=air, plan=token_plan(publish=False))
    with pytest.raises(SubscriptionError, match="bills in EUR"):
        subscription_create(customer=air, plan=token_plan(key="euro", currency="EUR"))


def test_cancel_at_period_end_versus_now():
    plan = token_plan()
    air, acme = customer(), customer("acme")
    lasting = subscription_create(customer=air, plan=plan, start=utc(2026, 11, 1))
    at_end = subscription_cancel(subscription=lasting, when="period_end", now=utc(2026, 11, 10, 8))
    assert at_end.cancel_at == utc(2026, 12, 1) and at_end.status_at(utc(2026, 11, 20)) == "canceling"
    immediate = subscription_create(customer=acme, plan=plan, start=utc(2026, 11, 1))
    now = subscription_cancel(subscription=immediate, when="now", now=utc(2026, 11, 10, 8))
    assert now.cancel_at == utc(2026, 11, 10, 8) and now.status_at(utc(2026, 11, 20)) == "ended"
    assert [p.end for p in subscription_periods(now, until=utc(2027, 1, 1))] == [utc(2026, 11, 10, 8)]
    with pytest.raises(SubscriptionError, match="already ended"):
        subscription_cancel(subscription=now, when="now", now=utc(2026, 11, 11))
    assert [e.action for e in now.log.all()] == ["canceled", "created"]


def test_plan_change_now_prorates_in_advance_fees():
    air = customer()
    basic = token_plan(key="basic", extra=[platform_fee("49.00")])
    pro = token_plan(key="pro", extra=[platform_fee("99.00")])
    subscription = subscription_create(customer=air, plan=basic, start=utc(2026, 11, 1))
    at = utc(2026, 11, 16)  # 15 of 30 days remain
    lines = plan_change_proration(subscription=subscription, new_plan=pro, at=at)
    assert [(line.rate_card, line.amount) for line in lines] == [("platform", Decimal("-24.50")),
                                                                 ("platform", Decimal("49.50"))]
    new = subscription_change_plan(subscription=subscription, plan=pro, when="now", now=at)
    subscription.refresh_from_db()
    assert subscription.cancel_at == at and new.start == at and new.previous == subscription
    assert new.billing_anchor == subscription.billing_anchor


def test_plan_change_at_period_end():
    air = customer()
    subscription = subscription_create(customer=air, plan=token_plan(key="basic"), start=utc(2026, 11, 1))
    new = subscription_change_plan(subscription=subscription, plan=token_plan(key="pro"), when="period_end",
                                   now=utc(2026, 11, 16))
    assert new.start == utc(2026, 12, 1)
    assert plan_change_proration(subscription=subscription, new_plan=new.plan, at=utc(2026, 12, 1)) == []


def test_subject_periods_clip_to_attribution_windows():
    air = customer()
    attribution_add(customer=air, subject="a", start=utc(2026, 11, 5))
    periods = subject_periods(air, utc(2026, 11, 1), utc(2026, 12, 1))
    assert periods == [("a", utc(2026, 11, 5), utc(2026, 12, 1))]


@pytest.mark.parametrize("fields, field", [
    ({"key": "Bad Key"}, "key"), ({"currency": "XYZ"}, "currency"), ({"email": "not-an-email"}, "email"),
    ({"country": "Germany"}, "country"), ({"collection_method": "send_invoice"}, "days_until_due"),
    ({"name": ""}, "name"),
])
def test_customer_validation(fields, field):
    values = {"key": "acme", "name": "Acme", "currency": "USD", **fields}
    with pytest.raises(CustomerError) as caught:
        customer_create(**values)
    assert field in caught.value.errors


def test_customer_currency_is_fixed_once_subscribed():
    air = customer()
    subscription_create(customer=air, plan=token_plan(), start=utc(2026, 11, 1))
    with pytest.raises(CustomerError, match="cannot change"):
        customer_update(customer=air, currency="EUR")
    assert customer_update(customer=air, email="billing@kong-air.example").email == "billing@kong-air.example"
