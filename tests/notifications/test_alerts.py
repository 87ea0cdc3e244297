"""Usage threshold alerts fire once per threshold per usage period (also under concurrent ingest and evaluators, on
PostgreSQL), evaluated for customers with recent usage only; spend alerts; usage nobody is billed for, once a day."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.utils import timezone

from customers.services.customers import attribution_add
from customers.services.subscriptions import subscription_create
from metering.services.rollups import usage_process_all
from notifications.models import CustomerNotificationSettings, FiredAlert, OutboxEvent, UsageAlertRule
from notifications.services.alerts import alerts_evaluate, customers_with_recent_usage, usage_surprises_evaluate
from tests.builders import customer, ingest, llm_event, quota, roll_up, token_plan
from tests.threads import run_in_threads


def stamp(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def quota_customer(key: str = "kong-air", limit: str = "1000"):
    now = timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    buyer = customer(key)
    attribution_add(customer=buyer, subject=key, start=start - dt.timedelta(days=40))
    plan = token_plan(key=f"plan-{key}", extra=[quota(limit)])
    subscription = subscription_create(customer=buyer, plan=plan, start=start)
    return buyer, subscription


def use(tokens: int, subject: str = "kong-air", n: int = 0) -> None:
    ingest([llm_event(event_id=f"{subject}-{n}-{tokens}-{timezone.now().timestamp()}", subject=subject, tokens=tokens,
                      time=stamp(timezone.now() - dt.timedelta(minutes=1)))])


def thresholds_fired(**filters) -> list[int]:
    return sorted(int(t) for t in FiredAlert.objects.filter(kind="entitlement", **filters)
                  .values_list("threshold", flat=True))


@pytest.mark.django_db(transaction=True)  # the aggregator folds committed events only (on PostgreSQL)
def test_each_threshold_fires_once_per_period_as_usage_crosses_it():
    buyer, subscription = quota_customer()
    use(400)
    roll_up()
    assert alerts_evaluate() == 0
    use(200, n=1)  # 600: past 50 %
    roll_up()
    assert alerts_evaluate() == 1
    assert alerts_evaluate() == 0  # evaluated again: nothing new
    use(500, n=2)  # 1100: past 80 % and 100 % at once
    roll_up()
    assert alerts_evaluate() == 2
    assert thresholds_fired() == [50, 80, 100]
    events = list(OutboxEvent.objects.filter(type="entitlement.threshold").order_by("id"))
    assert [e.data["threshold_percent"] for e in events] == [50, 80, 100]
    data = events[-1].data
    assert data["customer"] == "kong-air" and data["feature"] == "ai-token" and data["limit"] == "1000"
    assert data["usage"] == "1100" and set(data["period"]) == {"from", "to"}
    alert = FiredAlert.objects.get(threshold=100)
    assert alert.period_start == dt.datetime.fromisoformat(data["period"]["from"])


@pytest.mark.django_db(transaction=True)  # the aggregator folds committed events only (on PostgreSQL)
def test_a_rule_replaces_the_default_thresholds_and_can_turn_them_off():
    buyer, subscription = quota_customer()
    rate_card = subscription.plan.rate_cards.get(key="ai-quota")
    UsageAlertRule.objects.create(rate_card=rate_card, thresholds=[25, 90])
    use(950)
    roll_up()
    alerts_evaluate()
    assert thresholds_fired() == [25, 90]
    UsageAlertRule.objects.filter(rate_card=rate_card).update(enabled=False)
    use(500, n=1)
    roll_up()
    assert alerts_evaluate() == 0


@pytest.mark.django_db(transaction=True)  # the aggregator folds committed events only (on PostgreSQL)
def test_only_customers_with_recent_usage_are_evaluated():
    air, _ = quota_customer("kong-air")
    quota_customer("globex")
    use(600, subject="kong-air")
    roll_up()
    assert customers_with_recent_usage(now=timezone.now(), recent_minutes=10) == [air.pk]
    later = timezone.now() + dt.timedelta(minutes=30)
    assert customers_with_recent_usage(now=later, recent_minutes=10) == []


@pytest.mark.django_db(transaction=True)  # the aggregator folds committed events only (on PostgreSQL)
def test_a_spend_alert_fires_once_per_period_when_the_preview_passes_the_amount():
    buyer, _ = quota_customer()
    CustomerNotificationSettings.objects.create(customer=buyer, spend_alert_amount=1)  # 0.01 USD
    use(2000)  # 2000 × 0.00002 = 0.04 USD
    roll_up()
    alerts_evaluate()
    alerts_evaluate()
    spend = OutboxEvent.objects.get(type="spend.threshold")
    assert spend.data["threshold"] == "0.01" and spend.data["amount"] == "0.04"
    assert FiredAlert.objects.filter(kind="spend").count() == 1


@pytest.mark.django_db(transaction=True)  # the aggregator folds committed events only (on PostgreSQL)
def test_usage_from_a_subject_nobody_includes_is_announced_once_a_day():
    ingest([llm_event(subject="stranger", time=stamp(timezone.now() - dt.timedelta(minutes=1)))])
    roll_up()
    assert usage_surprises_evaluate() == 1
    assert usage_surprises_evaluate() == 0
    event = OutboxEvent.objects.get(type="usage.unattributed")
    assert event.data["subject"] == "stranger" and event.data["date"] == timezone.now().date().isoformat()
    assert usage_surprises_evaluate(now=timezone.now() + dt.timedelta(days=1)) == 0  # no usage from it that day


@pytest.mark.django_db
def test_unattributed_usage_announced_by_a_lower_app_is_recorded_once_a_day():
    from common.announcements import announce

    for _ in range(3):
        announce("usage.unattributed", key="gpt-9", data={"subject": "gpt-9"})
    announce("usage.unpriced", key="gpt-9", data={"model": "gpt-9"})  # found by its own evaluator, not announced
    event = OutboxEvent.objects.get(type="usage.unattributed")
    assert event.data["subject"] == "gpt-9" and "date" in event.data
    assert not OutboxEvent.objects.filter(type="usage.unpriced").exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_thresholds_fire_once_under_concurrent_ingest_and_evaluators():
    quota_customer(limit="1000")
    stop = threading.Event()
    counter = iter(range(10_000))
    lock = threading.Lock()

    def ingester() -> None:
        for _ in range(12):
            with lock:
                n = next(counter)
            use(30, n=n)  # 4 threads × 12 × 30 = 1440 tokens: every threshold is crossed while evaluators run

    def evaluator() -> None:
        while not stop.is_set():
            usage_process_all(time_budget=2.0)
            alerts_evaluate()

    evaluators = [threading.Thread(target=lambda: run_in_threads(evaluator, 1)) for _ in range(4)]
    for thread in evaluators:
        thread.start()
    try:
        assert run_in_threads(ingester, 4) == []
    finally:
        stop.set()
        for thread in evaluators:
            thread.join()
    roll_up()
    alerts_evaluate()
    assert thresholds_fired() == [50, 80, 100]
    events = OutboxEvent.objects.filter(type="entitlement.threshold")
    assert sorted(e.data["threshold_percent"] for e in events) == [50, 80, 100]
    assert all(FiredAlert.objects.filter(event=e).count() == 1 for e in events)
