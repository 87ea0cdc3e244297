"""Credits at the gateway: a ``credit_only`` metered entitlement gives access while ``available > 0`` (checked at
the boundary), ``credit_then_invoice`` always; both answer ``creditBalance`` and ``creditAvailable``."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from catalog.models import Feature
from catalog.rules import credit_problems
from catalog.services.plans import RateCardSpec
from credits.selectors import gateway_balance
from credits.services.grants import grant_void
from customers.selectors import entitlement_check, entitlement_value
from customers.services.subscriptions import subscription_create
from tests import builders
from tests.builders import D, bearer, grant, ingest, iso, llm_event, token_plan

pytestmark = pytest.mark.django_db


def gated(mode: str, *, limit: str = "1000000", soft: bool = True) -> RateCardSpec:
    return RateCardSpec(key="ai-quota", feature="ai-token", entitlement_type="metered", entitlement_limit=D(limit),
                        entitlement_soft=soft, entitlement_credits=mode)


def setup(mode: str, used: int, **card):
    air = builders.kong_air(since=timezone.now() - dt.timedelta(days=400))
    start = timezone.now() - dt.timedelta(days=1)
    subscription = subscription_create(customer=air, plan=token_plan(unit_amount="0.01", extra=[gated(mode, **card)]),
                                       start=start)
    if used:
        ingest([llm_event(tokens=used, time=iso(max(subscription.start, timezone.now() - dt.timedelta(hours=1))))])
    credit = grant(air, 1000, effective_at=start - dt.timedelta(days=1))  # $10.00 = 1,000 tokens at 1 cent
    return air, credit


def value(api, token):
    response = api.get("/api/v1/customers/kong-air/entitlements/ai-token/value", **bearer(token))
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("used, access, available", [
    (0, True, 10), (999, True, 0.01), (1000, False, 0), (1001, False, -0.01), (5000, False, -40)])
def test_credit_only_gives_access_while_credits_are_available(api, read_token, used, access, available):
    setup("credit_only", used)
    body = value(api, read_token)
    assert (body["hasAccess"], body["creditBalance"], body["creditAvailable"]) == (access, 10, available)


def test_credit_only_without_credits_or_after_a_void_has_no_access(api, read_token):
    _, credit = setup("credit_only", 0)
    assert value(api, read_token)["hasAccess"] is True
    grant_void(grant=credit, reason="refund")
    body = value(api, read_token)
    assert (body["hasAccess"], body["creditBalance"], body["creditAvailable"]) == (False, 0, 0)


def test_credit_only_keeps_a_hard_limit(api, read_token):
    setup("credit_only", 600, limit="500", soft=False)
    assert value(api, read_token)["hasAccess"] is False


def test_credit_then_invoice_always_gives_access(api, read_token):
    setup("credit_then_invoice", 5000, limit="500", soft=False)
    body = value(api, read_token)
    assert (body["hasAccess"], body["creditBalance"], body["creditAvailable"]) == (True, 10, -40)


def test_an_entitlement_without_a_credit_mode_answers_as_before(api, read_token):
    setup("", 100)
    assert value(api, read_token) == {"hasAccess": True, "balance": 999900, "usage": 100, "overage": 0}


def test_a_credit_mode_needs_a_metered_entitlement():
    assert credit_problems(key="x", entitlement_type="boolean", entitlement_credits="credit_only", credit_grant=None,
                           currency="USD") == ["rate card x: credit_only and credit_then_invoice need a metered "
                                               "entitlement"]
    assert credit_problems(key="x", entitlement_type="metered", entitlement_credits="credit_only", credit_grant=None,
                           currency="USD") == []


@pytest.mark.django_db(transaction=True)  # the aggregator folds only committed transactions (PostgreSQL)
def test_credit_only_stops_at_the_event_that_crosses_zero_while_usage_is_remembered(api, read_token):
    """The settled usage is remembered per process; events after it count on the very next check, before and after
    the aggregator folds them in."""
    setup("credit_only", 990)
    builders.roll_up()
    assert (value(api, read_token)["hasAccess"], value(api, read_token)["creditAvailable"]) == (True, 0.1)
    ingest([llm_event(tokens=10, time=iso(timezone.now() - dt.timedelta(minutes=5)))])
    body = value(api, read_token)
    assert (body["hasAccess"], body["usage"], body["creditAvailable"]) == (False, 1000, 0)
    builders.roll_up()
    body = value(api, read_token)
    assert (body["hasAccess"], body["usage"], body["creditAvailable"]) == (False, 1000, 0)


def test_pending_usage_is_the_whole_current_period_as_its_invoice_bills_it(api, read_token):
    """An event stamped later in the current period (a gateway's clock ahead) is billed with this period, so it is
    pending usage now."""
    air, _ = setup("credit_only", 100)
    ingest([llm_event(tokens=50, time=iso(timezone.now() + dt.timedelta(minutes=10)))])
    body = value(api, read_token)
    assert (body["usage"], body["creditAvailable"]) == (150, 8.5)
    credits = api.get("/api/v1/customers/kong-air/credits", **bearer(read_token)).json()
    assert (credits["pending_usage"], credits["available"]) == ("1.50", "8.50")


def test_pending_usage_prices_a_dimensional_table_per_row_and_effective_segment(api, read_token, monkeypatch):
    """A price table (LLM tokens by model and type) counts in pending usage as its invoice will bill it: each row
    on its own usage, a price change mid-period per segment. Before, such a card added nothing, so a ``credit_only``
    customer could spend past zero until the invoice."""
    from catalog.models import RateCard
    from catalog.services.plans import plan_create, plan_publish, price_rows_schedule
    from customers.services.subscriptions import subscription_create
    from tests.builders import llm_table, tokens, unit_row, utc

    nov, now = utc(2026, 11, 1), utc(2026, 11, 25)
    gate = RateCardSpec(key="llm-gate", feature="llm-tokens", entitlement_type="metered", entitlement_limit=D("1e12"),
                        entitlement_soft=True, entitlement_credits="credit_only")
    plan = plan_publish(plan=plan_create(key="llm", name="LLM", currency="USD", rate_cards=[llm_table(), gate]))
    air = builders.kong_air(since=nov - dt.timedelta(days=30))
    subscription_create(customer=air, plan=plan, start=nov, billing_anchor="calendar")
    price_rows_schedule(rate_card=RateCard.objects.get(key="llm"),
                        rows=[unit_row("0.000005", effective_from=utc(2026, 11, 16), model="gpt-4o", type="request")],
                        now=utc(2026, 11, 2))
    grant(air, 1000, effective_at=nov)
    ingest([tokens(1_000_000, utc(2026, 11, 10), "request", model="gpt-4o"),   # 2.50
            tokens(1_000_000, utc(2026, 11, 20), "request", model="gpt-4o"),   # 5.00 at the new price
            tokens(200_000, utc(2026, 11, 20), "response", model="gpt-4o"),    # 2.00
            tokens(2_000_000, utc(2026, 11, 21), "request", model="gpt-4o-mini")])  # 0.30
    monkeypatch.setattr(timezone, "now", lambda: now)
    credits = api.get("/api/v1/customers/kong-air/credits", **bearer(read_token)).json()
    body = api.get("/api/v1/customers/kong-air/entitlements/llm-tokens/value", **bearer(read_token)).json()
    assert (credits["pending_usage"], credits["available"]) == ("9.80", "0.20")
    assert (body["hasAccess"], body["creditBalance"], body["creditAvailable"]) == (True, 10, 0.2)


def test_pending_usage_is_prorated_like_the_invoice_for_a_subscription_starting_mid_period(api, read_token,
                                                                                        monkeypatch):
    """A maximum spend caps a partial period's usage at its prorated share on the invoice; pending usage (and so
    ``credit_only`` access) must use the same cap, not the full one."""
    from catalog.services.plans import plan_create, plan_publish
    from customers.services.subscriptions import subscription_create
    from invoicing.selectors.previews import invoice_preview
    from tests.builders import ai_token_feature, tokens, utc

    ai_token_feature()
    card = RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=D("0.01"),
                        maximum_spend=D("5.00"))
    plan = plan_publish(plan=plan_create(key="capped", name="Capped", currency="USD", rate_cards=[card, gated(
        "credit_only", limit="1e9")]))
    air = builders.kong_air(since=utc(2026, 10, 1))
    start = utc(2026, 11, 16)  # the second half of November: the cap is 2.50
    subscription_create(customer=air, plan=plan, start=start, billing_anchor="calendar")
    grant(air, 300, effective_at=start)
    monkeypatch.setattr(timezone, "now", lambda: utc(2026, 11, 20))
    ingest([tokens(400, utc(2026, 11, 18), "request")])  # 4.00 before the cap
    credits = api.get("/api/v1/customers/kong-air/credits", **bearer(read_token)).json()
    body = value(api, read_token)
    billed = sum(line.amount for line in invoice_preview(customer=air, at=utc(2026, 11, 30, 23)).lines
                 if getattr(line, "kind", "") in ("usage", "discount"))
    assert billed == 250
    assert (credits["pending_usage"], credits["available"]) == ("2.50", "0.50")
    assert (body["hasAccess"], body["creditAvailable"]) == (True, 0.5)


def test_a_price_row_scheduled_on_a_published_version_reaches_pending_usage_within_seconds(api, read_token,
                                                                                          monkeypatch):
    """A published version's prices still change (price rows are scheduled on it): a warm process must not price
    pending usage on what it read before for longer than the feature cache's few seconds."""
    from catalog.models import RateCard
    from catalog.selectors import FEATURE_CACHE_SECONDS
    from catalog.services.plans import plan_create, plan_publish, price_rows_schedule
    from common.caches import ProcessCache
    from customers import selectors
    from customers.services.subscriptions import subscription_create
    from tests.builders import llm_table, tokens, unit_row, utc

    assert selectors._USAGE_CARDS.ttl == FEATURE_CACHE_SECONDS  # the process's own cache forgets as fast
    clock = [0.0]
    monkeypatch.setattr(selectors, "_USAGE_CARDS", ProcessCache(maxsize=100, ttl=FEATURE_CACHE_SECONDS,
                                                                timer=lambda: clock[0]))
    nov = utc(2026, 11, 1)
    gate = RateCardSpec(key="llm-gate", feature="llm-tokens", entitlement_type="metered", entitlement_limit=D("1e12"),
                        entitlement_soft=True, entitlement_credits="credit_only")
    plan = plan_publish(plan=plan_create(key="llm", name="LLM", currency="USD", rate_cards=[llm_table(), gate]))
    air = builders.kong_air(since=nov - dt.timedelta(days=30))
    subscription_create(customer=air, plan=plan, start=nov, billing_anchor="calendar")
    grant(air, 1000, effective_at=nov)
    monkeypatch.setattr(timezone, "now", lambda: utc(2026, 11, 5))
    ingest([tokens(1_000_000, utc(2026, 11, 3), "request", model="gpt-4o")])  # 2.50
    path = "/api/v1/customers/kong-air/entitlements/llm-tokens/value"
    assert api.get(path, **bearer(read_token)).json()["creditAvailable"] == 7.5
    price_rows_schedule(rate_card=RateCard.objects.get(key="llm"),
                        rows=[unit_row("0.00002", effective_from=utc(2026, 11, 16), model="gpt-4o", type="request")],
                        now=utc(2026, 11, 5))
    monkeypatch.setattr(timezone, "now", lambda: utc(2026, 11, 25))
    ingest([tokens(300_000, utc(2026, 11, 20), "request", model="gpt-4o")])  # 6.00 at the new price
    clock[0] += FEATURE_CACHE_SECONDS + 0.1
    assert api.get(path, **bearer(read_token)).json()["creditAvailable"] == 1.5  # 10 − 2.50 − 6.00


def prepaid_in_cents_since_november():
    """Kong Air on a calendar-month plan since 1 November 2026: one cent a token, a ``credit_only`` gate, $10 of
    credits."""
    from catalog.services.plans import plan_create, plan_publish
    from customers.services.subscriptions import subscription_create
    from tests.builders import ai_token_feature, utc

    ai_token_feature()
    card = RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=D("0.01"))
    plan = plan_publish(plan=plan_create(key="cents", name="Cents", currency="USD", rate_cards=[card, gated(
        "credit_only", limit="1e9")]))
    air = builders.kong_air(since=utc(2026, 10, 1))
    subscription_create(customer=air, plan=plan, start=utc(2026, 11, 1), billing_anchor="calendar")
    grant(air, 1000, effective_at=utc(2026, 11, 1))


def test_credit_only_counts_an_ended_period_until_its_close_bills_it(api, read_token, monkeypatch):
    """Between a period's end and its close (the grace period) its usage is neither burnt nor the current period's:
    the gateway still subtracts it, so a customer cannot spend its balance twice across the boundary; once the close
    burns the credits, the period counts once, in the balance."""
    from customers import selectors
    from customers.selectors import forget_cached_entitlements
    from invoicing.services.close import close_cycles
    from tests.builders import tokens, utc

    prepaid_in_cents_since_november()
    ingest([tokens(1000, utc(2026, 11, 30, 23), "request")])  # the whole $10 on the last evening

    def check(at):
        monkeypatch.setattr(timezone, "now", lambda: at)
        body = value(api, read_token)
        return body["hasAccess"], body["creditBalance"], body["creditAvailable"]

    assert check(utc(2026, 11, 30, 23, 30)) == (False, 10, 0)
    # within the grace period: November is not billed yet (the worker's answer of 23:30 held until midnight only)
    assert check(utc(2026, 12, 1, 0, 10)) == (False, 10, 0)
    credits = api.get("/api/v1/customers/kong-air/credits", **bearer(read_token)).json()
    assert credits["pending_usage"] == "0.00"  # the API's contract: the current period only
    close_cycles(now=utc(2026, 12, 1, 1, 5))  # November's close burns the $10
    # for a few seconds the worker still counts November as unbilled: twice, so refused, never wrongly granted
    assert check(utc(2026, 12, 1, 1, 10)) == (False, 0, -10)
    monkeypatch.setattr(selectors, "UNBILLED_RECHECK_SECONDS", 0.0)
    assert check(utc(2026, 12, 1, 1, 11)) == (False, 0, 0)  # asked again: the $10 burnt, November billed
    forget_cached_entitlements()  # a fresh worker agrees
    assert check(utc(2026, 12, 1, 1, 12)) == (False, 0, 0)


def test_while_a_close_is_pending_the_check_asks_only_whether_its_cycle_closed(api, read_token, monkeypatch):
    """Between a period's end and its close every credit check of every customer would read the unbilled periods
    again every few seconds (~2 ms each): it now asks one small statement whether their cycles closed, keeps the
    answer while none did, reads it again once one did, and after UNBILLED_CACHE_SECONDS in any case."""
    from customers import selectors
    from invoicing.services.close import close_cycles
    from tests.builders import tokens, utc

    prepaid_in_cents_since_november()
    ingest([tokens(400, utc(2026, 11, 30, 23), "request")])  # $4 in November, billed by its close after the grace
    clock = [1000.0]
    monkeypatch.setattr(selectors.time, "monotonic", lambda: clock[0])

    def check(at):
        monkeypatch.setattr(timezone, "now", lambda: at)
        with CaptureQueriesContext(connection) as statements:
            body = value(api, read_token)
        return body["creditAvailable"], [s["sql"] for s in statements.captured_queries]

    def asked_if_closed(sqls):
        return sum("FROM invoicing_cycleclose" in sql and "SELECT 1" in sql for sql in sqls)

    def read_unbilled(sqls):
        return sum("n.previous_id = s.id" in sql for sql in sqls)  # invoicing.selectors.unbilled._subscriptions

    available, sqls = check(utc(2026, 12, 1, 0, 10))  # November ended, not billed: it counts
    assert available == 6 and read_unbilled(sqls) == 1
    clock[0] += selectors.UNBILLED_RECHECK_SECONDS - 0.1
    available, sqls = check(utc(2026, 12, 1, 0, 11))  # within the seconds: nothing asked
    assert available == 6 and asked_if_closed(sqls) == 0 and read_unbilled(sqls) == 0
    clock[0] += 0.2
    available, sqls = check(utc(2026, 12, 1, 0, 12))  # asked whether November's cycle closed: no
    assert available == 6 and asked_if_closed(sqls) == 1 and read_unbilled(sqls) == 0
    clock[0] += 1
    available, sqls = check(utc(2026, 12, 1, 0, 13))  # the answer is fresh again: nothing asked
    assert available == 6 and asked_if_closed(sqls) == 0
    clock[0] += selectors.UNBILLED_CACHE_SECONDS
    available, sqls = check(utc(2026, 12, 1, 0, 18))  # old enough: read again whole
    assert available == 6 and read_unbilled(sqls) == 1
    close_cycles(now=utc(2026, 12, 1, 1, 5))  # November's close burns the $4
    available, sqls = check(utc(2026, 12, 1, 1, 6))  # not asked yet: November counts twice (refused, never granted)
    assert available == 2 and asked_if_closed(sqls) == 0
    clock[0] += selectors.UNBILLED_RECHECK_SECONDS
    available, sqls = check(utc(2026, 12, 1, 1, 7))  # asked: closed, so read again, and November counts once
    assert available == 6 and asked_if_closed(sqls) == 1 and read_unbilled(sqls) == 1
    clock[0] += selectors.UNBILLED_RECHECK_SECONDS
    available, sqls = check(utc(2026, 12, 1, 1, 8))  # nothing pending: nothing asked until the next period's end
    assert available == 6 and asked_if_closed(sqls) == 0 and read_unbilled(sqls) == 0


def test_the_part_of_a_period_a_plan_change_replaced_counts_until_the_successor_bills_it():
    """A plan change mid-period: the replaced subscription's part of the period is billed by its successor's first
    cycle, after the grace period; until then it is an unbilled period, then it is not."""
    from catalog.services.plans import plan_create, plan_publish
    from customers.services.subscriptions import subscription_change_plan, subscription_create
    from invoicing.selectors.unbilled import unbilled_cycles
    from invoicing.services.close import close_cycles
    from tests.builders import ai_token_feature, utc

    ai_token_feature()
    plans = [plan_publish(plan=plan_create(key=key, name=key, currency="USD", rate_cards=[RateCardSpec(
        key="ai-token", feature="ai-token", price_type="unit", unit_amount=D(price))])) for key, price in (
        ("basic", "0.01"), ("pro", "0.02"))]
    air = builders.kong_air(since=utc(2026, 10, 1))
    first = subscription_create(customer=air, plan=plans[0], start=utc(2026, 11, 1), billing_anchor="calendar")
    close_cycles(now=utc(2026, 11, 1, 0, 1))  # cycle 0: nothing in advance
    subscription_change_plan(subscription=first, plan=plans[1], when="now", now=utc(2026, 11, 15))
    assert unbilled_cycles(air.pk, utc(2026, 11, 14)) == []
    [(terms, period, _)] = unbilled_cycles(air.pk, utc(2026, 11, 15, 0, 30))
    assert (terms.plan_id, period.start, period.end) == (plans[0].pk, utc(2026, 11, 1), utc(2026, 11, 15))
    close_cycles(now=utc(2026, 11, 15, 1, 5))  # the successor's first cycle bills it
    assert unbilled_cycles(air.pk, utc(2026, 11, 15, 1, 10)) == []


def test_the_gateways_check_reads_the_balance_in_its_customer_statement_as_the_ledger_has_it():
    """The gateway's check reads the credit balance in the statement that reads the customer (one statement less
    for a credit mode): the same balance as the ledger's, with a scheduled, an expired and a voided grant."""
    air, _ = setup("credit_only", 300)
    now = timezone.now()
    grant(air, 500, effective_at=now + dt.timedelta(days=1))  # not yet
    grant(air, 700, effective_at=now - dt.timedelta(days=3), expires_at=now - dt.timedelta(days=2))  # expired
    grant_void(grant=grant(air, 900, effective_at=now - dt.timedelta(days=3)), reason="refund")
    grant(air, 250, effective_at=now - dt.timedelta(hours=1), expires_at=now + dt.timedelta(days=30))
    feature = Feature.objects.get(key="ai-token")
    entitlement_check(id_or_key="kong-air", feature=feature, at=now)  # rate cards and settled usage remembered
    with CaptureQueriesContext(connection) as statements:
        gateway = entitlement_check(id_or_key="kong-air", feature=feature, at=now)
    assert [s["sql"] for s in statements if "credits_ledgerentry" in s["sql"]] == [statements[0]["sql"]]
    assert len(statements) == 2  # the customer (with its balance), then the usage
    assert gateway == entitlement_value(customer=air, feature=feature, at=now)  # the ledger's balance, through the ORM
    assert (gateway.credit_balance, gateway.credit_available) == (D("12.50"), D("9.50"))
    assert gateway_balance(air.pk, now) == 1250


def test_a_metered_check_without_a_credit_mode_reads_no_balance():
    air = builders.kong_air(since=timezone.now() - dt.timedelta(days=400))
    subscription_create(customer=air, plan=token_plan(extra=[gated("", limit="500", soft=False)]),
                        start=timezone.now() - dt.timedelta(days=1))
    grant(air, 1000, effective_at=timezone.now() - dt.timedelta(days=2))
    feature = Feature.objects.get(key="ai-token")
    entitlement_check(id_or_key="kong-air", feature=feature, at=timezone.now())
    with CaptureQueriesContext(connection) as statements:
        value = entitlement_check(id_or_key="kong-air", feature=feature, at=timezone.now())
    assert value is not None and value.has_access and value.credit_balance is None
    assert len(statements) == 2 and not any("credits_ledgerentry" in s["sql"] for s in statements)
