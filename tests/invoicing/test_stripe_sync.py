"""Pushing issued invoices to Stripe (invoicing.services.stripe_push), through the real stripe-python client, against
the fake Stripe server: every step, idempotency keys, retries after a failure at each step, permanent errors
and the admin's "Retry Stripe sync", sandbox mode, and voiding."""

from __future__ import annotations

import contextlib
import datetime as dt
import html

import pytest

from customers.models import Customer
from customers.services.customers import customer_update
from customers.services.subscriptions import subscription_cancel
from invoicing.models import Invoice, InvoiceEvent
from invoicing.services import stripe_push
from invoicing.services.close import close_cycles
from invoicing.services.lifecycle import invoice_void
from invoicing.stripe_gateway import StripeGateway, StripeRetryableError
from invoicing.tasks import PUSH_RETRIES
from invoicing.tasks import push_invoice as push_invoice_task
from tests.builders import ingest, iso, llm_event, november_invoice, subscribe_with_november_usage, the_invoice, utc
from tests.fakes.stripe_fixtures import CUSTOMERS, FINALIZE, INVOICES, ITEMS, VOID, run_as_worker
from tests.fakes.stripe_server import FakeStripeServer

pytestmark = pytest.mark.slow  # the fake Stripe server, timeouts held for real
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)
AFTER_NOV = DEC + dt.timedelta(hours=2)
CANCEL_AT = utc(2026, 12, 11)
ATTEMPTS = 4  # StripeConfig.max_attempts: in-process attempts before the gateway gives up
CLIENT_TIMEOUT = 0.2  # seconds; the fake holds a "timed out" answer longer than this
USAGE_DESCRIPTION = "ai-token — 1,234,567 tokens × $0.00002 (Nov 1 – Dec 1)"
# The ``fake`` fixture (tests/fakes/stripe_fixtures.py): settings point at the fake Stripe server; the gateway is the
# production one with a no-op sleep and a short timeout.


# --------------------------------------------------------------------------------------------------
# Helpers


def ts(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def keys(fake: FakeStripeServer, path: str, method: str = "POST") -> list[str | None]:
    return [r.idempotency_key for r in fake.requests_to(method, path)]


def assert_mirrored(fake: FakeStripeServer, invoice: Invoice) -> dict:
    """The Stripe invoice holds exactly one item per line, as pushed, and our rows hold Stripe's ids."""
    invoice.refresh_from_db()
    stripe_invoice = fake.invoice(invoice.stripe_invoice_id)
    lines = list(invoice.lines.all())
    items = fake.items_of(invoice.stripe_invoice_id)
    assert [
        (i["amount"], i["currency"], i["description"], i["metadata"]["invoice_line_id"], i["period"]) for i in items
    ] == [
        (
            line.amount,
            invoice.currency.lower(),
            line.description,
            str(line.pk),
            {"start": ts(line.period_start), "end": ts(line.period_end)},
        )
        for line in lines
    ]
    assert [line.stripe_item_id for line in lines] == [i["id"] for i in items]
    assert all(i["metadata"]["invoice_id"] == str(invoice.pk) for i in items)
    assert stripe_invoice["total"] == invoice.total
    assert (invoice.stripe_number, invoice.stripe_hosted_url, invoice.stripe_status) == (
        stripe_invoice["number"],
        stripe_invoice["hosted_invoice_url"],
        stripe_invoice["status"],
    )
    assert invoice.stripe_number and invoice.stripe_hosted_url
    return stripe_invoice


def assert_one_of_everything(fake: FakeStripeServer, invoice: Invoice) -> None:
    """After any number of failures and retries: one customer, one invoice, no duplicate item, finalized once."""
    invoice.refresh_from_db()
    assert invoice.sync_status == "synced", invoice.sync_error
    assert invoice.sync_error == ""
    assert len(fake.customers) == 1
    assert list(fake.invoices) == [invoice.stripe_invoice_id]
    assert len(fake.invoice_items) == invoice.lines.count()
    assert [e["type"] for e in fake.events].count("invoice.finalized") == 1
    assert_mirrored(fake, invoice)
    assert invoice.stripe_status == "open"


# --------------------------------------------------------------------------------------------------
# The full push


@pytest.mark.django_db(transaction=True)
def test_issuing_pushes_every_step_with_deterministic_keys_and_updates_a_changed_customer(fake):
    customer = subscribe_with_november_usage()
    close_cycles(now=AFTER_NOV)  # issues cycles 0 and 1; each push runs (eagerly) once its issue commits

    opening, november = the_invoice(0), the_invoice(1)
    customer.refresh_from_db()
    assert customer.stripe_customer_id in fake.customers
    stripe_customer = fake.customers[customer.stripe_customer_id]
    assert stripe_customer["metadata"] == {"customer_key": "kong-air"}
    assert (stripe_customer["name"], stripe_customer["email"]) == ("Kong Air", "billing@kong-air.example")
    assert stripe_customer["address"] == {
        "line1": "1 Runway Rd",
        "line2": None,
        "city": "Berlin",
        "state": None,
        "postal_code": "10115",
        "country": "DE",
    }

    for invoice in (opening, november):
        invoice.refresh_from_db()
        assert invoice.sync_status == "synced", invoice.sync_error
        stripe_invoice = assert_mirrored(fake, invoice)
        assert stripe_invoice["customer"] == customer.stripe_customer_id
        assert stripe_invoice["auto_advance"] is False
        assert stripe_invoice["collection_method"] == "send_invoice"
        assert stripe_invoice["due_date"] - stripe_invoice["created"] == 30 * 86400
        assert stripe_invoice["currency"] == "usd"
        assert stripe_invoice["metadata"] == {"invoice_id": str(invoice.pk), "invoice_number": invoice.number}
        assert stripe_invoice["status"] == invoice.stripe_status == "open"
        assert invoice.log.filter(action="stripe_synced", actor_label="stripe").count() == 1

    usage = november.lines.get(rate_card_key="ai-token")
    assert usage.description == USAGE_DESCRIPTION
    item = fake.invoice_items[usage.stripe_item_id]
    assert (item["amount"], item["description"]) == (2469, USAGE_DESCRIPTION)
    assert item["metadata"] == {
        "invoice_line_id": str(usage.pk),
        "invoice_id": str(november.pk),
        "rate_card": "ai-token",
    }
    assert item["period"] == {"start": ts(NOV), "end": ts(DEC)}
    assert fake.invoice_items[november.lines.get(rate_card_key="ai-token-out").stripe_item_id]["amount"] == 0

    # The exact create requests and their keys (customer created once, for the first push only).
    invoice_create = fake.requests_to("POST", INVOICES)[-1]
    assert invoice_create.params["auto_advance"] == "false"
    assert invoice_create.params["collection_method"] == "send_invoice"
    assert invoice_create.params["days_until_due"] == "30"
    assert invoice_create.params["currency"] == "usd"
    assert keys(fake, CUSTOMERS) == [f"customer-{customer.pk}"]
    assert keys(fake, INVOICES) == [f"invoice-{opening.pk}", f"invoice-{november.pk}"]
    line_pks = [line.pk for invoice in (opening, november) for line in invoice.lines.all()]
    assert keys(fake, ITEMS) == [f"invoice-line-{pk}" for pk in line_pks]
    assert keys(fake, FINALIZE) == [f"invoice-finalize-{opening.pk}", f"invoice-finalize-{november.pk}"]
    assert not fake.requests_to("POST", r"^/v1/customers/cus_")  # nothing changed: no update

    # The customer moves and renames; she cancels on Dec 11: the final invoice has December's usage, a zero
    # line and a credit for the unused part of December's fee (it nets to more than zero, so it stays on it).
    customer_update(
        customer=customer,
        name="Kong Air Cargo",
        email="ap@kong-air.example",
        address_line1="2 Apron Way",
        city="Hamburg",
        postal_code="20095",
    )
    ingest([llm_event(tokens=5_000_000, time=iso(utc(2026, 12, 5)))])
    subscription_cancel(subscription=customer.subscriptions.get(), when="now", now=CANCEL_AT)
    close_cycles(now=CANCEL_AT + dt.timedelta(hours=2))
    final = the_invoice(2)
    final.refresh_from_db()
    assert final.sync_status == "synced", final.sync_error
    amounts = sorted(line.amount for line in final.lines.all())
    assert amounts[0] < 0 and 0 in amounts  # a credit (unused part of December's fee) and zero-usage lines
    credit = final.lines.get(kind="credit")
    assert fake.invoice_items[credit.stripe_item_id]["amount"] == credit.amount == -3319  # 49.00 × 21/31
    assert_mirrored(fake, final)
    assert final.total == 10_000 - 3319 and final.stripe_status == "open"

    updates = fake.requests_to("POST", rf"^/v1/customers/{customer.stripe_customer_id}$")
    assert len(updates) == 1
    assert len(fake.customers) == 1 and keys(fake, CUSTOMERS) == [f"customer-{customer.pk}"]
    updated = fake.customers[customer.stripe_customer_id]
    assert (updated["name"], updated["email"]) == ("Kong Air Cargo", "ap@kong-air.example")
    assert (updated["address"]["line1"], updated["address"]["city"], updated["address"]["postal_code"]) == (
        "2 Apron Way",
        "Hamburg",
        "20095",
    )
    assert updated["metadata"] == {"customer_key": "kong-air"}


def test_charge_automatically_customers_get_no_days_until_due(db, fake):
    customer = subscribe_with_november_usage()
    Customer.objects.filter(pk=customer.pk).update(collection_method="charge_automatically", days_until_due=None)
    close_cycles(now=AFTER_NOV)
    invoice = stripe_push.push_invoice_to_stripe(the_invoice(1).pk)
    assert invoice.sync_status == "synced"
    stripe_invoice = fake.invoice(invoice.stripe_invoice_id)
    assert (stripe_invoice["collection_method"], stripe_invoice["due_date"]) == ("charge_automatically", None)
    assert "days_until_due" not in fake.requests_to("POST", INVOICES)[-1].params


def test_a_pushed_invoice_is_not_pushed_again(db, fake):
    invoice = november_invoice()
    stripe_push.push_invoice_to_stripe(invoice.pk)
    requests = len(fake.requests)
    again = stripe_push.push_invoice_to_stripe(invoice.pk)
    assert again.sync_status == "synced" and len(fake.requests) == requests
    assert_one_of_everything(fake, invoice)


# --------------------------------------------------------------------------------------------------
# Failures at each step, then a retry


def short_timeout(fake: FakeStripeServer) -> None:
    fake.client_timeout = CLIENT_TIMEOUT


def inject(fake: FakeStripeServer, path: str, kind: str, times: int = ATTEMPTS) -> None:
    if kind == "500":
        fake.fail_next(path, 500, times=times, method="POST")
    else:  # Stripe executed the request, but the answer never arrived: only the key makes a retry safe
        fake.timeout_next(path, seconds=CLIENT_TIMEOUT * 3, times=times, method="POST")


def arm_on_item(monkeypatch, number: int, arm) -> None:
    """Call ``arm()`` just before the ``number``-th invoice item is sent (faults are per path, not per item)."""
    original = StripeGateway.add_invoice_item
    calls = []

    def add_invoice_item(self, **kwargs):
        calls.append(kwargs["idempotency_key"])
        if len(calls) == number:
            arm()
        return original(self, **kwargs)

    monkeypatch.setattr(StripeGateway, "add_invoice_item", add_invoice_item)


@pytest.mark.parametrize("kind", ["500", "timeout"])
@pytest.mark.parametrize("step", ["customer", "invoice", "item 2", "finalize"])
def test_a_failure_at_each_step_then_a_retry_gives_one_invoice_without_duplicates(db, fake, monkeypatch, step, kind):
    invoice = november_invoice()
    paths = {"customer": CUSTOMERS, "invoice": INVOICES, "item 2": ITEMS, "finalize": FINALIZE}
    if kind == "timeout":
        short_timeout(fake)
    if step == "item 2":
        arm_on_item(monkeypatch, 2, lambda: inject(fake, ITEMS, kind))
    else:
        inject(fake, paths[step], kind)

    with pytest.raises(StripeRetryableError):
        stripe_push.push_invoice_to_stripe(invoice.pk)  # the gateway gave up: the task would retry later
    invoice.refresh_from_db()
    assert invoice.sync_status == "syncing"
    assert invoice.sync_error.startswith("retrying: ")
    assert len(fake.requests_to("POST", paths[step])) >= ATTEMPTS
    if step == "item 2":
        first, second, third = invoice.lines.all()
        assert first.stripe_item_id and not second.stripe_item_id and not third.stripe_item_id

    stripe_push.push_invoice_to_stripe(invoice.pk)  # the retry
    assert_one_of_everything(fake, invoice)
    invoice.refresh_from_db()
    assert invoice.sync_attempts == 2
    # Every attempt of one step sent the same key; a timed-out step was replayed, not executed twice.
    assert len(set(keys(fake, paths[step]))) == (invoice.lines.count() if step == "item 2" else 1)
    if kind == "timeout":
        assert any(r.replayed for r in fake.requests_to("POST", paths[step]))


def test_items_are_found_by_line_id_when_stripe_has_forgotten_the_keys(db, fake, settings, monkeypatch):
    """A rerun later than Stripe keeps idempotency keys (24 h) must not add an item whose answer was lost:
    it finds it on the Stripe invoice by our line id. (A new key prefix stands in for the expiry.)"""
    invoice = november_invoice()
    short_timeout(fake)
    arm_on_item(monkeypatch, 2, lambda: inject(fake, ITEMS, "timeout"))
    with pytest.raises(StripeRetryableError):
        stripe_push.push_invoice_to_stripe(invoice.pk)
    assert len(fake.invoice_items) == 2  # Stripe has items 1 and 2; we only know item 1
    settings.STRIPE_IDEMPOTENCY_PREFIX = "days-later"

    stripe_push.push_invoice_to_stripe(invoice.pk)
    assert_one_of_everything(fake, invoice)
    assert keys(fake, ITEMS)[-1] == f"days-later-invoice-line-{invoice.lines.all()[2].pk}"


def test_a_lost_finalize_answer_is_found_when_stripe_has_forgotten_the_key(db, fake, settings):
    """Finalize executed, the answer was lost, the retry comes after Stripe expired the key: the push must see
    that the Stripe invoice is no longer a draft instead of failing with "already finalized"."""
    invoice = november_invoice()
    short_timeout(fake)
    inject(fake, FINALIZE, "timeout")
    with pytest.raises(StripeRetryableError):
        stripe_push.push_invoice_to_stripe(invoice.pk)
    assert fake.invoice(the_invoice(1).stripe_invoice_id)["status"] == "open"
    settings.STRIPE_IDEMPOTENCY_PREFIX = "days-later"

    stripe_push.push_invoice_to_stripe(invoice.pk)
    assert_one_of_everything(fake, invoice)


def test_429_then_success(db, fake):
    invoice = november_invoice()
    fake.fail_next(INVOICES, 429, method="POST")
    stripe_push.push_invoice_to_stripe(invoice.pk)  # the gateway's own retry
    assert_one_of_everything(fake, invoice)
    creates = fake.requests_to("POST", INVOICES)
    assert [(r.status, r.idempotency_key) for r in creates] == [(429, f"invoice-{invoice.pk}")] + [
        (200, f"invoice-{invoice.pk}")
    ]
    invoice.refresh_from_db()
    assert invoice.sync_attempts == 1


def run_task(invoice_pk: int, retries: int = 0) -> float | None:
    """One run of the invoice push task as a worker runs it (see ``run_as_worker``)."""
    return run_as_worker(push_invoice_task, invoice_pk, retries)


def test_the_task_retries_after_the_gateway_gives_up(db, fake):
    invoice = november_invoice()
    inject(fake, CUSTOMERS, "500")
    countdown = run_task(invoice.pk)
    assert countdown is not None
    assert 0 <= countdown <= 30  # the gateway gave up after its 4 attempts; the task retries within 30 s
    invoice.refresh_from_db()
    assert (invoice.sync_status, invoice.sync_attempts) == ("syncing", 1)
    assert invoice.sync_error.startswith("retrying: An unknown error occurred")
    assert run_task(invoice.pk, retries=1) is None
    assert_one_of_everything(fake, invoice)
    assert keys(fake, CUSTOMERS) == [f"customer-{invoice.customer_id}"] * (ATTEMPTS + 1)


def test_the_task_gives_up_after_its_retries_and_marks_the_sync_failed(db, fake):
    invoice = november_invoice()
    fake.fail_next(CUSTOMERS, 503, times=10_000, method="POST")
    countdowns = [run_task(invoice.pk, retries=n) for n in range(PUSH_RETRIES + 1)]
    assert countdowns[-1] is None  # the last attempt gives up instead of asking for another retry
    # exponential backoff from 30 s up to an hour, with full jitter
    assert all(countdown is not None and 0 <= countdown <= min(3600, 30 * 2**n)
               for n, countdown in enumerate(countdowns[:-1]))
    assert len(countdowns) == PUSH_RETRIES + 1
    assert len(fake.requests_to("POST", CUSTOMERS)) == ATTEMPTS * (PUSH_RETRIES + 1)
    invoice.refresh_from_db()
    assert invoice.sync_status == "failed"
    assert invoice.sync_error.startswith("gave up after retries: An unknown error occurred")
    assert invoice.log.filter(action="stripe_failed", actor_label="stripe").exists()
    assert not fake.customers and not fake.invoices


# --------------------------------------------------------------------------------------------------
# Permanent errors, the admin, "Retry Stripe sync"


def test_a_permanent_error_is_shown_in_the_admin_and_retry_sync_finishes_the_push(
    db, fake, admin_client, django_capture_on_commit_callbacks
):
    invoice = november_invoice()
    # The cause: a Stripe customer id that no longer exists (deleted in Stripe's dashboard).
    Customer.objects.filter(pk=invoice.customer_id).update(stripe_customer_id="cus_deleted0000")
    stripe_push.push_invoice_to_stripe(invoice.pk)
    invoice.refresh_from_db()
    assert invoice.sync_status == "failed"
    message = "No such customer: 'cus_deleted0000'"
    assert message in invoice.sync_error and invoice.sync_error.startswith("Stripe refused: ")
    assert invoice.log.filter(action="stripe_failed", actor_label="stripe").exists()
    assert len(fake.requests) == 1  # a 4xx is not retried

    listing = admin_client.get("/admin/invoicing/invoice/")
    assert listing.status_code == 200
    assert html.escape(message) in listing.content.decode()
    detail = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").content.decode()
    assert html.escape(message) in detail
    assert 'id="invoice-retry_sync"' in detail and "Retry Stripe sync" in detail

    # Fix the cause; the GET only asks for confirmation.
    Customer.objects.filter(pk=invoice.customer_id).update(stripe_customer_id="", stripe_synced_hash="")
    url = f"/admin/invoicing/invoice/{invoice.pk}/do/retry_sync/"
    confirm = admin_client.get(url)
    assert confirm.status_code == 200 and 'id="confirm-retry_sync"' in confirm.content.decode()
    assert len(fake.requests) == 1
    invoice.refresh_from_db()
    assert invoice.sync_status == "failed"

    with django_capture_on_commit_callbacks(execute=True):
        done = admin_client.post(url)
    assert done.status_code == 302 and done["Location"] == f"/admin/invoicing/invoice/{invoice.pk}/change/"
    assert_one_of_everything(fake, invoice)
    assert invoice.log.filter(action="stripe_retry", actor_label="admin").exists()
    detail = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").content.decode()
    assert 'id="invoice-retry_sync"' not in detail and invoice.stripe_hosted_url in detail

    # A second retry (e.g. a double click) adds nothing to Stripe.
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(url)
    assert_one_of_everything(fake, invoice)


def test_a_permanent_error_halfway_then_retry_sync_adds_no_duplicates(
    db, fake, admin_client, monkeypatch, django_capture_on_commit_callbacks
):
    invoice = november_invoice()
    arm_on_item(
        monkeypatch, 3, lambda: fake.fail_next(ITEMS, 400, method="POST", message="Invalid description: too long")
    )
    stripe_push.push_invoice_to_stripe(invoice.pk)
    invoice.refresh_from_db()
    assert invoice.sync_status == "failed" and "Invalid description: too long" in invoice.sync_error
    assert len(fake.invoice_items) == 2
    assert "Invalid description: too long" in admin_client.get("/admin/invoicing/invoice/").content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/invoicing/invoice/{invoice.pk}/do/retry_sync/")
    assert_one_of_everything(fake, invoice)
    assert keys(fake, ITEMS).count(f"invoice-line-{invoice.lines.all()[2].pk}") == 2  # the refused one, again


def test_retry_sync_of_a_voided_invoice_that_never_reached_stripe_does_not_push_it(
    db, fake, admin_client, django_capture_on_commit_callbacks
):
    invoice = november_invoice()
    Customer.objects.filter(pk=invoice.customer_id).update(stripe_customer_id="cus_deleted0000")
    stripe_push.push_invoice_to_stripe(invoice.pk)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/invoicing/invoice/{invoice.pk}/do/void/")
    invoice.refresh_from_db()
    assert invoice.status == "void"
    Customer.objects.filter(pk=invoice.customer_id).update(stripe_customer_id="", stripe_synced_hash="")

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/invoicing/invoice/{invoice.pk}/do/retry_sync/")
    assert not [i for i in fake.invoices.values() if i["status"] == "open"], "a void invoice is payable in Stripe"


# --------------------------------------------------------------------------------------------------
# Sandbox mode


def test_sandbox_mode_keeps_invoices_local(db, settings, fake_stripe, admin_client, django_capture_on_commit_callbacks):
    settings.STRIPE_API_KEY = ""
    settings.STRIPE_API_BASE = fake_stripe.url  # would be reached if anything tried
    subscribe_with_november_usage()
    with django_capture_on_commit_callbacks(execute=True):
        close_cycles(now=AFTER_NOV)
    invoices = list(Invoice.objects.all())
    assert len(invoices) == 2
    assert {(i.status, i.sync_status, i.stripe_invoice_id) for i in invoices} == {("issued", "sandbox", "")}
    assert fake_stripe.requests == []

    listing = admin_client.get("/admin/invoicing/invoice/").content.decode()
    assert 'id="sandbox-banner"' in listing and "no STRIPE_API_KEY is set" in listing
    assert "Sandbox (no Stripe key)" in listing
    detail = admin_client.get(f"/admin/invoicing/invoice/{invoices[0].pk}/change/").content.decode()
    assert "sandbox mode: invoices stay local" in detail
    assert 'id="invoice-retry_sync"' not in detail

    # Voiding in sandbox mode stays local as well; "retry sync" is refused.
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(f"/admin/invoicing/invoice/{invoices[0].pk}/do/void/")
        admin_client.post(f"/admin/invoicing/invoice/{invoices[1].pk}/do/retry_sync/")
    assert Invoice.objects.get(pk=invoices[0].pk).status == "void"
    assert Invoice.objects.get(pk=invoices[1].pk).sync_status == "sandbox"
    assert fake_stripe.requests == []


# --------------------------------------------------------------------------------------------------
# Voiding


def test_voiding_a_synced_invoice_in_the_admin_voids_it_in_stripe(
    db, fake, admin_client, django_capture_on_commit_callbacks
):
    invoice = november_invoice()
    stripe_push.push_invoice_to_stripe(invoice.pk)
    url = f"/admin/invoicing/invoice/{invoice.pk}/do/void/"
    assert admin_client.get(url).status_code == 200  # confirmation only
    assert not fake.requests_to("POST", VOID)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url)
    assert response.status_code == 302
    invoice.refresh_from_db()
    assert (invoice.status, invoice.stripe_status, invoice.sync_status) == ("void", "void", "synced")
    assert fake.invoice(invoice.stripe_invoice_id)["status"] == "void"
    assert keys(fake, VOID) == [f"invoice-void-{invoice.pk}"]
    log = list(invoice.log.values_list("action", "actor_label")[:2])
    assert log == [("stripe_voided", "stripe"), ("voided", "admin")]


def test_voiding_while_the_push_is_unfinished_never_leaves_a_payable_invoice_in_stripe(
    db, fake, monkeypatch, django_capture_on_commit_callbacks
):
    """The push stopped after the Stripe draft got its first item (the task will retry); meanwhile finance voids
    the invoice. Neither the void nor the push's retry may leave an open (payable) invoice in Stripe."""
    invoice = november_invoice()
    arm_on_item(monkeypatch, 2, lambda: inject(fake, ITEMS, "500"))
    with pytest.raises(StripeRetryableError):
        stripe_push.push_invoice_to_stripe(invoice.pk)
    with django_capture_on_commit_callbacks(execute=True):
        invoice_void(invoice=invoice, reason="wrong customer")

    with contextlib.suppress(StripeRetryableError):  # not expected, but not the point either
        stripe_push.push_invoice_to_stripe(invoice.pk)  # the task's retry
    invoice.refresh_from_db()
    assert invoice.status == "void"
    stripe_invoice = fake.invoice(invoice.stripe_invoice_id)
    assert stripe_invoice["status"] in ("draft", "void"), f"void here, {stripe_invoice['status']} in Stripe"


def test_stripe_invoice_events_have_log_entries(db, fake):
    invoice = november_invoice()
    stripe_push.push_invoice_to_stripe(invoice.pk)
    entry = InvoiceEvent.objects.get(invoice=invoice, action="stripe_synced")
    invoice.refresh_from_db()
    assert entry.actor_label == "stripe" and entry.detail == f"{invoice.stripe_invoice_id} {invoice.stripe_number}"
