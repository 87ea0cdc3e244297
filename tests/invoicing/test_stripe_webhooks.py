"""``POST /stripe/webhooks``: signed Stripe events, stored once, each following our invoice where the lifecycle
allows it. Invoices are pushed to the fake Stripe server first, so the events carry Stripe's real snapshots."""

from __future__ import annotations

import copy
import datetime as dt
import json
import time

import pytest
from django.utils import timezone

from invoicing.models import Invoice, InvoiceEvent, StripeWebhookEvent
from invoicing.services import stripe_push, stripe_webhooks
from tests.builders import november_invoice, utc
from tests.fakes.stripe_fixtures import VOID
from tests.fakes.stripe_server import FakeStripeServer, sign_webhook_payload

URL = "/stripe/webhooks"


@pytest.fixture
def synced(db, fake) -> Invoice:
    """The November invoice, issued and pushed: open in Stripe."""
    invoice = november_invoice()
    stripe_push.push_invoice_to_stripe(invoice.pk)
    invoice.refresh_from_db()
    assert (invoice.status, invoice.sync_status, invoice.stripe_status) == ("issued", "synced", "open")
    return invoice


def post(client, payload: bytes, signature: str | None):
    extra = {"HTTP_STRIPE_SIGNATURE": signature} if signature is not None else {}
    return client.post(URL, data=payload, content_type="application/json", **extra)


def deliver(client, fake: FakeStripeServer, event: dict, **signing):
    payload, headers = fake.webhook_request(event, **signing)
    return post(client, payload, headers["Stripe-Signature"])


def last_event(fake: FakeStripeServer, event_type: str) -> dict:
    return next(e for e in reversed(fake.events) if e["type"] == event_type)


def snapshot(fake: FakeStripeServer, invoice: Invoice, **changes) -> dict:
    """Stripe's current invoice object, with changes (for events the fake does not emit itself)."""
    obj = fake.invoice(invoice.stripe_invoice_id)
    obj.update(changes)
    return obj


def state(invoice: Invoice) -> tuple:
    invoice.refresh_from_db()
    return (
        invoice.status,
        invoice.paid_at,
        invoice.voided_at,
        invoice.stripe_status,
        invoice.sync_status,
        invoice.sync_error,
    )


def stored(event: dict) -> StripeWebhookEvent:
    return StripeWebhookEvent.objects.get(event_id=event["id"])


# --------------------------------------------------------------------------------------------------
# Signatures and malformed deliveries


def test_a_good_signature_is_answered_200_and_the_event_is_stored_and_handled(client, fake, synced):
    fake.mark_paid(synced.stripe_invoice_id)  # the customer paid on Stripe's hosted page
    event = last_event(fake, "invoice.paid")
    response = deliver(client, fake, event)
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False, "outcome": "issued → paid"}
    row = stored(event)
    assert (row.type, row.invoice_id, row.outcome) == ("invoice.paid", synced.pk, "issued → paid")
    assert row.payload == event and row.processed_at is not None


def unsigned_variants(fake: FakeStripeServer, event: dict) -> dict[str, tuple[bytes, str | None]]:
    payload, headers = fake.webhook_request(event)
    now = int(time.time())
    return {
        "bad signature": (payload, fake.webhook_request(event, secret="whsec_someone_else")[1]["Stripe-Signature"]),
        "missing header": (payload, None),
        "empty header": (payload, ""),
        "expired timestamp": (payload, fake.webhook_request(event, timestamp=now - 301)[1]["Stripe-Signature"]),
        "body changed after signing": (payload.replace(b'"paid"', b'"void"'), headers["Stripe-Signature"]),
        "bad JSON": (b'{"id": "evt_1", ', sign_webhook_payload(b'{"id": "evt_1", ', fake.webhook_secret)),
        "JSON but not an event": (b"[1, 2]", sign_webhook_payload(b"[1, 2]", fake.webhook_secret)),
    }


@pytest.mark.parametrize(
    "variant",
    [
        "bad signature",
        "missing header",
        "empty header",
        "expired timestamp",
        "body changed after signing",
        "bad JSON",
        "JSON but not an event",
    ],
)
def test_a_bad_delivery_is_refused_with_400_and_nothing_is_stored(client, fake, synced, variant):
    fake.mark_paid(synced.stripe_invoice_id)
    payload, signature = unsigned_variants(fake, last_event(fake, "invoice.paid"))[variant]
    before = state(synced)

    response = post(client, payload, signature)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["title"]) == (400, "Invalid webhook") and problem["detail"]
    assert StripeWebhookEvent.objects.count() == 0
    assert state(synced) == before
    assert not synced.log.filter(actor_label="stripe").exclude(action="stripe_synced").exists()


def test_the_tolerance_is_five_minutes(client, fake, synced):
    fake.mark_paid(synced.stripe_invoice_id)
    event = last_event(fake, "invoice.paid")
    assert deliver(client, fake, event, timestamp=int(time.time()) - 240).status_code == 200


def test_without_a_webhook_secret_every_delivery_is_refused(client, fake, synced, settings):
    fake.mark_paid(synced.stripe_invoice_id)
    event = last_event(fake, "invoice.paid")
    settings.STRIPE_WEBHOOK_SECRET = ""
    response = deliver(client, fake, event)
    assert response.status_code == 400 and "STRIPE_WEBHOOK_SECRET" in response.json()["detail"]
    assert StripeWebhookEvent.objects.count() == 0 and state(synced)[0] == "issued"


def test_only_post(client, db):
    assert client.get(URL).status_code == 405


# --------------------------------------------------------------------------------------------------
# Events


def test_invoice_paid_marks_our_invoice_paid_at_stripes_time_with_a_stripe_log_entry(client, fake, synced):
    paid_at = utc(2026, 12, 3, 9, 30)
    event = fake.make_event(
        "invoice.paid",
        snapshot(
            fake,
            synced,
            status="paid",
            status_transitions={
                "finalized_at": int(synced.issued_at.timestamp()),
                "marked_uncollectible_at": None,
                "paid_at": int(paid_at.timestamp()),
                "voided_at": None,
            },
        ),
    )
    assert deliver(client, fake, event).status_code == 200
    synced.refresh_from_db()
    assert (synced.status, synced.paid_at, synced.stripe_status) == ("paid", paid_at, "paid")
    entry = synced.log.get(action="paid")
    assert entry.actor_label == "stripe" and event["id"] in entry.detail


def test_invoice_paid_without_a_paid_at_uses_the_time_of_receipt(client, fake, synced):
    obj = snapshot(fake, synced, status="paid")
    del obj["status_transitions"]
    before = timezone.now()
    assert deliver(client, fake, fake.make_event("invoice.paid", obj)).status_code == 200
    synced.refresh_from_db()
    assert synced.status == "paid" and before <= synced.paid_at <= timezone.now()


def test_a_real_payment_on_the_hosted_page(client, fake, synced):
    fake.mark_paid(synced.stripe_invoice_id)
    event = last_event(fake, "invoice.paid")
    assert deliver(client, fake, event).status_code == 200
    synced.refresh_from_db()
    paid_at = dt.datetime.fromtimestamp(event["data"]["object"]["status_transitions"]["paid_at"], tz=dt.UTC)
    assert (synced.status, synced.paid_at) == ("paid", paid_at)


def test_a_duplicate_delivery_is_answered_200_and_handled_once(client, fake, synced):
    fake.mark_paid(synced.stripe_invoice_id)
    event = last_event(fake, "invoice.paid")
    first = deliver(client, fake, event)
    second = deliver(client, fake, event)  # Stripe redelivers (it did not see our 200), freshly signed
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (second.status_code, second.json()["duplicate"]) == (200, True)
    assert second.json()["outcome"] == "issued → paid"
    assert StripeWebhookEvent.objects.filter(event_id=event["id"]).count() == 1
    assert synced.log.filter(action="paid").count() == 1
    # invoice.payment_succeeded comes with every payment too: already paid, nothing more happens.
    also = fake.make_event("invoice.payment_succeeded", event["data"]["object"])
    assert deliver(client, fake, also).json()["outcome"] == "already paid"
    assert synced.log.filter(action="paid").count() == 1


def test_a_payment_failure_arriving_after_the_payment_changes_nothing(client, fake, synced):
    """Stripe does not deliver events in order: a failed attempt can arrive after the successful one."""
    failed_attempt = fake.make_event("invoice.payment_failed", snapshot(fake, synced, attempt_count=1))
    fake.mark_paid(synced.stripe_invoice_id)
    deliver(client, fake, last_event(fake, "invoice.paid"))
    before = state(synced)
    assert before[0] == "paid" and before[3] == "paid"

    response = deliver(client, fake, failed_attempt)
    assert response.status_code == 200
    assert state(synced) == before
    assert stored(failed_attempt).outcome == "payment failure recorded; status unchanged"


def test_a_payment_failure_on_an_open_invoice_is_logged_and_changes_nothing(client, fake, synced):
    before = state(synced)
    event = fake.make_event("invoice.payment_failed", snapshot(fake, synced, attempt_count=1))
    assert deliver(client, fake, event).status_code == 200
    assert state(synced) == before
    assert synced.log.get(action="payment_failed").actor_label == "stripe"


def test_marked_uncollectible_in_stripe_makes_an_issued_invoice_uncollectible(client, fake, synced):
    status, _, body = fake.raw_request("POST", f"/v1/invoices/{synced.stripe_invoice_id}/mark_uncollectible")
    assert (status, body["status"]) == (200, "uncollectible")
    event = last_event(fake, "invoice.marked_uncollectible")
    assert deliver(client, fake, event).json()["outcome"] == "issued → uncollectible"
    synced.refresh_from_db()
    assert (synced.status, synced.stripe_status) == ("uncollectible", "uncollectible")
    assert synced.log.get(action="uncollectible").actor_label == "stripe"
    # Paid later (e.g. by bank transfer, recorded in Stripe): uncollectible → paid is legal.
    fake.mark_paid(synced.stripe_invoice_id)
    deliver(client, fake, last_event(fake, "invoice.paid"))
    synced.refresh_from_db()
    assert synced.status == "paid"


def test_voided_in_stripe_voids_ours_without_voiding_it_in_stripe_again(
    client, fake, synced, django_capture_on_commit_callbacks
):
    status, _, _ = fake.raw_request(
        "POST", f"/v1/invoices/{synced.stripe_invoice_id}/void", idempotency_key="dashboard-void-1"
    )
    assert status == 200
    event = last_event(fake, "invoice.voided")
    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, fake, event)
    assert response.json()["outcome"] == "issued → void"
    synced.refresh_from_db()
    assert (synced.status, synced.stripe_status) == ("void", "void") and synced.voided_at is not None
    assert synced.log.get(action="voided").actor_label == "stripe"
    assert len(fake.requests_to("POST", VOID)) == 1  # only the dashboard's
    assert synced.sync_status == "synced"


def test_finalization_failed_marks_the_sync_failed_with_stripes_message(client, fake, synced):
    message = "The customer's tax location is invalid."
    event = fake.make_event(
        "invoice.finalization_failed",
        snapshot(
            fake, synced, status="draft", last_finalization_error={"message": message, "type": "invalid_request_error"}
        ),
    )
    assert deliver(client, fake, event).json()["outcome"] == "sync marked failed"
    synced.refresh_from_db()
    assert synced.status == "issued"
    assert synced.sync_status == "failed" and message in synced.sync_error
    assert synced.log.get(action="stripe_failed").actor_label == "stripe"


def test_an_illegal_transition_is_ignored_and_recorded(client, fake, synced):
    fake.raw_request("POST", f"/v1/invoices/{synced.stripe_invoice_id}/void", idempotency_key="dashboard-void-2")
    deliver(client, fake, last_event(fake, "invoice.voided"))
    before = state(synced)
    assert before[0] == "void"
    late = fake.make_event("invoice.marked_uncollectible", snapshot(fake, synced, status="uncollectible"))

    response = deliver(client, fake, late)
    assert response.status_code == 200
    outcome = response.json()["outcome"]
    assert outcome.startswith("ignored: void → uncollectible")
    assert stored(late).outcome == outcome and stored(late).invoice_id == synced.pk
    assert state(synced) == before
    assert synced.log.get(action="stripe_event_ignored").actor_label == "stripe"


def test_an_unknown_event_type_is_stored_and_answered_200(client, fake, synced):
    event = last_event(fake, "customer.created")
    response = deliver(client, fake, event)
    assert response.status_code == 200 and response.json()["duplicate"] is False
    row = stored(event)
    assert (row.type, row.invoice_id, row.outcome) == ("customer.created", None, "stored; type not handled")
    other = fake.make_event("invoice.upcoming", snapshot(fake, synced))
    assert deliver(client, fake, other).status_code == 200
    assert stored(other).outcome == "stored; type not handled" and state(synced)[0] == "issued"


def test_an_event_for_an_invoice_we_do_not_know_is_stored_and_answered_200(client, fake, synced):
    stranger = copy.deepcopy(fake.invoice(synced.stripe_invoice_id))
    stranger.update(id="in_1NotOursAtAll", metadata={}, status="paid")
    event = fake.make_event("invoice.paid", stranger)
    before = state(synced)
    response = deliver(client, fake, event)
    assert response.status_code == 200 and response.json()["outcome"] == "no matching invoice"
    assert stored(event).invoice_id is None
    assert state(synced) == before


def test_an_event_for_another_installations_invoice_does_not_touch_ours(client, fake, synced):
    """Two installations sharing one Stripe account (what STRIPE_IDEMPOTENCY_PREFIX is for) both receive every
    event of the account; the other's invoice carries its own database id in metadata."""
    theirs = copy.deepcopy(fake.invoice(synced.stripe_invoice_id))
    theirs.update(
        id="in_1TheirsNotOurs",
        status="paid",
        metadata={"invoice_id": str(synced.pk), "invoice_number": "STAGING-2026-000001"},
    )
    event = fake.make_event("invoice.paid", theirs)
    before = state(synced)
    response = deliver(client, fake, event)
    assert response.status_code == 200
    assert response.json()["outcome"] == "no matching invoice"
    assert state(synced) == before


def test_an_event_whose_handling_crashed_is_handled_when_stripe_redelivers_it(client, fake, synced, monkeypatch):
    fake.mark_paid(synced.stripe_invoice_id)
    event = last_event(fake, "invoice.paid")
    original = stripe_webhooks.invoice_mark_paid
    calls = []

    def crash_once(**kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("database went away")
        return original(**kwargs)

    monkeypatch.setattr(stripe_webhooks, "invoice_mark_paid", crash_once)
    client.raise_request_exception = False
    assert deliver(client, fake, event).status_code == 500  # Stripe will redeliver

    response = deliver(client, fake, event)
    assert response.status_code == 200
    synced.refresh_from_db()
    assert synced.status == "paid", "the event was stored before it was handled, then skipped as a duplicate"
    assert StripeWebhookEvent.objects.filter(event_id=event["id"]).count() == 1
    assert InvoiceEvent.objects.filter(invoice=synced, action="paid").count() == 1


def test_the_payload_is_stored_as_received(client, fake, synced):
    fake.mark_paid(synced.stripe_invoice_id)
    event = last_event(fake, "invoice.paid")
    payload, headers = fake.webhook_request(event)
    post(client, payload, headers["Stripe-Signature"])
    assert stored(event).payload == json.loads(payload)
