"""Preview (admin, command, JSON), the invoices API, the invoice admin, demo data and the gateway stand-in."""

from __future__ import annotations

import datetime as dt
import io
import json
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from customers.services.customers import customer_create
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice
from invoicing.services.close import close_cycles
from tests.builders import bearer, graduated_out, ingest, iso, kong_air, llm_event, platform_fee, token_plan, utc

pytestmark = pytest.mark.django_db
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)


@pytest.fixture(autouse=True)
def private_var_dir(settings, tmp_path):
    """load_demo saves its token under VAR_DIR: keep tests away from the developer's var/."""
    settings.VAR_DIR = tmp_path


@pytest.fixture
def subscribed():
    air = kong_air()
    subscription = subscription_create(customer=air, plan=token_plan(extra=[platform_fee(), graduated_out()]),
                                       start=NOV)
    ingest([llm_event(tokens=1_234_567, time=iso(utc(2026, 11, 3))),
            llm_event(tokens=2000, kind="response", time=iso(utc(2026, 11, 4)))])
    return subscription


def preview(key="kong-air", at="2026-11-20T12:00:00Z"):
    out = io.StringIO()
    call_command("preview_invoice", key, "--at", at, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_preview_json_shape_and_values(subscribed):
    body = preview()
    assert (body["customer"], body["currency"]) == ("kong-air", "USD")
    assert (body["period_start"], body["period_end"]) == ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    lines = {(line["rate_card"], line["kind"]): line for line in body["lines"]}
    usage = lines[("ai-token", "usage")]
    assert {k: usage[k] for k in ("name", "feature", "quantity", "unit_price", "amount", "period_start",
                                  "period_end")} == {
        "name": "ai-token", "feature": "ai-token", "quantity": "1234567", "unit_price": "0.00002", "amount": "24.69",
        "period_start": "2026-11-01T00:00:00Z", "period_end": "2026-12-01T00:00:00Z"}
    assert lines[("ai-token-out", "usage")]["amount"] == "0.01"  # 1,000 free, 1,000 × 0.00001
    assert lines[("ai-token-out", "minimum_spend")]["amount"] == "4.99"
    assert lines[("platform", "flat_fee")]["period_start"] == "2026-12-01T00:00:00Z"  # next period, in advance
    assert body["subtotal"] == body["total"] == "78.69"  # 24.69 + 0.01 + 4.99 + 49.00


def test_preview_only_counts_usage_until_now_and_saves_nothing(subscribed):
    early = preview(at="2026-11-03T12:00:00Z")
    assert {(line["rate_card"], line["kind"]): line["quantity"] for line in early["lines"]}[("ai-token", "usage")] \
        == "1234567"
    very_early = preview(at="2026-11-02T00:00:00Z")
    assert {(line["rate_card"], line["kind"]): line["quantity"] for line in very_early["lines"]}[
        ("ai-token", "usage")] == "0"
    assert Invoice.objects.count() == 0


def test_preview_command_errors():
    with pytest.raises(CommandError, match="No customer with key 'ghost'"):
        call_command("preview_invoice", "ghost", stdout=io.StringIO())
    customer_create(key="x", name="X", currency="USD")
    with pytest.raises(CommandError, match="RFC 3339"):
        call_command("preview_invoice", "x", "--at", "tomorrow", stdout=io.StringIO())
    out = io.StringIO()
    call_command("preview_invoice", "x", stdout=out)
    assert "No lines" in out.getvalue()


def test_close_cycles_command(subscribed):
    out = io.StringIO()
    call_command("close_cycles", "--now", "2026-12-01T02:00:00Z", stdout=out)
    assert "2 invoices" in out.getvalue()
    with pytest.raises(CommandError, match="RFC 3339"):
        call_command("close_cycles", "--now", "soon", stdout=io.StringIO())


def test_invoices_api(api, read_token, subscribed):
    close_cycles(now=utc(2026, 12, 1, 2))
    invoices = api.get("/api/v1/invoices", {"customer": "kong-air", "status": "issued"}, **bearer(read_token)).json()
    assert [(i["number"], i["period_start"]) for i in invoices] == [
        ("INV-2026-000002", "2026-11-01T00:00:00Z"), ("INV-2026-000001", "2026-11-01T00:00:00Z")]
    november = invoices[0]
    assert {k: november[k] for k in ("status", "customer", "currency", "period_end", "total")} == {
        "status": "issued", "customer": "kong-air", "currency": "USD", "period_end": "2026-12-01T00:00:00Z",
        "total": "78.69"}
    assert set(november["lines"][0]) >= {"kind", "rate_card", "name", "feature", "quantity", "unit_price", "amount",
                                         "period_start", "period_end"}
    one = api.get(f"/api/v1/invoices/{november['id']}", **bearer(read_token)).json()
    assert one["number"] == "INV-2026-000002"
    assert api.get("/api/v1/invoices/INV-2026-000002", **bearer(read_token)).json()["id"] == november["id"]
    assert api.get("/api/v1/invoices/999999", **bearer(read_token)).status_code == 404
    assert api.get("/api/v1/invoices", {"status": "lost"}, **bearer(read_token)).status_code == 400
    assert api.get("/api/v1/invoices", {"customer": "nobody"}, **bearer(read_token)).json() == []
    assert api.get("/api/v1/invoices").status_code == 401


def test_admin_preview_buttons(admin_client, subscribed):
    customer_page = admin_client.get(f"/admin/customers/customer/{subscribed.customer.pk}/change/").content.decode()
    assert 'id="preview-invoice"' in customer_page
    page = admin_client.get(f"/admin/invoicing/invoice/preview/customer/{subscribed.customer.pk}/").content.decode()
    assert "ai-token — 1,234,567 tokens × $0.00002" in page and 'id="preview-total"' in page
    sub_page = admin_client.get(f"/admin/invoicing/invoice/preview/subscription/{subscribed.pk}/")
    assert sub_page.status_code == 200


def test_admin_invoice_detail_actions_log_print_and_csv(admin_client, subscribed):
    close_cycles(now=utc(2026, 12, 1, 2))
    invoice = Invoice.objects.get(number="INV-2026-000002")
    detail = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").content.decode()
    assert "1,234,567 tokens" in detail and "tier 1:" in detail and 'id="invoice-mark_paid"' in detail
    confirm = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/do/mark_paid/").content.decode()
    assert "Mark paid INV-2026-000002?" in confirm
    invoice.refresh_from_db()
    assert invoice.status == "issued"
    admin_client.post(f"/admin/invoicing/invoice/{invoice.pk}/do/mark_paid/")
    invoice.refresh_from_db()
    assert invoice.status == "paid"
    log = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").content.decode()
    assert "admin" in log and "paid" in log
    printable = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/print/").content.decode()
    assert "Invoice INV-2026-000002" in printable and "78.69" in printable
    csv_response = admin_client.post("/admin/invoicing/invoice/", {"action": "export_csv",
                                                                  "_selected_action": [invoice.pk]})
    rows = csv_response.content.decode().splitlines()
    assert rows[0].startswith("invoice,status,customer") and len(rows) == 1 + invoice.lines.count()


def test_admin_bulk_void_needs_confirmation(admin_client, subscribed):
    close_cycles(now=utc(2026, 12, 1, 2))
    invoice = Invoice.objects.get(number="INV-2026-000002")
    data = {"action": "void_invoices", "_selected_action": [invoice.pk]}
    assert b"Void 1 invoice(s)?" in admin_client.post("/admin/invoicing/invoice/", data).content
    admin_client.post("/admin/invoicing/invoice/", {**data, "confirmed": "yes"})
    invoice.refresh_from_db()
    assert invoice.status == "void"
    page = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").content.decode()
    assert 'id="invoice-reissue"' in page
    admin_client.post(f"/admin/invoicing/invoice/{invoice.pk}/do/reissue/")
    assert Invoice.objects.get(replaces=invoice).status == "issued"  # a draft only with draft review on


def test_admin_list_filters_and_close_button(admin_client, subscribed):
    close_cycles(now=utc(2026, 12, 1, 2))
    listing = admin_client.get("/admin/invoicing/invoice/", {"status__exact": "issued", "currency__exact": "USD",
                                                             "period": "2026-11"})
    assert listing.status_code == 200 and b"INV-2026-000002" in listing.content
    confirm = admin_client.get("/admin/invoicing/invoice/close/")
    assert b"Close due cycles" in confirm.content


def test_demo_data_is_idempotent():
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    assert "created customer Kong Air including consumer kong-air" in out.getvalue()
    again = io.StringIO()
    call_command("load_demo", stdout=again)
    assert "Demo data already loaded." in again.getvalue()
    from catalog.models import Plan
    from customers.models import Subscription

    assert Plan.objects.get(key="token").rate_cards.get().unit_amount == 1
    assert {s.customer.key: s.plan.key for s in Subscription.objects.all()} == {"kong-air": "token",
                                                                               "acme": "ai-gateway"}
    # the AI gateway: one rate card priced per model and token type, from genai-prices at cost + 20%
    table = {(r.match["model"], r.match["type"]): r.unit_amount
             for r in Plan.objects.get(key="ai-gateway").rate_cards.get(key="llm").price_rows.all()}
    assert table[("gpt-4o", "request")] == Decimal("0.000003") and table[("gpt-4o", "response")] == Decimal(
        "0.000012")
    assert len(table) == 6
    # the llm_tokens preset's companion meters, and the cache reads and writes priced per model beside `llm`
    from metering.models import Meter

    assert dict(Meter.objects.filter(slug__startswith="llm_").values_list("slug", "value_absent")) == {
        "llm_tokens": "invalid", "llm_cache_read_tokens": "zero", "llm_cache_write_tokens": "zero",
        "llm_reasoning_tokens": "zero"}
    cards = {card.key: {r.match["model"]: r.unit_amount for r in card.price_rows.all()}
             for card in Plan.objects.get(key="ai-gateway").rate_cards.exclude(key="llm")}
    assert cards == {"llm-cache-read": {"gpt-4o": Decimal("0.0000015"), "gpt-4o-mini": Decimal("0.00000009"),
                                        "claude-3-5-sonnet": Decimal("0.00000036")},
                     "llm-cache-write": {"claude-3-5-sonnet": Decimal("0.0000045")}}


@pytest.mark.django_db(transaction=True)
def test_simulate_gateway_then_preview_shows_the_input_tokens(live_server):
    call_command("load_demo", stdout=io.StringIO())
    out = io.StringIO()
    call_command("simulate_gateway", "--consumer", "kong-air", "--requests", "6", "--url", live_server.url, stdout=out)
    assert "Posted 18 events" in out.getvalue() and "144 input tokens, 48 cache read tokens" in out.getvalue()
    from django.utils import timezone

    body = preview(at=(timezone.now() + dt.timedelta(seconds=1)).isoformat())
    usage = next(line for line in body["lines"] if line["rate_card"] == "ai-token")
    assert (usage["quantity"], usage["amount"]) == ("144", "144.00")


@pytest.mark.django_db(transaction=True)
def test_simulate_gateway_at_its_maximum_posts_batches_the_server_takes(live_server):
    """3,000 calls are 9,000 events (~6.5 MB as one body, over the ingest limit): sent as batches of 1,000."""
    from metering.models import Event

    call_command("load_demo", stdout=io.StringIO())
    before = Event.objects.count()
    out = io.StringIO()
    call_command("simulate_gateway", "--consumer", "kong-air", "--requests", "3000", "--url", live_server.url,
                 stdout=out)
    assert "Posted 9000 events" in out.getvalue() and "HTTP 202" in out.getvalue()
    assert Event.objects.count() - before == 9000


def test_simulate_gateway_errors():
    with pytest.raises(CommandError, match="load_demo"):
        call_command("simulate_gateway", "--consumer", "kong-air", stdout=io.StringIO())
    with pytest.raises(CommandError, match="Cannot reach"):
        call_command("simulate_gateway", "--consumer", "kong-air", "--token", "x", "--url", "http://127.0.0.1:9",
                     stdout=io.StringIO())
    with pytest.raises(CommandError, match="between 1 and 3000"):
        call_command("simulate_gateway", "--consumer", "kong-air", "--requests", "0", "--token", "x",
                     stdout=io.StringIO())


def test_invoice_detail_runs_a_bounded_number_of_queries(admin_client, subscribed, django_assert_max_num_queries):
    close_cycles(now=utc(2026, 12, 1, 2))
    invoice = Invoice.objects.get(number="INV-2026-000002")
    with django_assert_max_num_queries(30):
        assert admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").status_code == 200
