"""The Stripe gateway, through the real stripe-python client, against the fake Stripe server."""

from __future__ import annotations

import json
import random
import re
import socket
import time
from typing import Any

import pytest
import stripe.params

from invoicing.stripe_gateway import (
    StripeConfig,
    StripeCreditNote,
    StripeGateway,
    StripeGatewayError,
    StripePermanentError,
    StripeRetryableError,
    WebhookSignatureError,
    construct_webhook_event,
    idempotency_key,
    is_sandbox,
)
from tests.fakes.stripe_fixtures import fake_stripe_config, gateway_for
from tests.fakes.stripe_server import API_VERSION, FakeStripeServer, allowed_parameters, sign_webhook_payload

JAN_1 = 1767225600  # 2026-01-01T00:00:00Z
FEB_1 = 1769904000  # 2026-02-01T00:00:00Z


def _customer(gateway: StripeGateway, key: str = "kong-air") -> str:
    return gateway.create_customer(
        customer_key=key, name="Kong Air", email="billing@kong-air.example",
        address={"line1": "1 Runway Rd", "city": "Berlin", "postal_code": "10115", "country": "DE"},
        idempotency_key=idempotency_key("customer", key),
    )


def _draft(gateway: StripeGateway, customer_id: str, invoice_pk: int = 7, **overrides: Any) -> str:
    values: dict[str, Any] = {
        "stripe_customer_id": customer_id, "currency": "EUR", "collection_method": "send_invoice",
        "days_until_due": 14, "metadata": {"invoice_id": str(invoice_pk)}, "description": "January 2026",
        "idempotency_key": idempotency_key("invoice", invoice_pk),
    }
    values.update(overrides)
    return gateway.create_invoice(**values).id


def _item(gateway: StripeGateway, customer_id: str, invoice_id: str, line_pk: int, amount: int = 1000,
          **overrides: Any) -> str:
    values: dict[str, Any] = {
        "stripe_customer_id": customer_id, "stripe_invoice_id": invoice_id, "amount": amount, "currency": "eur",
        "description": f"line {line_pk}", "metadata": {"invoice_line_id": str(line_pk)},
        "period_start": JAN_1, "period_end": FEB_1, "idempotency_key": idempotency_key("invoice-line", line_pk),
    }
    values.update(overrides)
    return gateway.add_invoice_item(**values)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


# -- customers ----------------------------------------------------------------------------------------


def test_create_customer_sends_metadata_and_deterministic_key(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)

    assert re.fullmatch(r"cus_\w+", customer_id)
    stored = fake_stripe.customers[customer_id]
    assert stored["metadata"] == {"customer_key": "kong-air"}
    assert stored["name"] == "Kong Air"
    assert stored["email"] == "billing@kong-air.example"
    assert stored["address"] == {"city": "Berlin", "country": "DE", "line1": "1 Runway Rd", "line2": None,
                                 "postal_code": "10115", "state": None}
    (request,) = fake_stripe.requests_to("POST", r"^/v1/customers$")
    assert request.idempotency_key == "customer-kong-air"
    assert request.header("Stripe-Version") == API_VERSION
    assert request.header("Authorization") == f"Bearer {fake_stripe.api_key}"


def test_create_customer_twice_with_the_same_key_replays_the_same_customer(fake_stripe, stripe_gateway):
    first = _customer(stripe_gateway)
    second = _customer(stripe_gateway)

    assert first == second
    assert len(fake_stripe.customers) == 1
    assert [r.replayed for r in fake_stripe.requests_to("POST", r"^/v1/customers$")] == [False, True]


def test_update_customer_overwrites_and_clears(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)

    stripe_gateway.update_customer(stripe_customer_id=customer_id, name="Kong Air GmbH", email="ap@kong-air.example",
                                   address={"line1": "2 Apron Way", "country": "DE"})
    stored = fake_stripe.customers[customer_id]
    assert (stored["name"], stored["email"]) == ("Kong Air GmbH", "ap@kong-air.example")
    assert stored["address"]["line1"] == "2 Apron Way"
    assert stored["address"]["city"] is None
    assert stored["metadata"] == {"customer_key": "kong-air"}  # untouched

    stripe_gateway.update_customer(stripe_customer_id=customer_id, name="Kong Air", email=None, address=None)
    stored = fake_stripe.customers[customer_id]
    assert (stored["name"], stored["email"], stored["address"]) == ("Kong Air", None, None)


def test_addresses_send_only_filled_fields_and_refuse_unknown_ones(fake_stripe, stripe_gateway):
    customer_id = stripe_gateway.create_customer(
        customer_key="acme", name="Acme", email=None, idempotency_key=idempotency_key("customer", "acme"),
        address={"line1": "1 Main St", "line2": "", "city": None, "state": "CA", "postal_code": 94105,
                 "country": "US"})
    stored = fake_stripe.customers[customer_id]["address"]
    assert (stored["line1"], stored["state"], stored["postal_code"], stored["country"]) == (
        "1 Main St", "CA", "94105", "US")  # numbers sent as text
    assert (stored["line2"], stored["city"]) == (None, None)  # empty values are not sent

    # Only empty values: no address at all (update clears it).
    stripe_gateway.update_customer(stripe_customer_id=customer_id, name="Acme", email=None,
                                   address={"line1": "", "city": None})
    assert fake_stripe.customers[customer_id]["address"] is None

    for call in (
        lambda address: stripe_gateway.create_customer(customer_key="x", name="X", email=None, address=address,
                                                       idempotency_key=idempotency_key("customer", "x")),
        lambda address: stripe_gateway.update_customer(stripe_customer_id=customer_id, name="X", email=None,
                                                       address=address),
    ):
        with pytest.raises(ValueError, match=r"unknown address fields \['street'\]"):
            call({"street": "1 Main St", "country": "US"})
    assert fake_stripe.customers[customer_id]["name"] == "Acme"  # the refused update sent nothing


def test_update_unknown_customer_is_permanent(stripe_gateway):
    with pytest.raises(StripePermanentError) as raised:
        stripe_gateway.update_customer(stripe_customer_id="cus_missing", name="x", email=None, address=None)
    assert raised.value.http_status == 404
    assert raised.value.code == "resource_missing"
    assert "No such customer: 'cus_missing'" in raised.value.message


# -- the invoice push ---------------------------------------------------------------------------------


def test_push_multi_line_invoice(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice = stripe_gateway.create_invoice(
        stripe_customer_id=customer_id, currency="EUR", collection_method="send_invoice", days_until_due=14,
        metadata={"invoice_id": "7", "invoice_number": "INV-2026-0007"}, description="January 2026",
        idempotency_key="invoice-7",
    )
    assert (invoice.status, invoice.number, invoice.hosted_invoice_url) == ("draft", None, None)
    assert invoice.currency == "eur"

    item_ids = [
        _item(stripe_gateway, customer_id, invoice.id, 1, amount=123_456, description="ai-token: 41,152,000 tokens"),
        _item(stripe_gateway, customer_id, invoice.id, 2, amount=5000, description="Platform fee"),
        _item(stripe_gateway, customer_id, invoice.id, 3, amount=-500, description="Credit"),
    ]
    finalized = stripe_gateway.finalize_invoice(stripe_invoice_id=invoice.id, idempotency_key="invoice-finalize-7")

    assert all(re.fullmatch(r"ii_\w+", i) for i in item_ids)
    assert finalized.id == invoice.id
    assert finalized.status == "open"
    assert re.fullmatch(r"[A-Z0-9]{8}-0001", finalized.number or "")
    assert (finalized.hosted_invoice_url or "").startswith("https://invoice.stripe.com/i/")
    assert finalized.amount_due == 123_456 + 5000 - 500
    assert stripe_gateway.retrieve_invoice(invoice.id) == finalized

    stored = fake_stripe.invoice(invoice.id)
    assert stored["auto_advance"] is False
    assert stored["collection_method"] == "send_invoice"
    assert stored["due_date"] == stored["created"] + 14 * 86400
    assert stored["metadata"] == {"invoice_id": "7", "invoice_number": "INV-2026-0007"}
    assert stored["description"] == "January 2026"
    assert [line["amount"] for line in stored["lines"]["data"]] == [123_456, 5000, -500]
    assert [line["metadata"] for line in stored["lines"]["data"]] == [
        {"invoice_line_id": "1"}, {"invoice_line_id": "2"}, {"invoice_line_id": "3"}]
    assert all(line["period"] == {"start": JAN_1, "end": FEB_1} for line in stored["lines"]["data"])
    assert stored["lines"]["data"][0]["description"] == "ai-token: 41,152,000 tokens"

    (create,) = fake_stripe.requests_to("POST", r"^/v1/invoices$")
    assert create.params["auto_advance"] == "false"
    assert create.params["pending_invoice_items_behavior"] == "exclude"
    assert create.params["currency"] == "eur"
    items = fake_stripe.requests_to("POST", r"^/v1/invoiceitems$")
    assert [r.idempotency_key for r in items] == ["invoice-line-1", "invoice-line-2", "invoice-line-3"]
    assert items[0].params["period"] == {"start": str(JAN_1), "end": str(FEB_1)}
    (finalize,) = fake_stripe.requests_to("POST", r"/finalize$")
    assert finalize.params == {"auto_advance": "false"}


def test_charge_automatically_sends_no_days_until_due(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    _draft(stripe_gateway, customer_id, collection_method="charge_automatically", days_until_due=None)

    (create,) = fake_stripe.requests_to("POST", r"^/v1/invoices$")
    assert create.params["collection_method"] == "charge_automatically"
    assert "days_until_due" not in create.params
    with pytest.raises(ValueError, match="days_until_due"):
        _draft(stripe_gateway, customer_id, 8, collection_method="charge_automatically", days_until_due=3)


def test_pending_items_of_the_customer_never_leak_into_our_invoice(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    status, _, pending = fake_stripe.raw_request(
        "POST", "/v1/invoiceitems", {"customer": customer_id, "amount": "999", "currency": "eur"},
        idempotency_key="someone-else-1",
    )
    assert status == 200 and pending["invoice"] is None

    invoice_id = _draft(stripe_gateway, customer_id)

    assert stripe_gateway.list_invoice_items(stripe_invoice_id=invoice_id) == []
    assert fake_stripe.invoice_items[pending["id"]]["invoice"] is None


def test_zero_amount_invoice_is_paid_at_finalization(stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _draft(stripe_gateway, customer_id)
    _item(stripe_gateway, customer_id, invoice_id, 1, amount=0)

    assert stripe_gateway.finalize_invoice(stripe_invoice_id=invoice_id, idempotency_key="fin-7").status == "paid"


def test_list_invoice_items_follows_pages(fake_stripe, stripe_gateway, monkeypatch):
    monkeypatch.setattr("invoicing.stripe_gateway.LIST_PAGE_SIZE", 2)
    customer_id = _customer(stripe_gateway)
    invoice_id = _draft(stripe_gateway, customer_id)
    other_invoice = _draft(stripe_gateway, customer_id, 8)
    created = [_item(stripe_gateway, customer_id, invoice_id, pk, amount=pk * 100) for pk in range(1, 6)]
    _item(stripe_gateway, customer_id, other_invoice, 99)

    items = stripe_gateway.list_invoice_items(stripe_invoice_id=invoice_id)

    assert sorted(i.id for i in items) == sorted(created)
    assert {i.metadata["invoice_line_id"]: i.amount for i in items} == {str(pk): pk * 100 for pk in range(1, 6)}
    assert len(fake_stripe.requests_to("GET", r"^/v1/invoiceitems$")) == 3  # 2 + 2 + 1


def test_crash_recovery_skips_lines_already_in_stripe(fake_stripe, stripe_gateway):
    """What the push service does after a crash: list, then add only the lines not yet there."""
    customer_id = _customer(stripe_gateway)
    invoice_id = _draft(stripe_gateway, customer_id)
    _item(stripe_gateway, customer_id, invoice_id, 1)
    # -- crash here; the rerun: --
    in_stripe = stripe_gateway.list_invoice_items(stripe_invoice_id=invoice_id)
    present = {i.metadata.get("invoice_line_id") for i in in_stripe}
    for line_pk in (1, 2):
        if str(line_pk) not in present:
            _item(stripe_gateway, customer_id, invoice_id, line_pk)

    assert len(fake_stripe.items_of(invoice_id)) == 2


# -- transient failures and retries ---------------------------------------------------------------------


def test_500_on_an_item_is_retried_with_the_same_key_and_creates_one_item(fake_stripe, fake_stripe_gateway_sleeps):
    gateway, sleeps = fake_stripe_gateway_sleeps
    customer_id = _customer(gateway)
    invoice_id = _draft(gateway, customer_id)
    fake_stripe.fail_next(r"^/v1/invoiceitems$", status=500)

    item_id = _item(gateway, customer_id, invoice_id, 1)
    # A later retry of the whole push (Celery) sends the same key again: replayed, not re-created.
    assert _item(gateway, customer_id, invoice_id, 1) == item_id

    assert [i["id"] for i in fake_stripe.items_of(invoice_id)] == [item_id]
    attempts = fake_stripe.requests_to("POST", r"^/v1/invoiceitems$")
    assert [(r.status, r.fault, r.replayed) for r in attempts] == [
        (500, "fail 500", False), (200, None, False), (200, None, True)]
    assert {r.idempotency_key for r in attempts} == {"invoice-line-1"}
    assert len(sleeps) == 1


def test_429_then_success(fake_stripe, fake_stripe_gateway_sleeps):
    gateway, sleeps = fake_stripe_gateway_sleeps
    fake_stripe.fail_next(r"^/v1/customers$", status=429, times=2)

    customer_id = _customer(gateway)

    assert list(fake_stripe.customers) == [customer_id]
    assert [r.status for r in fake_stripe.requests_to("POST", r"^/v1/customers$")] == [429, 429, 200]
    assert len(sleeps) == 2


def test_timeout_after_stripe_executed_is_replayed_not_duplicated(fake_stripe):
    gateway = gateway_for(fake_stripe, timeout_seconds=0.3)
    customer_id = _customer(gateway)
    invoice_id = _draft(gateway, customer_id)
    fake_stripe.timeout_next(r"^/v1/invoiceitems$", seconds=2)  # executed, but the answer comes too late

    started = time.monotonic()
    item_id = _item(gateway, customer_id, invoice_id, 1)

    assert time.monotonic() - started < 1.5
    assert [i["id"] for i in fake_stripe.items_of(invoice_id)] == [item_id]
    first, second = fake_stripe.requests_to("POST", r"^/v1/invoiceitems$")
    assert first.idempotency_key == second.idempotency_key == "invoice-line-1"
    assert (first.fault, second.replayed) == ("timeout 2s", True)


def test_retries_are_bounded_then_retryable_error(fake_stripe):
    sleeps = Sleeps()
    config = fake_stripe_config(fake_stripe, max_attempts=4, backoff_base_seconds=1, backoff_max_seconds=3)
    gateway = StripeGateway(config, sleep=sleeps, rng=random.Random(1))
    fake_stripe.fail_next(r"^/v1/customers$", status=503, times=10)

    with pytest.raises(StripeRetryableError) as raised:
        _customer(gateway)

    assert raised.value.http_status == 503
    assert isinstance(raised.value, StripeGatewayError)
    assert len(fake_stripe.requests_to("POST", r"^/v1/customers$")) == 4
    assert len(sleeps) == 3
    for delay, ceiling in zip(sleeps, (1, 2, 3), strict=True):  # 1, 2, 4 capped at 3; jitter in [c/2, c]
        assert ceiling / 2 <= delay <= ceiling
    assert fake_stripe.customers == {}


def test_connection_refused_is_retryable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the gateway connects
    sleeps = Sleeps()
    gateway = StripeGateway(
        StripeConfig(api_key="sk_test_x", api_base=f"http://127.0.0.1:{port}", max_attempts=2), sleep=sleeps)

    with pytest.raises(StripeRetryableError):
        gateway.retrieve_invoice("in_123")
    assert len(sleeps) == 1


def test_stripe_should_retry_false_header_makes_a_5xx_permanent(fake_stripe, fake_stripe_gateway_sleeps):
    gateway, sleeps = fake_stripe_gateway_sleeps
    fake_stripe.fail_next(r"^/v1/customers$", status=500, headers={"Stripe-Should-Retry": "false"})

    with pytest.raises(StripePermanentError):
        _customer(gateway)
    assert sleeps == []


# -- permanent failures ---------------------------------------------------------------------------------


def test_item_on_a_finalized_invoice_is_permanent_with_stripes_message(fake_stripe, fake_stripe_gateway_sleeps):
    gateway, sleeps = fake_stripe_gateway_sleeps
    customer_id = _customer(gateway)
    invoice_id = _draft(gateway, customer_id)
    _item(gateway, customer_id, invoice_id, 1)
    gateway.finalize_invoice(stripe_invoice_id=invoice_id, idempotency_key="fin-7")

    with pytest.raises(StripePermanentError) as raised:
        _item(gateway, customer_id, invoice_id, 2)

    assert raised.value.http_status == 400
    assert raised.value.message == (
        f"You can only add invoice items to draft invoices; invoice {invoice_id} is open.")
    assert raised.value.param == "invoice"
    assert sleeps == []
    assert len(fake_stripe.requests_to("POST", r"^/v1/invoiceitems$")) == 2


def test_unknown_currency_is_permanent(stripe_gateway):
    customer_id = _customer(stripe_gateway)
    with pytest.raises(StripePermanentError, match=r"Invalid currency: zzz") as raised:
        _draft(stripe_gateway, customer_id, currency="ZZZ")
    assert raised.value.param == "currency"


def test_finalize_twice_with_a_new_key_is_refused(stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _draft(stripe_gateway, customer_id)
    _item(stripe_gateway, customer_id, invoice_id, 1)
    first = stripe_gateway.finalize_invoice(stripe_invoice_id=invoice_id, idempotency_key="fin-7")

    assert stripe_gateway.finalize_invoice(stripe_invoice_id=invoice_id, idempotency_key="fin-7") == first
    with pytest.raises(StripePermanentError, match="re-finalize"):
        stripe_gateway.finalize_invoice(stripe_invoice_id=invoice_id, idempotency_key="fin-7-again")


def test_same_key_with_different_params_is_an_idempotency_error(stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _draft(stripe_gateway, customer_id)
    _item(stripe_gateway, customer_id, invoice_id, 1, amount=1000)

    with pytest.raises(StripePermanentError) as raised:
        _item(stripe_gateway, customer_id, invoice_id, 1, amount=2000)

    assert raised.value.error_type == "idempotency_error"
    assert "same parameters" in raised.value.message


def test_wrong_api_key_is_permanent(fake_stripe):
    gateway = StripeGateway(fake_stripe_config(fake_stripe, api_key="sk_test_wrong"))
    with pytest.raises(StripePermanentError) as raised:
        gateway.retrieve_invoice("in_123")
    assert raised.value.http_status == 401


# -- void ---------------------------------------------------------------------------------------------


def test_void_an_open_invoice(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _draft(stripe_gateway, customer_id)
    _item(stripe_gateway, customer_id, invoice_id, 1)
    finalized = stripe_gateway.finalize_invoice(stripe_invoice_id=invoice_id, idempotency_key="fin-7")

    voided = stripe_gateway.void_invoice(stripe_invoice_id=invoice_id, idempotency_key="invoice-void-7")

    assert (voided.status, voided.number) == ("void", finalized.number)
    assert [e["type"] for e in fake_stripe.events if e["data"]["object"].get("id") == invoice_id] == [
        "invoice.created", "invoice.finalized", "invoice.voided"]
    # the same void again (a retried task) is replayed, not refused
    assert stripe_gateway.void_invoice(stripe_invoice_id=invoice_id, idempotency_key="invoice-void-7") == voided


def test_void_a_draft_is_refused(stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _draft(stripe_gateway, customer_id)
    with pytest.raises(StripePermanentError, match="only void an open"):
        stripe_gateway.void_invoice(stripe_invoice_id=invoice_id, idempotency_key="invoice-void-7")


# -- credit notes -------------------------------------------------------------------------------------


def _open_invoice(gateway: StripeGateway, customer_id: str, invoice_pk: int = 7, amounts=(1000, 5000)) -> str:
    invoice_id = _draft(gateway, customer_id, invoice_pk)
    for index, amount in enumerate(amounts):
        _item(gateway, customer_id, invoice_id, invoice_pk * 100 + index, amount=amount)
    gateway.finalize_invoice(stripe_invoice_id=invoice_id, idempotency_key=f"invoice-finalize-{invoice_pk}")
    return invoice_id


def _credit(gateway: StripeGateway, invoice_id: str, credit_note_pk: int = 3, lines=(("Unused fee", 1500),),
            **overrides: Any) -> StripeCreditNote:
    values: dict[str, Any] = {
        "stripe_invoice_id": invoice_id, "lines": list(lines), "metadata": {"credit_note_id": str(credit_note_pk)},
        "memo": "CN-2026-000003: cancellation", "credit_amount": None,
        "idempotency_key": idempotency_key("credit-note", credit_note_pk),
    }
    values.update(overrides)
    return gateway.create_credit_note(**values)


def test_credit_note_on_an_open_invoice_lowers_what_is_due(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _open_invoice(stripe_gateway, customer_id)
    number = fake_stripe.invoice(invoice_id)["number"]

    note = _credit(stripe_gateway, invoice_id, lines=[("Unused Platform fee (Nov 11 – Dec 1)", 1500),
                                                      ("ai-token re-rated", 500)], reason="order_change")

    assert re.fullmatch(r"cn_\w+", note.id)
    assert (note.number, note.status, note.total, note.invoice) == (f"{number}-CN-01", "issued", 2000, invoice_id)
    assert (note.pre_payment_amount, note.post_payment_amount) == (2000, 0)
    assert note.metadata == {"credit_note_id": "3"}
    assert stripe_gateway.retrieve_credit_note(note.id) == note
    invoice = fake_stripe.invoice(invoice_id)
    assert (invoice["total"], invoice["amount_due"], invoice["amount_remaining"], invoice["status"]) == (
        6000, 4000, 4000, "open")
    assert (invoice["pre_payment_credit_notes_amount"], invoice["post_payment_credit_notes_amount"]) == (2000, 0)
    assert stripe_gateway.retrieve_invoice(invoice_id).amount_remaining == 4000
    (stored,) = fake_stripe.credit_notes_of(invoice_id)
    assert [(line["type"], line["description"], line["quantity"], line["unit_amount"], line["amount"])
            for line in stored["lines"]["data"]] == [
        ("custom_line_item", "Unused Platform fee (Nov 11 – Dec 1)", 1, 1500, 1500),
        ("custom_line_item", "ai-token re-rated", 1, 500, 500)]
    assert (stored["memo"], stored["reason"], stored["type"]) == (
        "CN-2026-000003: cancellation", "order_change", "pre_payment")
    (create,) = fake_stripe.requests_to("POST", r"^/v1/credit_notes$")
    assert create.idempotency_key == "credit-note-3"
    assert create.params["email_type"] == "none"  # Stripe emails nothing we did not decide to send
    assert create.params["lines"]["0"] == {"type": "custom_line_item", "description": "Unused Platform fee (Nov 11 "
                                           "– Dec 1)", "quantity": "1", "unit_amount": "1500"}
    assert "credit_amount" not in create.params
    assert [e["type"] for e in fake_stripe.events].count("credit_note.created") == 1

    second = _credit(stripe_gateway, invoice_id, 4, lines=[("Goodwill", 100)])
    assert second.number == f"{number}-CN-02"
    assert fake_stripe.invoice(invoice_id)["amount_due"] == 3900


def test_credit_note_on_a_paid_invoice_must_say_where_the_money_goes(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _open_invoice(stripe_gateway, customer_id)
    fake_stripe.mark_paid(invoice_id)

    with pytest.raises(StripePermanentError, match=r"must equal the credit note's post-payment amount \(1500\)"):
        _credit(stripe_gateway, invoice_id)
    note = _credit(stripe_gateway, invoice_id, 4, credit_amount=1500)

    assert (note.pre_payment_amount, note.post_payment_amount) == (0, 1500)
    invoice = fake_stripe.invoice(invoice_id)
    assert (invoice["status"], invoice["amount_due"], invoice["amount_paid"]) == ("paid", 6000, 6000)
    assert invoice["post_payment_credit_notes_amount"] == 1500
    assert fake_stripe.customers[customer_id]["balance"] == -1500  # a credit, applied to the next invoice
    assert fake_stripe.requests_to("POST", r"^/v1/credit_notes$")[-1].params["credit_amount"] == "1500"

    nxt = _open_invoice(stripe_gateway, customer_id, 8, amounts=(4000,))
    nxt_invoice = fake_stripe.invoice(nxt)
    assert (nxt_invoice["total"], nxt_invoice["amount_due"]) == (4000, 2500)
    assert (nxt_invoice["starting_balance"], nxt_invoice["ending_balance"]) == (-1500, 0)
    assert fake_stripe.customers[customer_id]["balance"] == 0


def test_a_credit_note_above_what_an_open_invoice_still_owes_places_the_rest(fake_stripe, stripe_gateway):
    """The customer's balance paid part of the invoice at finalization: a credit note above what is still owed is
    'mixed' (pre- and post-payment), and its post-payment part must be placed."""
    customer_id = _customer(stripe_gateway)
    paid = _open_invoice(stripe_gateway, customer_id, amounts=(2000,))
    fake_stripe.mark_paid(paid)
    _credit(stripe_gateway, paid, 1, lines=[("refund", 2000)], credit_amount=2000)
    invoice_id = _open_invoice(stripe_gateway, customer_id, 8, amounts=(3000,))
    assert fake_stripe.invoice(invoice_id)["amount_remaining"] == 1000

    with pytest.raises(StripePermanentError, match=r"post-payment amount \(500\)"):
        _credit(stripe_gateway, invoice_id, 2, lines=[("x", 1500)])
    note = _credit(stripe_gateway, invoice_id, 3, lines=[("x", 1500)], credit_amount=500)

    assert (note.pre_payment_amount, note.post_payment_amount) == (1000, 500)
    assert fake_stripe.credit_notes[note.id]["type"] == "mixed"
    assert fake_stripe.invoice(invoice_id)["status"] == "paid"  # nothing left to owe
    assert fake_stripe.customers[customer_id]["balance"] == -500


def test_a_credit_note_that_clears_an_open_invoice_marks_it_paid_and_can_no_longer_be_voided(fake_stripe,
                                                                                            stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _open_invoice(stripe_gateway, customer_id, amounts=(1500,))

    note = _credit(stripe_gateway, invoice_id)

    invoice = fake_stripe.invoice(invoice_id)
    assert (invoice["status"], invoice["amount_due"], invoice["amount_remaining"]) == ("paid", 0, 0)
    assert [e["type"] for e in fake_stripe.events][-2:] == ["credit_note.created", "invoice.paid"]
    with pytest.raises(StripePermanentError, match=f"only void a credit note on an open invoice; invoice "
                                                   f"{invoice_id} is paid"):
        stripe_gateway.void_credit_note(stripe_credit_note_id=note.id, idempotency_key="credit-note-void-3")


def test_credit_notes_never_exceed_the_invoice_total(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _open_invoice(stripe_gateway, customer_id)
    first = _credit(stripe_gateway, invoice_id, 1, lines=[("a", 4000)])

    with pytest.raises(StripePermanentError, match=r"exceeds what is left to credit .* \(2000 of its total 6000\)"):
        _credit(stripe_gateway, invoice_id, 2, lines=[("b", 2001)])
    assert len(fake_stripe.credit_notes) == 1

    stripe_gateway.void_credit_note(stripe_credit_note_id=first.id, idempotency_key="credit-note-void-1")
    assert _credit(stripe_gateway, invoice_id, 3, lines=[("b", 6000)]).total == 6000  # a void note frees its room


@pytest.mark.parametrize("state", ["draft", "void"])
def test_credit_notes_on_draft_or_void_invoices_are_refused(stripe_gateway, state):
    customer_id = _customer(stripe_gateway)
    invoice_id = _draft(stripe_gateway, customer_id)
    _item(stripe_gateway, customer_id, invoice_id, 1)
    if state == "void":
        stripe_gateway.finalize_invoice(stripe_invoice_id=invoice_id, idempotency_key="fin-7")
        stripe_gateway.void_invoice(stripe_invoice_id=invoice_id, idempotency_key="void-7")

    with pytest.raises(StripePermanentError) as raised:
        _credit(stripe_gateway, invoice_id, lines=[("x", 100)])
    assert raised.value.message == (f"You can only create a credit note for an open, paid or uncollectible invoice; "
                                    f"invoice {invoice_id} is {state}.")
    assert raised.value.param == "invoice"


def test_void_a_credit_note_restores_what_is_due_and_is_idempotent(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _open_invoice(stripe_gateway, customer_id)
    note = _credit(stripe_gateway, invoice_id)

    voided = stripe_gateway.void_credit_note(stripe_credit_note_id=note.id, idempotency_key="credit-note-void-3")

    assert (voided.id, voided.status, voided.total) == (note.id, "void", 1500)
    invoice = fake_stripe.invoice(invoice_id)
    assert (invoice["amount_due"], invoice["pre_payment_credit_notes_amount"]) == (6000, 0)
    assert fake_stripe.credit_notes[note.id]["voided_at"] is not None
    assert [e["type"] for e in fake_stripe.events][-1] == "credit_note.voided"
    # the same void again (a retried task) replays; a new void is refused
    again = stripe_gateway.void_credit_note(stripe_credit_note_id=note.id, idempotency_key="credit-note-void-3")
    assert again == voided
    with pytest.raises(StripePermanentError, match="already void"):
        stripe_gateway.void_credit_note(stripe_credit_note_id=note.id, idempotency_key="credit-note-void-3-again")
    with pytest.raises(StripePermanentError) as raised:
        stripe_gateway.void_credit_note(stripe_credit_note_id="cn_missing", idempotency_key="credit-note-void-9")
    assert (raised.value.http_status, raised.value.code) == (404, "resource_missing")


def test_list_credit_notes_follows_pages(fake_stripe, stripe_gateway, monkeypatch):
    monkeypatch.setattr("invoicing.stripe_gateway.LIST_PAGE_SIZE", 2)
    customer_id = _customer(stripe_gateway)
    invoice_id = _open_invoice(stripe_gateway, customer_id)
    other = _open_invoice(stripe_gateway, customer_id, 8)
    created = [_credit(stripe_gateway, invoice_id, pk, lines=[(f"credit {pk}", pk * 100)]) for pk in range(1, 6)]
    _credit(stripe_gateway, other, 99)

    notes = stripe_gateway.list_credit_notes(stripe_invoice_id=invoice_id)

    assert [n.id for n in notes] == [n.id for n in reversed(created)]  # newest first, as Stripe lists
    assert {n.metadata["credit_note_id"]: n.total for n in notes} == {str(pk): pk * 100 for pk in range(1, 6)}
    assert len(fake_stripe.requests_to("GET", r"^/v1/credit_notes$")) == 3  # 2 + 2 + 1
    assert stripe_gateway.list_credit_notes(stripe_invoice_id=_draft(stripe_gateway, customer_id, 9)) == []


def test_a_lost_credit_note_answer_is_replayed_not_duplicated(fake_stripe):
    gateway = gateway_for(fake_stripe, timeout_seconds=0.3)
    customer_id = _customer(gateway)
    invoice_id = _open_invoice(gateway, customer_id)
    fake_stripe.timeout_next(r"^/v1/credit_notes$", seconds=2, method="POST")

    note = _credit(gateway, invoice_id)

    assert list(fake_stripe.credit_notes) == [note.id]
    first, second = fake_stripe.requests_to("POST", r"^/v1/credit_notes$")
    assert (first.fault, second.replayed) == ("timeout 2s", True)
    assert fake_stripe.invoice(invoice_id)["amount_due"] == 4500  # credited once


def test_create_credit_note_checks_its_arguments_before_calling_stripe(fake_stripe, stripe_gateway):
    cases: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"lines": []}, ValueError),
        ({"lines": [("x", 0)]}, ValueError),
        ({"lines": [("x", -5)]}, ValueError),
        ({"lines": [("x", True)]}, TypeError),
        ({"lines": [("x", 1.5)]}, TypeError),
        ({"lines": [("  ", 100)]}, ValueError),
        ({"lines": [("x", 100)], "credit_amount": 101}, ValueError),
        ({"lines": [("x", 100)], "credit_amount": 0}, ValueError),
        ({"lines": [("x", 100)], "credit_amount": "50"}, TypeError),
    ]
    for overrides, error in cases:
        with pytest.raises(error):
            _credit(stripe_gateway, "in_123", **overrides)
    assert fake_stripe.requests == []


def test_fake_checks_credit_note_lines_and_placements(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _open_invoice(stripe_gateway, customer_id)
    line = [("invoice", invoice_id), ("lines[0][type]", "custom_line_item"), ("lines[0][unit_amount]", "100")]
    cases = [
        (line + [("lines[0][foo]", "1")], "Received unknown parameter: lines[0][foo]"),
        (line + [("lines[0][tax_rates][0]", "txr_1")], "fake Stripe: `lines[0][tax_rates]` is a valid Stripe "
                                                         "parameter but the fake does not model it"),
        ([("invoice", invoice_id), ("lines[0][unit_amount]", "100")], "Missing required param: lines[0][type]."),
        ([("invoice", invoice_id), ("lines[0][type]", "invoice_line_item"), ("lines[0][amount]", "100")],
         "fake Stripe: `lines[0][amount]` is a valid Stripe parameter but the fake does not model it"),
        ([("invoice", invoice_id), ("lines[0][type]", "custom_line_item")], "Missing required param: "
                                                                            "lines[0][unit_amount]."),
        ([("invoice", invoice_id), ("lines[0][type]", "custom_line_item"), ("lines[0][unit_amount]", "-1")],
         "Invalid lines[0][unit_amount]: a custom credit note line cannot credit a negative amount."),
        (line + [("lines[0][quantity]", "0")], "Invalid lines[0][quantity]: must be at least 1."),
        ([("invoice", invoice_id), ("lines[0][type]", "rebate"), ("lines[0][unit_amount]", "1")],
         "Invalid lines[0][type]: must be one of custom_line_item or invoice_line_item"),
        ([("invoice", invoice_id), ("amount", "100")], "fake Stripe: `amount` is a valid Stripe parameter for POST "
                                                       "^/v1/credit_notes$ but the fake does not model it"),
        (line + [("refund_amount", "100")], f"Invoice {invoice_id} has no charge to refund; use `credit_amount` or "
                                            "`out_of_band_amount`."),
        (line + [("credit_amount", "100")], "The sum of credit_amount (100), refund_amount (0) and out_of_band_amount "
                                            "(0) must equal the credit note's post-payment amount (0): the part of "
                                            f"its total (100) above what invoice {invoice_id} still owes (6000)."),
        ([("invoice", "in_missing"), *line[1:]], "No such invoice: 'in_missing'"),
        ([("invoice", invoice_id), ("lines[0][type]", "custom_line_item"), ("lines[0][unit_amount]", "0")],
         "The credit note total must be greater than zero."),
    ]
    for index, (params, message) in enumerate(cases):
        status, _, body = fake_stripe.raw_request("POST", "/v1/credit_notes", params, idempotency_key=f"cn-{index}")
        assert (status, body["error"]["message"]) == (400, message), index
    assert fake_stripe.credit_notes == {}

    # an out-of-band placement is accepted on a paid invoice
    fake_stripe.mark_paid(invoice_id)
    status, _, note = fake_stripe.raw_request("POST", "/v1/credit_notes", line + [("out_of_band_amount", "100")],
                                              idempotency_key="cn-oob")
    assert (status, note["post_payment_amount"], note["out_of_band_amount"]) == (200, 100, 100)
    assert fake_stripe.customers[customer_id]["balance"] == 0
    # creating and voiding need our deterministic keys
    status, _, body = fake_stripe.raw_request("POST", "/v1/credit_notes", line)
    assert (status, body["error"]["code"]) == (400, "fake_stripe_contract")
    status, _, body = fake_stripe.raw_request("POST", f"/v1/credit_notes/{note['id']}/void")
    assert (status, body["error"]["code"]) == (400, "fake_stripe_contract")
    assert fake_stripe.credit_notes[note["id"]]["status"] == "issued"


def test_fake_lists_credit_notes_like_stripe(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    invoice_id = _open_invoice(stripe_gateway, customer_id)
    ids = [_credit(stripe_gateway, invoice_id, pk, lines=[("x", 100)]).id for pk in range(3)]

    status, _, page = fake_stripe.raw_request("GET", "/v1/credit_notes", {"invoice": invoice_id, "limit": "2"})
    assert (status, [n["id"] for n in page["data"]], page["has_more"]) == (200, ids[:0:-1], True)
    _, _, rest = fake_stripe.raw_request("GET", "/v1/credit_notes", {"invoice": invoice_id,
                                                                     "starting_after": ids[1]})
    assert ([n["id"] for n in rest["data"]], rest["has_more"]) == ([ids[0]], False)
    _, _, before = fake_stripe.raw_request("GET", "/v1/credit_notes", {"ending_before": ids[0], "limit": "1"})
    assert [n["id"] for n in before["data"]] == [ids[1]]
    _, _, by_customer = fake_stripe.raw_request("GET", "/v1/credit_notes", {"customer": customer_id})
    assert len(by_customer["data"]) == 3
    for params, message in (({"limit": "101"}, "This value must be between 1 and 100 (inclusive)."),
                            ({"invoice": "in_missing"}, "No such invoice: 'in_missing'"),
                            ({"starting_after": "cn_missing"}, "No such credit_note: 'cn_missing'"),
                            ({"created": "1"}, "fake Stripe: `created` is a valid Stripe parameter for GET "
                                               "^/v1/credit_notes$ but the fake does not model it")):
        status, _, body = fake_stripe.raw_request("GET", "/v1/credit_notes", params)
        assert (status, body["error"]["message"]) == (400, message)
    status, _, body = fake_stripe.raw_request("GET", "/v1/credit_notes/cn_missing")
    assert (status, body["error"]["message"]) == (404, "No such credit_note: 'cn_missing'")


# -- the fake's own contract checks (raw HTTP, not through stripe-python) -------------------------------------


def test_fake_rejects_unknown_parameters(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)

    status, _, body = fake_stripe.raw_request(
        "POST", "/v1/invoices", {"customer": customer_id, "foo": "bar"}, idempotency_key="k-1")
    assert status == 400
    assert body == {"error": {"type": "invalid_request_error", "message": "Received unknown parameter: foo",
                              "param": "foo"}}
    # a request refused by validation never executed, so its key stays free (as on Stripe)
    status, _, body = fake_stripe.raw_request("POST", "/v1/invoices", {"customer": customer_id}, idempotency_key="k-1")
    assert (status, body["object"]) == (200, "invoice")

    status, _, body = fake_stripe.raw_request(
        "POST", "/v1/invoiceitems", [("customer", customer_id), ("amount", "1"), ("currency", "eur"),
                                     ("period[start]", "1"), ("period[end]", "2"), ("period[middle]", "1")],
        idempotency_key="k-2")
    assert (status, body["error"]["message"]) == (400, "Received unknown parameter: period[middle]")

    # request options are headers, never body parameters
    status, _, body = fake_stripe.raw_request(
        "POST", "/v1/customers", {"idempotency_key": "x"}, idempotency_key="k-3")
    assert (status, body["error"]["param"]) == (400, "idempotency_key")
    assert len(fake_stripe.invoices) == 1 and fake_stripe.invoice_items == {}


def test_fake_checks_types_enums_and_required_nested_fields(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)
    cases = [
        ("/v1/invoiceitems", {"customer": customer_id, "amount": "12.5", "currency": "eur"}, "Invalid integer: 12.5"),
        ("/v1/invoices", {"customer": customer_id, "collection_method": "by_pigeon"},
         "Invalid collection_method: must be one of charge_automatically or send_invoice"),
        ("/v1/invoices", {"customer": customer_id, "auto_advance": "maybe"}, "Invalid boolean: maybe"),
        ("/v1/invoiceitems", {"customer": customer_id, "amount": "1", "currency": "eur", "period[start]": "1"},
         "Missing required param: period[end]."),
    ]
    for index, (path, params, message) in enumerate(cases):
        status, _, body = fake_stripe.raw_request("POST", path, params, idempotency_key=f"k-{index}")
        assert (status, body["error"]["message"]) == (400, message)


def test_fake_refuses_unmodelled_parameters_and_unknown_endpoints(fake_stripe, stripe_gateway):
    customer_id = _customer(stripe_gateway)

    status, _, body = fake_stripe.raw_request(
        "POST", "/v1/invoices", {"customer": customer_id, "footer": "hi"}, idempotency_key="k-1")
    assert (status, body["error"]["code"]) == (400, "fake_stripe_unimplemented")

    status, _, body = fake_stripe.raw_request("POST", "/v1/charges", {"amount": "1"}, idempotency_key="k-2")
    assert status == 404
    assert body["error"]["message"].startswith("Unrecognized request URL (POST: /v1/charges)")


def test_fake_checks_auth_version_and_idempotency_key(fake_stripe, stripe_gateway):
    assert fake_stripe.raw_request("GET", "/v1/invoiceitems", api_key="sk_test_nope")[0] == 401
    assert fake_stripe.raw_request("GET", "/v1/invoiceitems", api_key="sk_live_real")[0] == 401
    status, _, body = fake_stripe.raw_request("GET", "/v1/invoiceitems", stripe_version=None)
    assert (status, body["error"]["code"]) == (400, "fake_stripe_contract")

    status, _, body = fake_stripe.raw_request("POST", "/v1/customers", {"name": "x"})
    assert (status, body["error"]["code"]) == (400, "fake_stripe_contract")
    status, _, body = fake_stripe.raw_request(
        "POST", "/v1/customers", {"name": "x"}, idempotency_key="8d3c1e0a-6f2b-4c1d-9e8f-0a1b2c3d4e5f")
    assert "random (SDK-generated)" in body["error"]["message"]
    assert fake_stripe.customers == {}


def test_fake_replays_with_header_and_rejects_a_key_reused_elsewhere(fake_stripe):
    first = fake_stripe.raw_request("POST", "/v1/customers", {"name": "A"}, idempotency_key="customer-1")
    replay = fake_stripe.raw_request("POST", "/v1/customers", {"name": "A"}, idempotency_key="customer-1")
    other_endpoint = fake_stripe.raw_request("POST", "/v1/invoices", {"customer": "cus_x"},
                                             idempotency_key="customer-1")

    assert first[0] == replay[0] == 200
    assert replay[2] == first[2]
    assert replay[1].get("Idempotent-Replayed") == "true"
    assert (other_endpoint[0], other_endpoint[2]["error"]["type"]) == (400, "idempotency_error")
    assert len(fake_stripe.customers) == 1


def test_fake_derives_allowed_parameters_from_the_sdk():
    names = allowed_parameters(stripe.params.InvoiceItemCreateParams)
    assert {"amount", "currency", "customer", "invoice", "metadata", "period"} <= names
    assert not names & {"idempotency_key", "api_key", "stripe_version", "headers"}
    assert "unit_amount" not in names  # Stripe's API has no top-level unit_amount on invoice items


# -- webhooks -----------------------------------------------------------------------------------------


def _signed_event(fake: FakeStripeServer, **kwargs):
    event = fake.make_event("invoice.paid", {"id": "in_123", "object": "invoice", "status": "paid"})
    payload, headers = fake.webhook_request(event, **kwargs)
    return event, payload, headers["Stripe-Signature"]


def test_webhook_with_a_good_signature_returns_the_event(fake_stripe):
    event, payload, signature = _signed_event(fake_stripe)

    parsed = construct_webhook_event(payload, signature, secret=fake_stripe.webhook_secret)

    assert parsed == event
    assert type(parsed) is dict
    assert (parsed["type"], parsed["data"]["object"]["id"]) == ("invoice.paid", "in_123")


def test_webhook_with_a_wrong_signature_or_secret_is_refused(fake_stripe):
    _, payload, signature = _signed_event(fake_stripe)
    with pytest.raises(WebhookSignatureError):
        construct_webhook_event(payload + b" ", signature, secret=fake_stripe.webhook_secret)
    with pytest.raises(WebhookSignatureError):
        construct_webhook_event(payload, signature, secret="whsec_other")
    with pytest.raises(WebhookSignatureError):
        construct_webhook_event(payload, "t=1,v0=abc", secret=fake_stripe.webhook_secret)
    with pytest.raises(WebhookSignatureError):
        construct_webhook_event(payload, "garbage", secret=fake_stripe.webhook_secret)


def test_webhook_older_than_the_tolerance_is_refused(fake_stripe):
    _, payload, signature = _signed_event(fake_stripe, timestamp=int(time.time()) - 301)
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        construct_webhook_event(payload, signature, secret=fake_stripe.webhook_secret)
    assert construct_webhook_event(payload, signature, secret=fake_stripe.webhook_secret, tolerance_seconds=600)


def test_webhook_without_signature_or_secret_is_refused(fake_stripe):
    _, payload, signature = _signed_event(fake_stripe)
    for header in ("", None):
        with pytest.raises(WebhookSignatureError, match="Missing Stripe-Signature"):
            construct_webhook_event(payload, header, secret=fake_stripe.webhook_secret)
    with pytest.raises(WebhookSignatureError, match="secret"):
        construct_webhook_event(payload, signature, secret="")


def test_webhook_with_a_signed_body_that_is_not_an_event_is_refused(fake_stripe):
    secret = fake_stripe.webhook_secret
    for payload in (b"{not json", b"[1, 2]", json.dumps({"id": "evt_1"}).encode(), b"\xff\xfe"):
        with pytest.raises(WebhookSignatureError):
            construct_webhook_event(payload, sign_webhook_payload(payload.decode("latin-1"), secret), secret=secret)


def test_sign_webhook_payload_matches_stripes_own_signer():
    signature = sign_webhook_payload(b'{"id": "evt_1"}', "whsec_x", timestamp=1700000000)
    expected = stripe.WebhookSignature.generate_signature_header('{"id": "evt_1"}', "whsec_x", timestamp=1700000000)
    assert signature == expected


# -- configuration, sandbox, keys ----------------------------------------------------------------------------


def test_sandbox_without_api_key(settings):
    settings.STRIPE_API_KEY = ""
    assert is_sandbox() is True
    assert is_sandbox(StripeConfig(api_key="")) is True
    with pytest.raises(ValueError, match="sandbox"):
        StripeGateway(StripeConfig(api_key="  "))

    settings.STRIPE_API_KEY = "sk_test_123"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_1"
    settings.STRIPE_API_BASE = ""
    assert is_sandbox() is False
    config = StripeConfig.from_settings()
    assert (config.api_key, config.webhook_secret, config.api_base) == ("sk_test_123", "whsec_1", None)
    assert "sk_test_123" not in repr(config) and "whsec_1" not in repr(config)


def test_sandbox_when_settings_are_absent(settings):
    for name in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE"):
        if hasattr(settings, name):
            delattr(settings, name)
    assert is_sandbox() is True
    assert StripeConfig.from_settings().api_base is None


def test_idempotency_keys_are_deterministic_and_prefixable(settings):
    settings.STRIPE_IDEMPOTENCY_PREFIX = ""
    assert idempotency_key("invoice-line", 42) == "invoice-line-42"
    assert idempotency_key("invoice-line", 42) == idempotency_key("invoice-line", "42")
    assert idempotency_key("invoice-finalize", 7, 2) == "invoice-finalize-7-2"
    settings.STRIPE_IDEMPOTENCY_PREFIX = "staging"
    assert idempotency_key("invoice-line", 42) == "staging-invoice-line-42"
    for bad in ((), (None,), ("",)):
        with pytest.raises(ValueError):
            idempotency_key("invoice-line", *bad)


# -- fixtures local to this module ----------------------------------------------------------------------


@pytest.fixture
def fake_stripe_gateway_sleeps(fake_stripe):
    sleeps = Sleeps()
    return gateway_for(fake_stripe, sleep=sleeps), sleeps
