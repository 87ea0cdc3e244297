"""Pushing credit notes to Stripe and voiding them there (invoicing.services.stripe_push, the credit-note part),
through the real stripe-python client, against the fake Stripe server: the push of a cancellation's credit note,
its effect on the Stripe invoice, paid invoices (credit to the customer's balance), lost answers, waiting for the
invoice's own push, permanent errors and "Retry Stripe sync", voids (also cascading from an invoice void), the task's
retries, and the beat job that requeues stuck pushes."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from customers.services.subscriptions import subscription_cancel, subscription_create
from invoicing import tasks
from invoicing.models import CreditNote, Invoice, InvoiceEvent
from invoicing.services import stripe_push
from invoicing.services.close import close_cycles
from invoicing.services.credit_notes import credit_note_create, credit_note_void
from invoicing.services.lifecycle import invoice_void
from invoicing.stripe_gateway import StripeRetryableError
from invoicing.tasks import PUSH_RETRIES
from tests.builders import kong_air, platform_fee, token_plan, utc
from tests.fakes.stripe_fixtures import gateway_for, run_as_worker
from tests.fakes.stripe_server import FakeStripeServer

pytestmark = pytest.mark.slow  # the fake Stripe server, timeouts held for real
ATTEMPTS = 4  # StripeConfig.max_attempts: in-process attempts before the gateway gives up
CLIENT_TIMEOUT = 0.2  # seconds; the fake holds a "timed out" answer longer than this
CREDIT_NOTES = r"^/v1/credit_notes$"
VOID_CREDIT_NOTE = r"^/v1/credit_notes/[^/]+/void$"
VOID_INVOICE = r"^/v1/invoices/[^/]+/void$"
CANCEL_AT = utc(2026, 11, 11)
UNUSED_FEE = "Unused Platform fee (Nov 11 – Dec 1)"
CREDIT = 2067  # 31.00 × 20/30 of November unused


# --------------------------------------------------------------------------------------------------
# Setup


def subscribe():
    """Kong Air on a plan with a 31.00 monthly platform fee in advance, from Oct 16 (anchor Oct 1)."""
    customer = kong_air(email="billing@kong-air.example", collection_method="send_invoice", days_until_due=30)
    return subscription_create(customer=customer, plan=token_plan(extra=[platform_fee("31.00")]),
                               start=utc(2026, 10, 16), billing_anchor=utc(2026, 10, 1))


def november_fee_invoice() -> Invoice:
    """Cycle 0 (Oct 16 – Nov 1, prorated) and cycle 1 (November's fee in advance, 31.00) are issued. In a plain
    ``db`` test the pushes queued on commit never run: the tests call them."""
    subscription = subscribe()
    close_cycles(now=utc(2026, 10, 16, 0, 1))
    close_cycles(now=utc(2026, 11, 1, 2))
    invoice = Invoice.objects.get(subscription=subscription, cycle=1)
    assert (invoice.total, invoice.sync_status) == (3100, "syncing")
    return invoice


def cancel_with_credit_note(invoice: Invoice) -> CreditNote:
    """Cancel on Nov 11: the final cycle owes more credit than it bills, so a credit note against November's
    invoice (see test_close.py::test_in_advance_fee_prorated_for_a_mid_period_start_and_a_cancellation)."""
    assert invoice.subscription is not None
    subscription_cancel(subscription=invoice.subscription, when="now", now=CANCEL_AT)
    close_cycles(now=CANCEL_AT + dt.timedelta(hours=2))
    note = CreditNote.objects.get()
    assert (note.invoice_id, note.total, note.status) == (invoice.pk, CREDIT, "issued")
    return note


def pushed_invoice() -> Invoice:
    invoice = november_fee_invoice()
    for pk in Invoice.objects.order_by("pk").values_list("pk", flat=True):
        assert stripe_push.push_invoice_to_stripe(pk).sync_status == "synced"
    invoice.refresh_from_db()
    return invoice


def keys(fake: FakeStripeServer, path: str, method: str = "POST") -> list[str | None]:
    return [r.idempotency_key for r in fake.requests_to(method, path)]


def log_of(note: CreditNote) -> list[tuple[str, str]]:
    return list(InvoiceEvent.objects.filter(credit_note=note).order_by("id").values_list("action", "actor_label"))


def short_timeout(fake: FakeStripeServer) -> None:
    fake.client_timeout = CLIENT_TIMEOUT


def lose_answers(fake: FakeStripeServer, path: str = CREDIT_NOTES) -> None:
    """Stripe executes the create, but none of the gateway's attempts hears back."""
    fake.timeout_next(path, seconds=CLIENT_TIMEOUT * 3, times=ATTEMPTS, method="POST")


# --------------------------------------------------------------------------------------------------
# The push


@pytest.mark.django_db(transaction=True)
def test_a_cancellation_credit_note_is_pushed_with_its_lines_amount_metadata_and_key(fake):
    """End to end, as in production: every push runs (eagerly) once the transaction that queued it commits."""
    subscription = subscribe()
    close_cycles(now=utc(2026, 10, 16, 0, 1))
    close_cycles(now=utc(2026, 11, 1, 2))
    invoice = Invoice.objects.get(subscription=subscription, cycle=1)
    assert invoice.sync_status == "synced"
    assert fake.invoice(invoice.stripe_invoice_id)["amount_due"] == 3100

    subscription_cancel(subscription=subscription, when="now", now=CANCEL_AT)
    close_cycles(now=CANCEL_AT + dt.timedelta(hours=2))

    note = CreditNote.objects.get()
    assert (note.invoice_id, note.total, note.sync_status, note.sync_error) == (invoice.pk, CREDIT, "synced", "")
    assert note.sync_attempts == 1
    stripe_note = fake.credit_notes[note.stripe_credit_note_id]
    assert note.stripe_status == stripe_note["status"] == "issued"
    assert stripe_note["invoice"] == invoice.stripe_invoice_id
    assert stripe_note["number"] == f"{invoice.stripe_number}-CN-01"
    assert [(line["type"], line["description"], line["quantity"], line["unit_amount"], line["amount"])
            for line in stripe_note["lines"]] == [("custom_line_item", UNUSED_FEE, 1, CREDIT, CREDIT)]
    assert stripe_note["total"] == CREDIT and stripe_note["currency"] == "usd"
    assert stripe_note["metadata"] == {"credit_note_id": str(note.pk), "credit_note_number": note.number,
                                       "invoice_id": str(invoice.pk), "invoice_number": invoice.number}
    assert stripe_note["memo"] == f"{note.number}: {UNUSED_FEE}"
    assert stripe_note["reason"] == "order_change"
    assert (stripe_note["pre_payment_amount"], stripe_note["post_payment_amount"]) == (CREDIT, 0)
    (create,) = fake.requests_to("POST", CREDIT_NOTES)
    assert create.idempotency_key == f"credit-note-{note.pk}"
    assert create.params["email_type"] == "none"
    assert "credit_amount" not in create.params  # an open invoice: the credit lowers what is due

    # Stripe's invoice now asks for less; our invoice is unchanged (issued invoices never change).
    stripe_invoice = fake.invoice(invoice.stripe_invoice_id)
    assert (stripe_invoice["status"], stripe_invoice["total"]) == ("open", 3100)
    assert (stripe_invoice["amount_due"], stripe_invoice["amount_remaining"]) == (3100 - CREDIT, 3100 - CREDIT)
    assert stripe_invoice["pre_payment_credit_notes_amount"] == CREDIT
    invoice.refresh_from_db()
    assert invoice.total == 3100
    entry = InvoiceEvent.objects.get(credit_note=note, action="stripe_synced")
    assert (entry.invoice_id, entry.actor_label) == (invoice.pk, "stripe")
    assert entry.detail == f"{note.stripe_credit_note_id} {stripe_note['number']} on {invoice.stripe_invoice_id}"


def test_a_pushed_credit_note_is_not_pushed_again(db, fake):
    note = cancel_with_credit_note(pushed_invoice())
    stripe_push.push_credit_note_to_stripe(note.pk)
    requests = len(fake.requests)

    again = stripe_push.push_credit_note_to_stripe(note.pk)

    assert again.sync_status == "synced" and len(fake.requests) == requests
    assert len(fake.credit_notes) == 1


def test_a_credit_note_on_a_paid_stripe_invoice_goes_to_the_customers_stripe_balance(db, fake):
    invoice = pushed_invoice()
    fake.mark_paid(invoice.stripe_invoice_id)  # paid on the hosted page (our invoice follows by webhook)
    note = cancel_with_credit_note(invoice)

    note = stripe_push.push_credit_note_to_stripe(note.pk)

    assert note.sync_status == "synced", note.sync_error
    stripe_note = fake.credit_notes[note.stripe_credit_note_id]
    assert (stripe_note["pre_payment_amount"], stripe_note["post_payment_amount"]) == (0, CREDIT)
    assert fake.requests_to("POST", CREDIT_NOTES)[-1].params["credit_amount"] == str(CREDIT)
    customer = fake.customers[invoice.customer.stripe_customer_id]
    assert customer["balance"] == -CREDIT  # Stripe applies it to the customer's next invoice
    stripe_invoice = fake.invoice(invoice.stripe_invoice_id)
    assert (stripe_invoice["status"], stripe_invoice["amount_paid"]) == ("paid", 3100)
    assert stripe_invoice["post_payment_credit_notes_amount"] == CREDIT
    detail = InvoiceEvent.objects.get(credit_note=note, action="stripe_synced").detail
    assert detail.endswith(f"({CREDIT} to the customer's Stripe balance)")


def test_a_credit_note_larger_than_what_the_stripe_invoice_still_owes_puts_the_rest_on_the_balance(db, fake):
    """An earlier credit (the customer's Stripe balance) paid part of the invoice at finalization: Stripe lowers
    what is still owed first, the rest must go somewhere."""
    invoice = november_fee_invoice()
    customer = invoice.customer
    for pk in Invoice.objects.order_by("pk").values_list("pk", flat=True):
        if pk == invoice.pk:  # a credit of 20.00 from elsewhere waits on the customer's balance
            customer.refresh_from_db()
            fake.customers[customer.stripe_customer_id]["balance"] = -2000
        stripe_push.push_invoice_to_stripe(pk)
    invoice.refresh_from_db()
    assert fake.invoice(invoice.stripe_invoice_id)["amount_remaining"] == 1100
    note = cancel_with_credit_note(invoice)

    note = stripe_push.push_credit_note_to_stripe(note.pk)

    assert note.sync_status == "synced", note.sync_error
    stripe_note = fake.credit_notes[note.stripe_credit_note_id]
    assert (stripe_note["pre_payment_amount"], stripe_note["post_payment_amount"]) == (1100, CREDIT - 1100)
    assert fake.requests_to("POST", CREDIT_NOTES)[-1].params["credit_amount"] == str(CREDIT - 1100)
    assert fake.invoice(invoice.stripe_invoice_id)["status"] == "paid"  # nothing left to pay


def test_a_manual_correction_is_pushed_without_a_stripe_reason(db, fake):
    invoice = pushed_invoice()
    note = credit_note_create(invoice=invoice, amount=500, reason="goodwill", description="Outage on Nov 3")

    note = stripe_push.push_credit_note_to_stripe(note.pk)

    stripe_note = fake.credit_notes[note.stripe_credit_note_id]
    assert [(line["description"], line["amount"]) for line in stripe_note["lines"]] == [("Outage on Nov 3", 500)]
    assert stripe_note["reason"] is None and stripe_note["memo"] == f"{note.number}: goodwill"


# --------------------------------------------------------------------------------------------------
# Lost answers, waiting for the invoice, permanent errors


def test_a_lost_answer_is_found_by_its_metadata_not_created_twice(db, fake, settings):
    """Stripe created the credit note but no answer arrived; the retry comes after Stripe forgot the key (a new
    key prefix stands in for the expiry): the push finds it by our id in its metadata."""
    note = cancel_with_credit_note(pushed_invoice())
    short_timeout(fake)
    lose_answers(fake)

    with pytest.raises(StripeRetryableError):
        stripe_push.push_credit_note_to_stripe(note.pk)
    note.refresh_from_db()
    assert (note.sync_status, note.stripe_credit_note_id) == ("syncing", "")
    assert note.sync_error.startswith("retrying: ")
    (in_stripe,) = fake.credit_notes
    settings.STRIPE_IDEMPOTENCY_PREFIX = "days-later"

    note = stripe_push.push_credit_note_to_stripe(note.pk)

    assert (note.sync_status, note.stripe_credit_note_id, note.sync_attempts) == ("synced", in_stripe, 2)
    assert list(fake.credit_notes) == [in_stripe]
    assert set(keys(fake, CREDIT_NOTES)) == {f"credit-note-{note.pk}"}  # no create with the new key
    assert fake.invoice(note.invoice.stripe_invoice_id)["amount_due"] == 3100 - CREDIT  # credited once


def test_a_timeout_within_the_gateways_attempts_is_replayed_with_the_same_key(db, fake):
    note = cancel_with_credit_note(pushed_invoice())
    short_timeout(fake)
    fake.timeout_next(CREDIT_NOTES, seconds=CLIENT_TIMEOUT * 3, method="POST")

    note = stripe_push.push_credit_note_to_stripe(note.pk)

    assert note.sync_status == "synced" and len(fake.credit_notes) == 1
    assert [r.replayed for r in fake.requests_to("POST", CREDIT_NOTES)] == [False, True]


def test_the_push_waits_until_the_invoice_is_finalized_in_stripe(db, fake):
    invoice = november_fee_invoice()  # its push has not run yet
    note = cancel_with_credit_note(invoice)

    with pytest.raises(StripeRetryableError, match=f"invoice {invoice.number} is not finalized in Stripe yet"):
        stripe_push.push_credit_note_to_stripe(note.pk)
    note.refresh_from_db()
    assert (note.sync_status, note.sync_attempts) == ("syncing", 1)
    assert note.sync_error == f"retrying: invoice {invoice.number} is not finalized in Stripe yet (its sync is Syncing)"
    assert fake.requests == []

    countdown = run_as_worker(tasks.push_credit_note, note.pk)
    assert countdown is not None
    assert 0 <= countdown <= 30  # the task retries later, with backoff
    for pk in Invoice.objects.order_by("pk").values_list("pk", flat=True):
        stripe_push.push_invoice_to_stripe(pk)  # meanwhile the invoice's own push finishes
    assert run_as_worker(tasks.push_credit_note, note.pk, retries=1) is None
    note.refresh_from_db()
    assert note.sync_status == "synced" and len(fake.credit_notes) == 1


def test_an_invoice_whose_stripe_sync_failed_fails_its_credit_note_saying_so(db, fake):
    invoice = november_fee_invoice()
    Invoice.objects.filter(pk=invoice.pk).update(sync_status="failed",
                                                 sync_error="Stripe refused: No such customer: 'cus_x'")
    note = cancel_with_credit_note(invoice)

    note = stripe_push.push_credit_note_to_stripe(note.pk)

    assert note.sync_status == "failed"
    assert note.sync_error == (f"the Stripe sync of invoice {invoice.number} failed (Stripe refused: No such customer: "
                               "'cus_x'); retry the invoice's sync first, then this credit note's")
    assert ("stripe_failed", "stripe") in log_of(note)
    assert fake.requests == []


def test_a_permanent_error_marks_the_sync_failed_with_stripes_message_and_retry_finishes_it(
    db, fake, django_capture_on_commit_callbacks
):
    invoice = pushed_invoice()
    note = cancel_with_credit_note(invoice)
    fake.fail_next(CREDIT_NOTES, 400, method="POST", message="Invalid memo: too long")

    note = stripe_push.push_credit_note_to_stripe(note.pk)

    assert note.sync_status == "failed"
    assert note.sync_error.startswith("Stripe refused: Invalid memo: too long")
    assert len(fake.requests_to("POST", CREDIT_NOTES)) == 1  # a 4xx is not retried
    assert fake.credit_notes == {}
    failed = InvoiceEvent.objects.get(credit_note=note, action="stripe_failed")
    assert failed.invoice_id == invoice.pk and "Invalid memo: too long" in failed.detail

    with django_capture_on_commit_callbacks(execute=True):
        note = stripe_push.retry_credit_note_sync(credit_note=note)
    note.refresh_from_db()
    assert (note.sync_status, note.sync_error, note.sync_attempts) == ("synced", "", 1)
    assert len(fake.credit_notes) == 1
    assert ("stripe_retry", "system") in log_of(note)


def test_stripes_own_refusal_is_kept(db, fake):
    """Someone voided the invoice in Stripe's dashboard: Stripe refuses the credit note, in its own words."""
    invoice = pushed_invoice()
    gateway_for(fake).void_invoice(stripe_invoice_id=invoice.stripe_invoice_id, idempotency_key="dashboard-void")
    note = cancel_with_credit_note(invoice)

    note = stripe_push.push_credit_note_to_stripe(note.pk)

    assert note.sync_status == "failed"
    assert note.sync_error.startswith(
        "Stripe refused: You can only create a credit note for an open, paid or uncollectible invoice; invoice "
        f"{invoice.stripe_invoice_id} is void.")


def test_retry_is_refused_in_sandbox_and_for_a_void_credit_note_that_never_reached_stripe(db, fake, settings):
    note = cancel_with_credit_note(november_fee_invoice())
    credit_note_void(credit_note=note, reason="test")
    with pytest.raises(ValueError, match="voided before it reached Stripe"):
        stripe_push.retry_credit_note_sync(credit_note=note)
    settings.STRIPE_API_KEY = ""
    with pytest.raises(ValueError, match="sandbox"):
        stripe_push.retry_credit_note_sync(credit_note=note)


def test_sandbox_mode_keeps_credit_notes_local(db, fake_stripe, settings, django_capture_on_commit_callbacks):
    settings.STRIPE_API_KEY = ""
    settings.STRIPE_API_BASE = fake_stripe.url  # would be reached if anything tried
    settings.INVOICE_ISSUE_ZERO_TOTAL = False
    subscription = subscribe()
    with django_capture_on_commit_callbacks(execute=True):
        close_cycles(now=utc(2026, 11, 1, 2))
        subscription_cancel(subscription=subscription, when="now", now=CANCEL_AT)
        close_cycles(now=CANCEL_AT + dt.timedelta(hours=2))
    note = CreditNote.objects.get()
    assert note.sync_status == "sandbox"
    assert stripe_push.push_credit_note_to_stripe(note.pk).sync_status == "sandbox"
    assert fake_stripe.requests == []


# --------------------------------------------------------------------------------------------------
# Voiding


def test_voiding_our_invoice_voids_its_credit_notes_in_stripe_then_the_invoice(
    db, fake, django_capture_on_commit_callbacks
):
    invoice = pushed_invoice()
    note = stripe_push.push_credit_note_to_stripe(cancel_with_credit_note(invoice).pk)

    with django_capture_on_commit_callbacks(execute=True):
        invoice_void(invoice=invoice, reason="wrong customer")

    note.refresh_from_db()
    assert (note.status, note.stripe_status, note.sync_status) == ("void", "void", "synced")
    assert fake.credit_notes[note.stripe_credit_note_id]["status"] == "void"
    assert keys(fake, VOID_CREDIT_NOTE) == [f"credit-note-void-{note.pk}"]
    # Stripe voids a credit note only on an open invoice: the credit note goes first, then the invoice.
    voids = [r.path for r in fake.requests if r.method == "POST" and r.path.endswith("/void")]
    assert voids == [f"/v1/credit_notes/{note.stripe_credit_note_id}/void",
                     f"/v1/invoices/{invoice.stripe_invoice_id}/void"]
    invoice.refresh_from_db()
    assert (invoice.status, invoice.stripe_status) == ("void", "void")
    assert fake.invoice(invoice.stripe_invoice_id)["status"] == "void"
    assert log_of(note)[-2:] == [("credit_note_voided", "system"), ("stripe_voided", "stripe")]


def test_voiding_in_stripe_is_idempotent(db, fake):
    note = stripe_push.push_credit_note_to_stripe(cancel_with_credit_note(pushed_invoice()).pk)
    credit_note_void(credit_note=note, reason="duplicate")  # its task is queued on commit, which never comes here

    stripe_push.void_credit_note_in_stripe(note.pk)
    stripe_push.void_credit_note_in_stripe(note.pk)  # a task run twice
    stripe_push.push_credit_note_to_stripe(note.pk)  # or a late push

    note.refresh_from_db()
    assert (note.stripe_status, note.sync_status) == ("void", "synced")
    assert len(fake.requests_to("POST", VOID_CREDIT_NOTE)) == 1
    assert fake.invoice(note.invoice.stripe_invoice_id)["amount_due"] == 3100  # the credit is reversed once


def test_a_void_stripe_refuses_marks_the_sync_failed_with_its_message(db, fake):
    """Stripe voids a credit note only while its invoice is open; a paid one keeps it (a person must decide)."""
    invoice = pushed_invoice()
    note = stripe_push.push_credit_note_to_stripe(cancel_with_credit_note(invoice).pk)
    fake.mark_paid(invoice.stripe_invoice_id)
    credit_note_void(credit_note=note, reason="issued by mistake")

    note = stripe_push.void_credit_note_in_stripe(note.pk)

    assert note.sync_status == "failed"
    assert note.sync_error.startswith(
        "voiding in Stripe failed: You can only void a credit note on an open invoice; invoice "
        f"{invoice.stripe_invoice_id} is paid.")
    assert (note.stripe_status, fake.credit_notes[note.stripe_credit_note_id]["status"]) == ("issued", "issued")


def test_a_credit_note_voided_before_its_push_never_reaches_stripe(db, fake):
    note = cancel_with_credit_note(pushed_invoice())
    credit_note_void(credit_note=note, reason="wrong amount")

    note = stripe_push.push_credit_note_to_stripe(note.pk)

    assert (note.sync_status, note.stripe_credit_note_id) == ("not_synced", "")
    assert not fake.requests_to("POST", CREDIT_NOTES) and not fake.requests_to("GET", CREDIT_NOTES)
    assert ("stripe_skipped", "stripe") in log_of(note)


def test_a_credit_note_voided_after_a_lost_answer_is_found_and_voided_in_stripe(db, fake):
    """The create went through but its answer was lost; finance voids the credit note before the task's retry.
    The void had no Stripe id to void; the retry finds the credit note in Stripe and voids it there."""
    note = cancel_with_credit_note(pushed_invoice())
    short_timeout(fake)
    lose_answers(fake)
    with pytest.raises(StripeRetryableError):
        stripe_push.push_credit_note_to_stripe(note.pk)
    credit_note_void(credit_note=note, reason="wrong amount")

    note = stripe_push.push_credit_note_to_stripe(note.pk)  # the task's retry

    (stripe_id,) = fake.credit_notes
    assert (note.stripe_credit_note_id, note.stripe_status, note.sync_status) == (stripe_id, "void", "synced")
    assert fake.credit_notes[stripe_id]["status"] == "void"
    assert fake.invoice(note.invoice.stripe_invoice_id)["amount_due"] == 3100


def test_a_credit_note_voided_while_its_push_was_under_way_is_voided_in_stripe(db, fake, monkeypatch):
    note = cancel_with_credit_note(pushed_invoice())
    create = stripe_push.StripeGateway.create_credit_note

    def create_then_void_here(self, **kwargs):
        created = create(self, **kwargs)
        credit_note_void(credit_note=note, reason="meanwhile, in the admin")  # no Stripe id yet: no void queued
        return created

    monkeypatch.setattr(stripe_push.StripeGateway, "create_credit_note", create_then_void_here)

    note = stripe_push.push_credit_note_to_stripe(note.pk)

    assert (note.status, note.stripe_status, note.sync_status) == ("void", "void", "synced")
    assert fake.credit_notes[note.stripe_credit_note_id]["status"] == "void"


# --------------------------------------------------------------------------------------------------
# The tasks


def test_the_task_retries_with_backoff_then_gives_up_and_marks_the_sync_failed(db, fake):
    note = cancel_with_credit_note(pushed_invoice())
    fake.fail_next(CREDIT_NOTES, 503, times=10_000, method="POST")

    countdowns = [run_as_worker(tasks.push_credit_note, note.pk, retries=n) for n in range(PUSH_RETRIES + 1)]

    assert countdowns[-1] is None  # the last attempt gives up instead of asking for another retry
    assert all(countdown is not None and 0 <= countdown <= min(3600, 30 * 2**n)
               for n, countdown in enumerate(countdowns[:-1]))
    assert len(fake.requests_to("POST", CREDIT_NOTES)) == ATTEMPTS * (PUSH_RETRIES + 1)
    assert set(keys(fake, CREDIT_NOTES)) == {f"credit-note-{note.pk}"}
    note.refresh_from_db()
    assert (note.sync_status, note.sync_attempts) == ("failed", PUSH_RETRIES + 1)
    assert note.sync_error.startswith("gave up after retries: An unknown error occurred")
    assert ("stripe_failed", "stripe") in log_of(note)
    assert fake.credit_notes == {}


def test_the_task_gives_up_waiting_for_an_invoice_that_never_reaches_stripe(db, fake):
    note = cancel_with_credit_note(november_fee_invoice())
    for n in range(PUSH_RETRIES + 1):
        run_as_worker(tasks.push_credit_note, note.pk, retries=n)
    note.refresh_from_db()
    assert note.sync_status == "failed"
    waiting = f"invoice {note.invoice.number} is not finalized in Stripe yet"
    assert note.sync_error.startswith(f"gave up after retries: {waiting}")


def test_the_void_task_retries_then_voids(db, fake):
    note = stripe_push.push_credit_note_to_stripe(cancel_with_credit_note(pushed_invoice()).pk)
    credit_note_void(credit_note=note, reason="duplicate")
    fake.fail_next(VOID_CREDIT_NOTE, 500, times=ATTEMPTS, method="POST")

    assert run_as_worker(tasks.void_credit_note_in_stripe_task, note.pk) is not None
    assert run_as_worker(tasks.void_credit_note_in_stripe_task, note.pk, retries=1) is None

    note.refresh_from_db()
    assert (note.stripe_status, note.sync_status) == ("void", "synced")
    assert set(keys(fake, VOID_CREDIT_NOTE)) == {f"credit-note-void-{note.pk}"}


def test_credit_notes_stuck_in_syncing_are_pushed_again(db, fake, monkeypatch):
    pushed: list[tuple[str, int]] = []
    monkeypatch.setattr(tasks.push_invoice, "delay", lambda pk: pushed.append(("invoice", pk)))
    monkeypatch.setattr(tasks.push_credit_note, "delay", lambda pk: pushed.append(("credit note", pk)))
    invoice = pushed_invoice()
    note = cancel_with_credit_note(invoice)
    assert note.sync_status == "syncing"
    CreditNote.objects.filter(pk=note.pk).update(issued_at=timezone.now())

    assert tasks.requeue_stuck_syncs() == 0  # just issued: its push is on its way
    CreditNote.objects.filter(pk=note.pk).update(issued_at=timezone.now() - dt.timedelta(hours=4))
    assert tasks.requeue_stuck_syncs() == 1 and pushed == [("credit note", note.pk)]
    CreditNote.objects.filter(pk=note.pk).update(sync_status="synced")
    assert tasks.requeue_stuck_syncs() == 0


def test_a_void_whose_answer_was_lost_after_the_key_expired_is_taken_from_stripe(db, fake, settings):
    note = stripe_push.push_credit_note_to_stripe(cancel_with_credit_note(pushed_invoice()).pk)
    credit_note_void(credit_note=note, reason="duplicate")
    short_timeout(fake)
    lose_answers(fake, VOID_CREDIT_NOTE)
    with pytest.raises(StripeRetryableError):
        stripe_push.void_credit_note_in_stripe(note.pk)
    assert fake.credit_notes[note.stripe_credit_note_id]["status"] == "void"  # Stripe did it
    settings.STRIPE_IDEMPOTENCY_PREFIX = "days-later"  # Stripe has forgotten the key: a new void is "already void"

    note = stripe_push.void_credit_note_in_stripe(note.pk)

    assert (note.stripe_status, note.sync_status, note.sync_error) == ("void", "synced", "")
