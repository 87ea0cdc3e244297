"""Webhook endpoints: hostile URLs refused (SSRF), the API's answers to bad input, the secret shown once, rotation
(old and new both sign for 24 h), disabling after days of failures, and the delivery rules per event type."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from notifications import transport
from notifications.models import Delivery, OutboxEvent, WebhookEndpoint
from notifications.services.alerts import endpoints_disable_stale
from notifications.services.deliveries import webhook_request
from notifications.services.endpoints import EndpointError, endpoint_create, endpoint_rotate_secret
from notifications.services.outbox import event_record, outbox_dispatch
from tests.builders import bearer, customer

pytestmark = pytest.mark.django_db
PUBLIC = "https://93.184.215.14/hooks"


@pytest.mark.parametrize("url, why", [
    ("http://93.184.215.14/hooks", "https"),
    ("ftp://93.184.215.14/x", "https"),
    ("file:///etc/passwd", "https"),
    ("gopher://93.184.215.14:70/", "https"),
    ("https://127.0.0.1/hooks", "loopback"),
    ("https://localhost/hooks", "loopback"),
    ("https://10.0.0.5/hooks", "private"),
    ("https://192.168.1.1/hooks", "private"),
    ("https://172.16.0.1/hooks", "private"),
    ("https://169.254.169.254/latest/meta-data", "private"),  # cloud metadata (link-local)
    ("https://[::1]/hooks", "loopback"),
    ("https://[::ffff:127.0.0.1]/hooks", "loopback"),
    ("https://[fd00::1]/hooks", "private"),
    ("https://0.0.0.0/hooks", "loopback"),
    ("https://2130706433/hooks", ""),  # 127.0.0.1 as one number
    ("https://user:pw@93.184.215.14/hooks", "Credentials"),
    ("https://does-not-exist.invalid/hooks", "does not resolve"),
    ("https:///nohost", "no host"),
    ("https://93.184.215.14:99999/", "valid URL"),
    ("https://93.184.215.14/a b", "spaces"),
    ("https://93.184.215.14/\x00", "control"),
    ("", "URL"),
])
def test_hostile_urls_are_refused_with_a_message(url, why):
    with pytest.raises(EndpointError) as refused:
        endpoint_create(url=url)
    assert refused.value.field == "url"
    assert why.lower() in str(refused.value).lower()
    assert not WebhookEndpoint.objects.exists()


def test_http_and_private_addresses_need_their_settings(settings):
    settings.WEBHOOKS_ALLOW_HTTP = True
    endpoint_create(url="http://93.184.215.14/hooks")
    with pytest.raises(EndpointError):
        endpoint_create(url="http://127.0.0.1:9/hooks")
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    endpoint_create(url="http://127.0.0.1:9/hooks")
    assert WebhookEndpoint.objects.count() == 2


def test_the_url_is_checked_again_at_send_time(settings):
    """A host that resolved to a public address at creation and to a private one later (DNS rebinding) is not
    called: the check runs at every send, and the connection goes to the checked address."""
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    endpoint = endpoint_create(url="https://127.0.0.1:9/hooks").endpoint
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    answer = transport.http_post(endpoint.url, {}, "{}", 1.0)
    assert answer.status is None and "loopback" in answer.error


def test_the_secret_signs_and_rotation_keeps_the_old_one_for_a_day():
    new = endpoint_create(url=PUBLIC)
    event = event_record(event_type="test", data={"message": "hi"}, test=True)
    now = timezone.now()
    headers, body = webhook_request(event, new.endpoint, now)
    assert headers["webhook-id"] == event.uid
    Webhook(new.secret).verify(body, headers)
    assert json.loads(body) == {"type": "test", "timestamp": json.loads(body)["timestamp"],
                                "data": {"message": "hi"}}
    rotated = endpoint_rotate_secret(endpoint=new.endpoint, now=now)
    assert rotated.secret != new.secret
    headers, body = webhook_request(event, rotated.endpoint, now)
    Webhook(new.secret).verify(body, headers)  # receivers still on the old secret
    Webhook(rotated.secret).verify(body, headers)  # and those already switched
    later = now + dt.timedelta(hours=24, seconds=1)
    headers, body = webhook_request(event, rotated.endpoint, later)
    headers["webhook-timestamp"] = str(int(now.timestamp()))  # (the library refuses old timestamps)
    with pytest.raises(WebhookVerificationError):
        Webhook(new.secret).verify(body, {**headers, "webhook-signature": webhook_request(
            event, rotated.endpoint, later)[0]["webhook-signature"]})
    assert len(webhook_request(event, rotated.endpoint, later)[0]["webhook-signature"].split(" ")) == 1


def test_each_endpoint_gets_the_event_types_it_wants_once():
    everything = endpoint_create(url=PUBLIC).endpoint
    invoices = endpoint_create(url=PUBLIC + "/inv", event_types=["invoice.issued"]).endpoint
    endpoint_create(url=PUBLIC + "/off", enabled=False)
    buyer = customer("acme")
    event_record(event_type="invoice.issued", data={}, customer=buyer)
    event_record(event_type="subscription.created", data={}, customer=buyer)
    outbox_dispatch()
    outbox_dispatch()
    rows = sorted(Delivery.objects.values_list("endpoint_id", "event__type"))
    assert rows == sorted([(everything.pk, "invoice.issued"), (everything.pk, "subscription.created"),
                           (invoices.pk, "invoice.issued")])
    assert not OutboxEvent.objects.filter(dispatched_at__isnull=True).exists()


def test_an_endpoint_failing_for_five_days_is_disabled():
    endpoint = endpoint_create(url=PUBLIC).endpoint
    now = timezone.now()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=now - dt.timedelta(days=4))
    assert endpoints_disable_stale(now=now) == 0
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=now - dt.timedelta(days=5, seconds=1))
    assert endpoints_disable_stale(now=now) == 1
    endpoint.refresh_from_db()
    assert not endpoint.enabled and "5 days" in endpoint.disabled_reason


# --- the API -----------------------------------------------------------------------------------------------------

@pytest.fixture
def manage(make_token):
    return bearer(make_token("manage"))


def test_create_shows_the_secret_once_and_reads_never_do(api, manage):
    created = api.post("/api/v1/webhook-endpoints", {"url": PUBLIC, "event_types": ["invoice.issued"],
                                                     "description": "product"}, format="json", **manage)
    assert created.status_code == 201
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["event_types"] == ["invoice.issued"]
    listed = api.get("/api/v1/webhook-endpoints", **manage)
    one = api.get(f"/api/v1/webhook-endpoints/{body['id']}", **manage)
    assert "secret" not in listed.json()[0] and "secret" not in one.json()
    assert body["secret"] not in listed.content.decode() + one.content.decode()
    changed = api.put(f"/api/v1/webhook-endpoints/{body['id']}", {"url": PUBLIC, "enabled": False}, format="json",
                      **manage)
    assert changed.status_code == 200 and changed.json()["enabled"] is False and changed.json()["event_types"] == []
    assert api.delete(f"/api/v1/webhook-endpoints/{body['id']}", **manage).status_code == 204
    assert api.get(f"/api/v1/webhook-endpoints/{body['id']}", **manage).status_code == 404


@pytest.mark.parametrize("body", [
    {"url": "https://127.0.0.1/x"},
    {"url": "http://93.184.215.14/x"},
    {"url": 5},
    {"url": None},
    {},
    {"url": PUBLIC, "event_types": ["nope"]},
    {"url": PUBLIC, "event_types": "invoice.issued"},
    {"url": PUBLIC, "event_types": [1]},
    {"url": PUBLIC, "enabled": "yes"},
    {"url": PUBLIC, "description": "x" * 501},
    {"url": PUBLIC, "description": 3},
    {"url": PUBLIC, "secret": "whsec_mine"},
    [PUBLIC],
    "https://93.184.215.14",
])
def test_bad_bodies_are_400_problems_and_create_nothing(api, manage, body):
    response = api.post("/api/v1/webhook-endpoints", json.dumps(body), content_type="application/json", **manage)
    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize("endpoint_id", ["0", "abc", "99999999999999999999", "1.5", "-1"])
def test_unknown_ids_are_404(api, manage, endpoint_id):
    for method in ("get", "delete"):
        response = getattr(api, method)(f"/api/v1/webhook-endpoints/{endpoint_id}", **manage)
        assert response.status_code == 404 and response["Content-Type"] == "application/problem+json"


def test_the_openapi_document_describes_every_event_type_as_a_webhook(api, read_token):
    schema = api.get("/api/schema/?format=json", **bearer(read_token)).json()
    hooks = schema["webhooks"]
    for name in ("invoice.issued", "invoice.paid", "invoice.voided", "invoice.payment_failed",
                 "invoice.uncollectible", "credit_note.issued", "subscription.created", "subscription.canceled",
                 "subscription.changed", "entitlement.threshold", "spend.threshold", "credits.low",
                 "usage.unpriced", "usage.unattributed"):
        body = hooks[name]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["properties"]["type"]["const"] == name
        assert {p["name"] for p in hooks[name]["post"]["parameters"]} == {
            "webhook-id", "webhook-timestamp", "webhook-signature"}
    threshold = hooks["entitlement.threshold"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(threshold["properties"]["data"]["required"]) == {
        "customer", "feature", "threshold_percent", "usage", "limit", "period"}
    assert "/api/v1/webhook-endpoints" in schema["paths"] and "/api/v1/portal/usage" in schema["paths"]
