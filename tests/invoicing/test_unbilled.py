"""The unbilled-periods selector's written-out reads (invoicing.selectors.unbilled): the subscriptions as the ORM's
``select_related("plan", "next")`` gives them, and the done cycles, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext

from catalog.services.plans import RateCardSpec, plan_create, plan_publish
from customers.models import Subscription
from customers.services.subscriptions import subscription_change_plan, subscription_create
from invoicing.models import CycleClose
from invoicing.selectors.unbilled import _done_cycles, _subscriptions, any_cycle_done
from tests import builders
from tests.builders import D, ai_token_feature, utc

pytestmark = pytest.mark.django_db


def plans():
    ai_token_feature()
    return [plan_publish(plan=plan_create(key=key, name=key, currency="USD", billing_cadence=cadence, rate_cards=[
        RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=D(price))]))
        for key, price, cadence in (("basic", "0.01", "P1M"), ("pro", "0.02", "P1Y"))]


def as_the_orm_reads(customer_id, begun_before, ended_after):
    return list(Subscription.objects.filter(customer_id=customer_id, start__lt=begun_before)
                .filter(Q(cancel_at__isnull=True) | Q(cancel_at__gt=ended_after)).select_related("plan", "next"))


def described(subscription):
    """Every field of the subscription, of its plan and of its successor (or None)."""
    def fields(instance):
        return None if instance is None else {f.attname: getattr(instance, f.attname)
                                               for f in type(instance)._meta.concrete_fields}
    return fields(subscription), fields(subscription.plan), fields(getattr(subscription, "next", None))


def test_the_subscriptions_are_the_orms_with_plan_and_successor_loaded():
    basic, pro = plans()
    air = builders.kong_air(since=utc(2026, 1, 1))
    first = subscription_create(customer=air, plan=basic, start=utc(2026, 3, 1), billing_anchor="calendar")
    subscription_change_plan(subscription=first, plan=pro, when="now", now=utc(2026, 5, 15, 10, 30))
    subscription_create(customer=builders.customer(key="other"), plan=basic, start=utc(2026, 3, 1))  # not read
    for begun_before, ended_after in ((utc(2026, 6, 1), utc(2026, 3, 1)), (utc(2026, 5, 15, 10, 30), utc(2026, 1, 1)),
                                      (utc(2026, 6, 1), utc(2026, 5, 15, 10, 30)), (utc(2026, 3, 1), utc(2026, 1, 1))):
        expected = as_the_orm_reads(air.pk, begun_before, ended_after)
        with CaptureQueriesContext(connection) as statements:
            found = _subscriptions(air.pk, begun_before, ended_after)
            shown = [described(subscription) for subscription in found]  # plan and next read: no more statements
        assert len(statements) == 1
        assert shown == [described(subscription) for subscription in expected]
        assert all(value is None or value.tzinfo is not None for subscription, _, _ in shown
                   for value in (subscription["start"], subscription["cancel_at"]))
    assert len(_subscriptions(air.pk, utc(2026, 6, 1), utc(2026, 1, 1))) == 2


def test_done_cycles_and_whether_any_is_done():
    basic, _ = plans()
    air = builders.kong_air(since=utc(2026, 1, 1))
    subscription = subscription_create(customer=air, plan=basic, start=utc(2026, 3, 1), billing_anchor="calendar")
    for cycle, state in ((0, CycleClose.State.ISSUED), (1, CycleClose.State.CLAIMED), (2, CycleClose.State.EMPTY)):
        CycleClose.objects.create(subscription=subscription, cycle=cycle, boundary=utc(2026, 3 + cycle, 1), state=state)
    assert _done_cycles([subscription.pk]) == {(subscription.pk, 0), (subscription.pk, 2)}
    assert _done_cycles([subscription.pk + 1000]) == set()
    assert any_cycle_done([(subscription.pk, 1)]) is False  # claimed: still closing
    assert any_cycle_done([(subscription.pk, 1), (subscription.pk, 2)]) is True
    assert any_cycle_done([(subscription.pk + 1000, 0)]) is False
    assert any_cycle_done([]) is False
