"""The delivery invariant over random histories of events, receiver failures, timeouts and worker crashes.

Stated: after any history, once the receivers answer again and beat has run long enough,

1. every event reaches every endpoint that wants it, signed (verified with ``standardwebhooks``);
2. exactly once — the only repeats are of attempts whose worker was killed after the receiver got the request and
   before the answer was recorded, and they carry the same ``webhook-id`` (so a receiver dedupes them): at most
   one repeat per such crash;
3. per customer, the first arrival of each event is in order of occurrence;
4. every delivery ends *delivered* (no attempt budget is exhausted here).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json

import pytest
from django.db import transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from notifications import transport
from notifications.models import Delivery, OutboxEvent
from notifications.services.deliveries import delivery_drain
from notifications.services.endpoints import endpoint_create
from notifications.services.outbox import event_record, outbox_dispatch, pending_queues
from tests.builders import customer

pytestmark = pytest.mark.django_db
START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


class Killed(BaseException):
    """The worker process dies (not an Exception: nothing in the code under test may catch it)."""


class Receivers:
    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.modes: list[str] = []
        self.received: dict[str, list[str]] = {url: [] for url in secrets}
        self.crashes_after_send = 0

    def post(self, url: str, headers: dict[str, str], body: str, timeout: float) -> transport.Response:
        mode = self.modes.pop(0) if self.modes else "ok"
        if mode == "crash_before":
            raise Killed
        if mode == "fail":
            return transport.Response(500, "oops", "", 1)
        if mode == "timeout":
            return transport.Response(None, "", "No answer within 10 s.", 10_000)
        now = dt.datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=dt.UTC)
        wh = Webhook(self.secrets[url])
        expected = wh.sign(msg_id=headers["webhook-id"], timestamp=now, data=body)
        assert expected in headers["webhook-signature"].split(" ")
        assert json.loads(body)["type"]
        self.received[url].append(headers["webhook-id"])
        if mode == "crash_after":
            self.crashes_after_send += 1
            raise Killed
        return transport.Response(204, "", "", 1)


def beat(now: dt.datetime) -> None:
    outbox_dispatch()
    for endpoint_id, recipient, customer_key in pending_queues(now=now):
        with contextlib.suppress(Killed):  # the worker died: its lease runs out, a later beat sends again
            delivery_drain(endpoint_id=endpoint_id, recipient=recipient, customer_key=customer_key, now=now)


STEPS = st.lists(st.one_of(
    st.tuples(st.just("event"), st.sampled_from(["acme", "globex"])),
    st.tuples(st.sampled_from(["fail", "timeout", "crash_before", "crash_after"]), st.integers(1, 3)),
    st.tuples(st.just("dispatch"), st.just(0)),
    st.tuples(st.just("tick"), st.integers(0, 90)),
), max_size=30)


@pytest.fixture
def world(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_RETRY_BACKOFF_SECONDS = 5
    settings.WEBHOOK_RETRY_BACKOFF_MAX_SECONDS = 60
    settings.WEBHOOK_MAX_ATTEMPTS = 10_000
    customers = {key: customer(key) for key in ("acme", "globex")}
    everything = endpoint_create(url="https://127.0.0.1/all")
    invoices_only = endpoint_create(url="https://127.0.0.1/credits", event_types=["credits.low"])
    return customers, {everything.endpoint.url: everything.secret, invoices_only.endpoint.url: invoices_only.secret}


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
def test_every_event_reaches_every_endpoint_once_in_order_per_customer(world, monkeypatch, steps):
    customers, secrets = world
    OutboxEvent.objects.all().delete()
    receivers = Receivers(secrets)
    monkeypatch.setattr(transport, "post", receivers.post)
    now = START
    for n, (step, arg) in enumerate(steps):
        if step == "event":
            with transaction.atomic():
                event_record(event_type="credits.low" if n % 2 else "invoice.paid", data={"n": n},
                             customer=customers[arg], occurred_at=now)
        elif step == "dispatch":
            outbox_dispatch()
        elif step == "tick":
            now += dt.timedelta(seconds=arg)
            beat(now)
        else:
            receivers.modes.extend([step] * arg)
    receivers.modes.clear()
    for _ in range(50):  # the receivers answer again; beat runs every minute
        now += dt.timedelta(minutes=1)
        beat(now)
        if not Delivery.objects.filter(status="pending").exists() and not OutboxEvent.objects.filter(
                dispatched_at__isnull=True).exists():
            break

    events = list(OutboxEvent.objects.order_by("id"))
    assert set(Delivery.objects.values_list("status", flat=True)) <= {"delivered"}
    for url, received in receivers.received.items():
        wanted = [e for e in events if url.endswith("/all") or e.type == "credits.low"]
        assert set(received) == {e.uid for e in wanted}  # 1. everything wanted arrived
        assert len(received) - len(set(received)) <= receivers.crashes_after_send  # 2. repeats only after crashes
        first_seen = list(dict.fromkeys(received))
        for key in customers:  # 3. in order of occurrence per customer
            occurred = [e.uid for e in wanted if e.customer_key == key]
            assert [uid for uid in first_seen if uid in occurred] == occurred
    if receivers.crashes_after_send == 0:
        assert all(len(r) == len(set(r)) for r in receivers.received.values())
