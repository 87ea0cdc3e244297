"""The re-rating rule: billed across non-void invoices = rated, for every subscription, rate card and period.
Examples for each defect the rule fixed (late usage dropped or billed twice, credits as negative invoices,
zero invoices, overflowing amounts), the credit-note and void/reissue APIs, and billing_reconcile."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import CommandError, call_command

from catalog.services.plans import RateCardSpec, plan_create, plan_publish
from customers.services.subscriptions import subscription_change_plan, subscription_create
from invoicing.models import CreditNote, CycleClose, Invoice, InvoiceLine
from invoicing.selectors.previews import invoice_preview
from invoicing.selectors.reconcile import LATE_USAGE, OUTSIDE_LOOKBACK, VOIDED, reconcile
from invoicing.services.close import close_cycles
from invoicing.services.credit_notes import CreditNoteError, credit_note_create, credit_note_void
from invoicing.services.lifecycle import invoice_reissue, invoice_void
from tests.builders import (
    D,
    ai_token_feature,
    bearer,
    cancelled_in_december,
    cent_plan,
    ingest,
    iso,
    kong_air,
    monthly_close,
    platform_fee,
    token_plan,
    tokens,
    utc,
)

pytestmark = pytest.mark.django_db
NOV, DEC, JAN = utc(2026, 11, 1), utc(2026, 12, 1), utc(2027, 1, 1)


def billed(customer=None) -> int:
    lines = InvoiceLine.objects.exclude(invoice__status="void")
    notes = CreditNote.objects.filter(status="issued")
    if customer is not None:
        lines, notes = lines.filter(invoice__customer=customer), notes.filter(customer=customer)
    return sum(lines.values_list("amount", flat=True)) - sum(notes.values_list("total", flat=True))


# --- defect 1: late usage for a period ending long before the close was dropped ------------------------------------


def test_late_usage_of_a_period_ending_62_days_before_the_close_is_billed(settings):
    """The defect: billed lines were loaded by period START within the lookback while periods were chosen by
    period END, so a period ending more than ~59 days before a close had its late usage dropped."""
    settings.INVOICE_LATE_USAGE_LOOKBACK_DAYS = 90
    subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 5))])
    monthly_close(DEC, JAN)
    # A gateway's buffer arrives late: usage of November (period ended Dec 1), ingested on Jan 20.
    ingest([tokens(40, utc(2026, 11, 20))], now=utc(2027, 1, 20))
    first = Invoice.objects.first()
    assert first is not None
    preview = invoice_preview(customer=first.customer, at=utc(2027, 1, 25))
    late_preview = [line for line in preview.lines if line.kind == "late_usage"]
    assert [(line.period_start, line.quantity, line.amount) for line in late_preview] == [(NOV, 40, 40)]
    close_cycles(now=utc(2027, 2, 1, 2))  # November ended 62 days before
    late = InvoiceLine.objects.get(kind="late_usage")
    assert (late.period_start, late.period_end, late.quantity, late.amount) == (NOV, DEC, 40, 40)
    assert late.invoice.status == "issued" and late.invoice.period_start == JAN
    assert billed() == 140


def test_late_usage_beyond_the_lookback_is_not_billed_and_reconcile_says_why(settings):
    settings.INVOICE_LATE_USAGE_LOOKBACK_DAYS = 30
    subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 5))])
    monthly_close(DEC)
    ingest([tokens(40, utc(2026, 11, 20))], now=utc(2027, 2, 15))
    monthly_close(JAN, utc(2027, 2, 1), utc(2027, 3, 1))
    assert not InvoiceLine.objects.filter(kind="late_usage").exists()
    rows = [r for r in reconcile(now=utc(2027, 3, 1, 3)) if r.difference]
    assert [(r.period_start, r.rated, r.billed, r.reason) for r in rows] == [(NOV, 140, 100, OUTSIDE_LOOKBACK)]


# --- defect 2: void + reissue re-rated usage already billed as a late line ------------------------------------------


def test_reissue_after_void_does_not_bill_late_usage_a_later_invoice_billed():
    subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 5))])
    monthly_close(DEC)
    november = Invoice.objects.get(cycle=1)
    ingest([tokens(30, utc(2026, 11, 29))], now=utc(2026, 12, 10))  # late
    monthly_close(JAN)
    assert InvoiceLine.objects.get(kind="late_usage").amount == 30
    invoice_void(invoice=november, reason="wrong address")
    new = invoice_reissue(invoice=november, now=utc(2027, 1, 5))
    # November rates 130; 30 stay billed on January's invoice, so the reissue bills the 100 that are missing.
    assert [(line.kind, line.period_start, line.quantity, line.amount) for line in new.lines.all()] == [
        ("usage", NOV, 100, 100)]
    assert billed() == 130
    assert all(r.difference == 0 for r in reconcile(now=utc(2027, 1, 5)))


def test_a_void_without_reissue_is_billed_by_the_next_close_for_its_own_period():
    subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 5)), tokens(7, utc(2026, 12, 5))])
    monthly_close(DEC)
    invoice_void(invoice=Invoice.objects.get(cycle=1), reason="goodwill? no: use a credit note")
    rows = [r for r in reconcile(now=utc(2026, 12, 20)) if r.difference]
    assert [(r.rated, r.billed, r.reason) for r in rows] == [(100, 0, VOIDED)]
    monthly_close(JAN)
    january = Invoice.objects.get(cycle=2, status="issued")
    assert sorted((line.period_start, line.amount) for line in january.lines.all()) == [(NOV, 100), (DEC, 7)]
    assert billed() == 107


def test_reissue_with_nothing_missing_is_refused():
    subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 5))])
    monthly_close(DEC)
    november = Invoice.objects.get(cycle=1)
    invoice_void(invoice=november)
    monthly_close(JAN)  # bills November again on January's invoice
    with pytest.raises(ValueError, match="nothing is missing"):
        invoice_reissue(invoice=november)
    assert billed() == 100


def test_free_quantity_and_tiers_apply_to_the_whole_period_when_usage_arrives_late():
    subscription_create(customer=kong_air(), plan=cent_plan(free_quantity=D(1000), maximum_spend=D("5.00")),
                        start=NOV)
    ingest([tokens(1200, utc(2026, 11, 5))])
    monthly_close(DEC)
    assert billed() == 200  # 200 billable
    ingest([tokens(100, utc(2026, 11, 20))], now=utc(2026, 12, 3))
    monthly_close(JAN)
    assert InvoiceLine.objects.get(kind="late_usage").amount == 100  # 1300 − 1000 free = 300 → 3.00 − 2.00
    ingest([tokens(900, utc(2026, 11, 21))], now=utc(2027, 1, 3))
    monthly_close(utc(2027, 2, 1))
    assert billed() == 500  # capped at the maximum spend of 5.00 for the whole of November


def test_lower_usage_than_billed_is_credited_on_the_next_invoice():
    from metering.services.meters import meter_create

    meter = meter_create(slug="seats", name="Seats", event_type="seats", aggregation="LATEST",
                         value_property="$.seats")
    from catalog.services.features import feature_create

    feature_create(key="seats", name="Seats", meter=meter)
    plan = plan_publish(plan=plan_create(key="seats", name="Seats", currency="USD", rate_cards=[
        RateCardSpec(key="seats", feature="seats", price_type="unit", unit_amount=D("10"))]))
    subscription_create(customer=kong_air(), plan=plan, start=NOV)

    def seats(n, at, ingested):
        ingest([{"specversion": "1.0", "id": f"s{n}-{at.isoformat()}", "source": "hr", "type": "seats",
                 "subject": "kong-air", "time": iso(at), "data": {"seats": n}}], now=ingested)

    seats(5, utc(2026, 11, 10), utc(2026, 11, 10))
    seats(9, utc(2026, 12, 3), utc(2026, 12, 3))
    monthly_close(DEC)
    assert billed() == 5000
    seats(2, utc(2026, 11, 30), utc(2026, 12, 4))  # late, and the latest of November: 2 seats, not 5
    monthly_close(JAN)
    credit = InvoiceLine.objects.get(kind="credit")
    assert (credit.period_start, credit.amount) == (NOV, -3000)
    assert billed() == 2000 + 9000  # November re-rated to 2 seats; December 9 seats
    assert all(r.difference == 0 for r in reconcile(now=utc(2027, 1, 3)))


# --- defect 7: credits as negative invoices; zero invoices ------------------------------------------------------------


def test_a_usage_only_subscription_without_usage_gets_no_invoice(settings):
    subscription_create(customer=kong_air(), plan=token_plan(), start=NOV)
    monthly_close(DEC, JAN)
    assert not Invoice.objects.exists()
    assert list(CycleClose.objects.order_by("cycle").values_list("state", flat=True)) == ["empty"] * 3
    settings.INVOICE_ISSUE_ZERO_TOTAL = True
    monthly_close(utc(2027, 2, 1))
    zero = Invoice.objects.get()
    assert (zero.total, zero.status, zero.number) == (0, "issued", "INV-2027-000001")


def test_no_invoice_total_is_ever_negative_and_credits_become_credit_notes():
    cancelled_in_december(day=6)  # 26 of December's 31 days unused
    assert Invoice.objects.filter(total__lt=0).count() == 0
    note = CreditNote.objects.get()
    assert note.invoice == Invoice.objects.get(cycle=1) and note.total == 2516  # 30.00 × 26/31 (Dec 6 – Jan 1)
    assert billed() == 3000 + 3000 - 2516


def test_plan_change_credit_larger_than_the_new_fee_is_a_credit_note_and_the_change_invoice_has_no_negative_total():
    expensive, cheap = token_plan(key="big", extra=[platform_fee("100.00")]), token_plan(key="small", extra=[
        platform_fee("10.00")])
    subscription = subscription_create(customer=kong_air(), plan=expensive, start=NOV)
    close_cycles(now=utc(2026, 11, 1, 0, 5))
    new = subscription_change_plan(subscription=subscription, plan=cheap, when="now", now=utc(2026, 11, 16))
    close_cycles(now=utc(2026, 11, 16, 2))
    change = Invoice.objects.get(subscription=new, cycle=0)
    assert change.total == 500 and not change.lines.filter(kind="credit").exists()  # 10.00 × 15/30
    note = CreditNote.objects.get()
    assert (note.invoice.cycle, note.invoice.subscription, note.total) == (0, subscription, 5000)  # 100 × 15/30


def test_manual_credit_note_is_a_correction_that_the_next_close_does_not_bill_back():
    subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    ingest([tokens(1000, utc(2026, 11, 5))])
    monthly_close(DEC)
    november = Invoice.objects.get(cycle=1)
    with pytest.raises(CreditNoteError, match="left to credit"):
        credit_note_create(invoice=november, amount=1001, reason="too much")
    with pytest.raises(CreditNoteError, match="reason"):
        credit_note_create(invoice=november, amount=5, reason=" ")
    for amount in (0, -5, True, "5"):
        with pytest.raises(CreditNoteError):
            credit_note_create(invoice=november, amount=amount, reason="bad amount")  # type: ignore[arg-type]  # on purpose
    note = credit_note_create(invoice=november, amount=250, reason="outage on Nov 3")
    assert (note.number, note.total, note.lines.get().kind) == ("CN-2026-000001", 250, "adjustment")
    monthly_close(JAN)
    assert not InvoiceLine.objects.filter(invoice__cycle=2, period_start=NOV).exists()
    credit_note_void(credit_note=note, reason="issued by mistake")
    with pytest.raises(CreditNoteError, match="already void"):
        credit_note_void(credit_note=note)


def test_voiding_an_invoice_voids_its_credit_notes():
    note = cancelled_in_december()
    invoice_void(invoice=note.invoice, reason="wrong")
    note.refresh_from_db()
    assert note.status == "void"
    assert billed() == 3000  # November's fee; December's fee and its credit are both void


# --- defect 6 (invoicing side): amounts too large hold their cycle, the others close -------------------------------


def test_an_amount_too_large_holds_its_cycle_with_the_error_and_every_other_cycle_closes():
    ai_token_feature()
    huge = plan_publish(plan=plan_create(key="huge", name="Huge", currency="USD", rate_cards=[
        RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=D("1000"))]))
    subscription_create(customer=kong_air("big-spender"), plan=huge, start=NOV)
    subscription_create(customer=kong_air("normal"), plan=huge, start=NOV)
    ingest([tokens(10**17, utc(2026, 11, 5), subject="big-spender"), tokens(1, utc(2026, 11, 5), subject="normal")])
    report = close_cycles(now=DEC + dt.timedelta(hours=2))
    assert len(report.errors) == 1 and "too large" in report.errors[0]
    held = CycleClose.objects.get(subscription__customer__key="big-spender", cycle=1)
    assert held.state == "claimed" and "too large" in held.error and held.failed_at is not None
    assert Invoice.objects.get().customer.key == "normal"
    assert close_cycles(now=DEC + dt.timedelta(hours=3)).errors  # retried, still held, nothing else changes
    assert Invoice.objects.count() == 1


# --- the API --------------------------------------------------------------------------------------------------------


@pytest.fixture
def november(make_token):
    subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 5))])
    monthly_close(DEC)
    return Invoice.objects.get(cycle=1)


def test_void_and_reissue_through_the_api(api, november, make_token):
    manage = make_token("manage")
    response = api.post(f"/api/v1/invoices/{november.number}/void", {"reason": "wrong price"}, format="json",
                        **bearer(manage))
    assert response.status_code == 200 and response.json()["status"] == "void"
    again = api.post(f"/api/v1/invoices/{november.pk}/void", {"reason": "again"}, format="json", **bearer(manage))
    assert again.status_code == 409 and again["Content-Type"] == "application/problem+json"
    created = api.post(f"/api/v1/invoices/{november.number}/reissue", **bearer(manage))
    assert created.status_code == 201
    body = created.json()
    assert (body["status"], body["replaces"], body["total"]) == ("issued", november.number, "1.00")
    twice = api.post(f"/api/v1/invoices/{november.number}/reissue", **bearer(manage))
    assert twice.status_code == 409 and "already reissued" in twice.json()["detail"]
    not_void = api.post(f"/api/v1/invoices/{body['number']}/reissue", **bearer(manage))
    assert not_void.status_code == 409


@pytest.mark.parametrize("body", [[1, 2], {"reason": 5}, {"reason": "x\x00y"}, {"reason": "r" * 2001}, "text"])
def test_void_refuses_bad_bodies_with_nothing_changed(api, november, make_token, body):
    response = api.post(f"/api/v1/invoices/{november.pk}/void", body, format="json", **bearer(make_token("manage")))
    assert response.status_code == 400 and response["Content-Type"] == "application/problem+json"
    november.refresh_from_db()
    assert november.status == "issued"


def test_invoice_writes_need_the_manage_scope_or_the_issue_permission(api, november, make_token, django_user_model):
    for scope in ("read", "ingest"):
        denied = api.post(f"/api/v1/invoices/{november.pk}/void", {}, format="json", **bearer(make_token(scope)))
        assert denied.status_code == 403
    assert api.post(f"/api/v1/invoices/{november.pk}/void", {}, format="json").status_code == 401
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    from django.contrib.auth.models import Group

    viewer.groups.add(Group.objects.get(name="Finance viewer"))
    api.force_login(viewer)
    assert api.post(f"/api/v1/invoices/{november.pk}/void", {}, format="json").status_code == 403
    assert api.get(f"/api/v1/invoices/{november.pk}").status_code == 200
    admin_user = django_user_model.objects.create_user("billing", password="x", is_staff=True)
    admin_user.groups.add(Group.objects.get(name="Billing admin"))
    api.force_login(admin_user)
    assert api.post(f"/api/v1/invoices/{november.pk}/void", {"reason": "by a person"},
                    format="json").status_code == 200
    november.refresh_from_db()
    assert november.log.get(action="voided").actor == admin_user


@pytest.mark.parametrize("path", ["/api/v1/invoices/nope/void", "/api/v1/invoices/%00/void",
                                  "/api/v1/invoices/99999999999999999999999/reissue"])
def test_unknown_or_hostile_invoice_ids(api, november, make_token, path):
    response = api.post(path, {}, format="json", **bearer(make_token("manage")))
    assert response.status_code in (400, 404) and response["Content-Type"] == "application/problem+json"


def test_credit_notes_api(api, make_token):
    cancelled_in_december()
    read = make_token("read")
    listing = api.get("/api/v1/credit-notes", {"customer": "kong-air"}, **bearer(read))
    assert listing.status_code == 200
    [note] = listing.json()
    assert {k: note[k] for k in ("number", "customer", "currency", "total", "status")} == {
        "number": "CN-2026-000001", "customer": "kong-air", "currency": "USD", "total": "15.48", "status": "issued"}
    assert note["invoice"] == Invoice.objects.get(cycle=1).number
    assert note["reason"] and note["lines"][0]["kind"] == "rerating" and note["lines"][0]["rate_card"] == "platform"
    assert api.get("/api/v1/credit-notes/CN-2026-000001", **bearer(read)).json()["id"] == note["id"]
    assert api.get(f"/api/v1/credit-notes/{note['id']}", **bearer(read)).json()["number"] == "CN-2026-000001"
    assert api.get("/api/v1/credit-notes/CN-0", **bearer(read)).status_code == 404
    assert api.get("/api/v1/credit-notes", {"customer": "nobody"}, **bearer(read)).json() == []
    assert api.get("/api/v1/credit-notes", {"customer": "a\x00"}, **bearer(read)).status_code == 400
    assert api.get("/api/v1/credit-notes", **bearer(make_token("ingest"))).status_code == 403
    invoice = api.get(f"/api/v1/invoices/{note['invoice']}", **bearer(read)).json()
    assert invoice["credit_notes"] == ["CN-2026-000001"]


# --- billing_reconcile ---------------------------------------------------------------------------------------------


def reconcile_command(*args) -> str:
    out = io.StringIO()
    call_command("billing_reconcile", *args, stdout=out)
    return out.getvalue()


def test_billing_reconcile_clean_late_and_broken():
    subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 5))])
    monthly_close(DEC)
    assert "0 with a difference, 0 unexplained" in reconcile_command("--now", "2026-12-02T00:00:00Z")
    ingest([tokens(5, utc(2026, 11, 6))], now=utc(2026, 12, 3))
    out = reconcile_command("--now", "2026-12-04T00:00:00Z", "--customer", "kong-air", "--since", "2026-10-01")
    assert LATE_USAGE in out and "1 with a difference, 0 unexplained" in out
    monthly_close(JAN)
    assert "0 unexplained" in reconcile_command("--now", "2027-01-02T00:00:00Z", "--all")
    InvoiceLine.objects.filter(kind="late_usage").update(amount=4)  # what a double-billing bug would leave
    with pytest.raises(CommandError, match="nothing explains"):
        reconcile_command("--now", "2027-01-02T00:00:00Z")


@pytest.mark.parametrize("args, message", [
    (["--customer", "ghost"], "No customer"),
    (["--since", "yesterday"], "--since"),
    (["--since", "9999-99-99"], "--since"),
    (["--now", "2026-13-01T00:00:00Z"], "--now"),
    (["--customer", "a\x00b"], "NUL"),
])
def test_billing_reconcile_refuses_bad_arguments(args, message):
    with pytest.raises(CommandError, match=message):
        reconcile_command(*args)


def test_a_credit_larger_than_what_its_invoice_has_left_goes_to_the_customers_other_invoices():
    """Found by the property test: two plan changes an hour apart. The second credits almost all of a fee billed
    on an invoice that already carried a credit, so part of it goes to the customer's earlier invoice."""
    basic = token_plan(key="basic", extra=[platform_fee("30.00")])
    pro = token_plan(key="pro", extra=[platform_fee("90.00")])
    first = subscription_create(customer=kong_air(), plan=basic, start=utc(2026, 11, 2))
    at = utc(2026, 11, 14, 14)
    close_cycles(now=at)
    second = subscription_change_plan(subscription=first, plan=pro, when="now", now=at)
    close_cycles(now=at + dt.timedelta(hours=1))
    subscription_change_plan(subscription=second, plan=basic, when="now", now=at + dt.timedelta(hours=1))
    report = close_cycles(now=at + dt.timedelta(hours=2))
    assert not report.errors
    notes = {note.invoice.number: note.total for note in CreditNote.objects.all()}
    assert notes == {"INV-2026-000002": 3483, "INV-2026-000001": 1729}  # 3483 was all INV-2 had left
    assert not Invoice.objects.filter(total__lt=0).exists()
    assert all(r.difference == 0 for r in reconcile(now=at + dt.timedelta(hours=2)))


def test_the_same_prefix_for_invoices_and_credit_notes_is_refused_at_start(settings):
    from django.core.checks import run_checks

    settings.CREDIT_NOTE_NUMBER_PREFIX = settings.INVOICE_NUMBER_PREFIX
    assert "invoicing.E001" in [message.id for message in run_checks()]


def test_the_demo_data_reconciles_after_its_first_month(settings, tmp_path):
    """``make run``'s demo: the seed flow, a month of gateway traffic with some of it late, then the closes."""
    from invoicing.management.commands.simulate_gateway import gateway_events

    settings.VAR_DIR = tmp_path
    call_command("load_demo", stdout=io.StringIO())
    month = utc(2026, 11, 1)
    close_cycles(now=month)

    def traffic(requests: int, at: dt.datetime) -> list[dict]:
        return [{**event, "time": iso(at)} for event in gateway_events("kong-air", requests)]

    ingest(traffic(6, month + dt.timedelta(days=3)), now=month + dt.timedelta(days=3))
    close_cycles(now=DEC + dt.timedelta(hours=2))
    ingest(traffic(2, month + dt.timedelta(days=20)), now=DEC + dt.timedelta(days=2))  # late
    assert "0 unexplained" in reconcile_command("--now", "2026-12-03T00:00:00Z")
    close_cycles(now=JAN + dt.timedelta(hours=2))
    out = reconcile_command("--now", "2027-01-02T00:00:00Z")
    assert "0 with a difference, 0 unexplained" in out
    assert InvoiceLine.objects.filter(kind="late_usage").exists()
