"""Dimensional prices on invoices: one line per matched row, the most specific row, the default, unpriced usage,
a price change mid-period, free quantity and spend limits over the whole table, and re-rating per row."""

from __future__ import annotations

import datetime as dt

import pytest

from catalog.models import RateCard
from catalog.services.plans import price_rows_schedule
from invoicing.models import InvoiceLine
from invoicing.selectors.previews import invoice_preview
from invoicing.services.close import close_cycles
from tests.builders import D, ingest, kong_air, llm_plan, tokens, unit_row, utc

pytestmark = pytest.mark.django_db

NOV = utc(2026, 11, 1)


def _subscribe(**table):
    from customers.services.subscriptions import subscription_create

    plan = llm_plan(**table)
    customer = kong_air()
    subscription_create(customer=customer, plan=plan, start=NOV, billing_anchor="calendar")
    return customer


def _lines(cycle: int = 1) -> dict[str, InvoiceLine]:
    return {line.price_part: line for line in InvoiceLine.objects.filter(invoice__cycle=cycle)}


def test_one_line_per_matched_row_with_dimensions_and_names():
    _subscribe()
    ingest([tokens(1_000_000, utc(2026, 11, 3), "request", model="gpt-4o"),
            tokens(200_000, utc(2026, 11, 4), "response", model="gpt-4o"),
            tokens(2_000_000, utc(2026, 11, 5), "request", model="gpt-4o-mini"),
            tokens(1_000_000, utc(2026, 11, 6), "response", model="gpt-4o-mini")])
    close_cycles(now=utc(2026, 12, 1, 2))
    lines = _lines()
    assert set(lines) == {"model=gpt-4o,type=request", "model=gpt-4o,type=response", "model=gpt-4o-mini"}
    request = lines["model=gpt-4o,type=request"]
    assert (request.quantity, request.unit_price, request.amount) == (D(1_000_000), D("0.0000025"), 250)
    assert request.dimensions == {"model": "gpt-4o", "type": "request"}
    assert request.description.startswith("LLM tokens — gpt-4o · input: 1,000,000 tokens")
    assert lines["model=gpt-4o,type=response"].amount == 200  # 200,000 × 0.00001
    mini = lines["model=gpt-4o-mini"]  # the less specific row takes both types of gpt-4o-mini
    assert (mini.quantity, mini.amount, mini.dimensions) == (D(3_000_000), 45, {"model": "gpt-4o-mini"})
    assert mini.invoice.total == 250 + 200 + 45


def test_most_specific_row_wins_then_the_first_listed():
    from catalog.dimensional import DimensionalPrice, DimensionRow, resolve_row, rows_in_effect
    from catalog.pricing import UnitPrice

    any_model_request = DimensionRow((("type", "request"),), UnitPrice(D(1)))
    gpt_any = DimensionRow((("model", "gpt-4o"),), UnitPrice(D(2)))
    gpt_request = DimensionRow((("model", "gpt-4o"), ("type", "request")), UnitPrice(D(3)))
    table = DimensionalPrice(("model", "type"), (any_model_request, gpt_any, gpt_request))
    rows = rows_in_effect(table, NOV)
    assert resolve_row(rows, {"model": "gpt-4o", "type": "request"}) is gpt_request
    assert resolve_row(rows, {"model": "gpt-4o", "type": "response"}) is gpt_any
    assert resolve_row(rows, {"model": "o3", "type": "request"}) is any_model_request  # equally specific: first
    assert resolve_row(rows_in_effect(DimensionalPrice(("model", "type"), (gpt_any, any_model_request)), NOV),
                       {"model": "gpt-4o", "type": "request"}) is gpt_any
    assert resolve_row(rows, {"model": "o3", "type": "response"}) is None


def test_default_prices_what_no_row_matches():
    _subscribe(default="0.000001")
    ingest([tokens(1_000_000, utc(2026, 11, 3), "request", model="gpt-5"),
            tokens(1_000_000, utc(2026, 11, 3), "request", model="gpt-4o")])
    close_cycles(now=utc(2026, 12, 1, 2))
    lines = _lines()
    assert lines["*"].amount == 100 and lines["*"].dimensions is None
    assert "LLM tokens — other: 1,000,000 tokens" in lines["*"].description


def test_unpriced_usage_is_not_billed_and_shown_on_the_preview():
    customer = _subscribe()
    ingest([tokens(5_000, utc(2026, 11, 3), "request", model="gpt-5"),
            tokens(1_000_000, utc(2026, 11, 3), "request", model="gpt-4o")])
    preview = invoice_preview(customer=customer, at=utc(2026, 11, 20))
    assert [line.amount for line in preview.lines] == [250]
    assert [(u.usage.label, u.usage.quantity) for u in preview.unpriced] == [
        ("no price for model=gpt-5, type=request", D(5000))]
    close_cycles(now=utc(2026, 12, 1, 2))
    assert sum(line.amount for line in _lines().values()) == 250


def test_price_change_mid_period_splits_the_row_in_two_lines():
    _subscribe()
    rate_card = RateCard.objects.get(key="llm")
    price_rows_schedule(rate_card=rate_card, rows=[unit_row("0.000005", effective_from=utc(2026, 11, 16),
                                                            model="gpt-4o", type="request")], now=utc(2026, 11, 2))
    ingest([tokens(1_000_000, utc(2026, 11, 10), "request", model="gpt-4o"),
            tokens(1_000_000, utc(2026, 11, 20), "request", model="gpt-4o")])
    close_cycles(now=utc(2026, 12, 1, 2))
    lines = _lines()
    before, after = lines["model=gpt-4o,type=request"], lines["model=gpt-4o,type=request@2026-11-16T00:00:00Z"]
    assert (before.amount, after.amount) == (250, 500)
    assert "(Nov 1 – Nov 16)" in before.description and "(Nov 16 – Dec 1)" in after.description


def test_schedule_refuses_the_past():
    from catalog.services.plans import PlanError

    _subscribe()
    with pytest.raises(PlanError, match="future"):
        price_rows_schedule(rate_card=RateCard.objects.get(key="llm"),
                            rows=[unit_row("1", effective_from=utc(2026, 11, 1), model="x")], now=utc(2026, 11, 2))
    assert RateCard.objects.get(key="llm").price_rows.count() == 3


def test_free_quantity_and_minimum_spend_apply_to_the_table_as_a_whole():
    _subscribe(free_quantity=D(500_000), minimum_spend=D("20.00"))
    ingest([tokens(1_000_000, utc(2026, 11, 3), "request", model="gpt-4o"),
            tokens(1_000_000, utc(2026, 11, 3), "response", model="gpt-4o")])
    close_cycles(now=utc(2026, 12, 1, 2))
    lines = _lines()
    assert lines["model=gpt-4o,type=request"].quantity == D(500_000)  # the free quantity goes to the first row
    assert lines["model=gpt-4o,type=request"].amount == 125
    assert lines["model=gpt-4o,type=response"].amount == 1000
    assert (lines[""].kind, lines[""].amount) == ("minimum_spend", 2000 - 1125)  # one top-up for the whole card
    assert lines[""].invoice.total == 2000


def test_maximum_spend_caps_the_table_as_a_whole():
    _subscribe(maximum_spend=D("5.00"))
    ingest([tokens(1_000_000, utc(2026, 11, 3), "request", model="gpt-4o"),
            tokens(1_000_000, utc(2026, 11, 3), "response", model="gpt-4o")])
    close_cycles(now=utc(2026, 12, 1, 2))
    lines = _lines()
    assert (lines[""].kind, lines[""].amount) == ("discount", 500 - 1250)
    assert lines[""].invoice.total == 500


def test_late_usage_is_billed_per_row():
    _subscribe()
    ingest([tokens(1_000_000, utc(2026, 11, 3), "request", model="gpt-4o")])
    close_cycles(now=utc(2026, 12, 1, 2))
    ingest([tokens(400_000, utc(2026, 11, 29), "request", model="gpt-4o"),
            tokens(100_000, utc(2026, 11, 29), "response", model="gpt-4o")], now=utc(2026, 12, 5))
    close_cycles(now=utc(2027, 1, 1, 2))
    late = {line.price_part: line for line in InvoiceLine.objects.filter(invoice__cycle=2, kind="late_usage")}
    assert (late["model=gpt-4o,type=request"].quantity, late["model=gpt-4o,type=request"].amount) == (D(400_000), 100)
    assert late["model=gpt-4o,type=response"].amount == 100


def test_unpriced_usage_is_shown_on_the_dashboard_in_the_event_explorer_and_by_reconcile(admin_client, api,
                                                                                        read_token):
    import io

    from django.core.management import call_command
    from django.utils import timezone

    from invoicing.services.snapshots import record_unbilled_snapshot
    from tests.builders import bearer, llm_event

    now = timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    from customers.services.subscriptions import subscription_create

    subscription_create(customer=kong_air(), plan=llm_plan(), start=start, billing_anchor="calendar")
    ingest([llm_event(event_id="priced", tokens=100, model="gpt-4o", time=None),
            llm_event(event_id="unpriced", tokens=42, model="gpt-5", kind="response", time=None)])

    run = record_unbilled_snapshot()  # the dashboard card reads the beat's preview snapshot
    assert run.result["unpriced"] == {"groups": 1, "items": [
        {"customer": "kong-air", "rate_card": "llm", "warning": "no price for model=gpt-5, type=response",
         "quantity": "42"}]}
    page = admin_client.get("/admin/").content.decode()
    card = page[page.index('id="card-unpriced"'):]
    assert "kong-air / llm: no price for model=gpt-5, type=response (42)" in card[:2000]

    items = {i["event"]["id"]: i["validationError"] for i in api.get("/api/v1/events", **bearer(read_token)).json()}
    assert items["unpriced"] == "no price for model=gpt-5, type=response (rate card llm of plan llm)"
    assert items["priced"] is None

    close_at = (start + dt.timedelta(days=40)).replace(day=1) + dt.timedelta(hours=2)
    close_cycles(now=close_at)
    out = io.StringIO()
    call_command("billing_reconcile", "--now", close_at.isoformat(), stdout=out)
    assert "UNPRICED no price for model=gpt-5, type=response: 42" in out.getvalue()
    assert "1 unpriced usage group(s) (not billed)" in out.getvalue()
