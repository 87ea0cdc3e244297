"""Invoice and credit-note emails with the PDF, preferences and templates; the admin: endpoints (secret shown once,
rotate, test event), the delivery log and resend, portal links, the customer panel, the dashboard card."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.test import Client
from pypdf import PdfReader

from invoicing.models import CompanyProfile
from notifications.models import (
    CustomerNotificationSettings,
    Delivery,
    EmailTemplate,
    OutboxEvent,
    PortalLink,
    WebhookEndpoint,
)
from notifications.services.deliveries import delivery_drain
from notifications.services.endpoints import endpoint_create
from notifications.services.outbox import outbox_dispatch, pending_queues
from tests.builders import cancelled_in_december

pytestmark = pytest.mark.django_db
PUBLIC = "https://93.184.215.14/hooks"


def send_all() -> None:
    outbox_dispatch()
    for endpoint_id, recipient, customer_key in pending_queues():
        delivery_drain(endpoint_id=endpoint_id, recipient=recipient, customer_key=customer_key)


def test_issued_invoices_and_credit_notes_are_emailed_with_their_pdf():
    CompanyProfile.objects.create(pk=1, legal_name="Acme Billing")
    note = cancelled_in_december()
    note.customer.email = "ap@kong-air.example"
    note.customer.save()
    send_all()
    subjects = sorted(m.subject for m in mail.outbox)
    issued = OutboxEvent.objects.filter(type="invoice.issued").count()
    assert len([s for s in subjects if s.startswith("Invoice")]) == issued >= 1
    credit = next(m for m in mail.outbox if m.subject.startswith("Credit note"))
    assert credit.to == ["ap@kong-air.example"] and credit.subject.endswith("from Acme Billing")
    name, content, mimetype = credit.attachments[0]
    assert name == f"{note.number}.pdf" and mimetype == "application/pdf" and content.startswith(b"%PDF")
    assert note.number in PdfReader(io.BytesIO(content)).pages[0].extract_text()  # the one credit-note document
    logged = Delivery.objects.filter(channel="email", status="delivered")
    assert logged.count() == len(mail.outbox)
    assert logged.earliest("pk").attempt_log.get().response_code == 250


def test_a_customer_who_prefers_stripes_emails_gets_none_and_templates_are_editable():
    note = cancelled_in_december()
    customer = note.customer
    customer.email = "ap@kong-air.example"
    customer.save()
    EmailTemplate.objects.create(key="credit_note.issued", subject="CN {{ credit_note.number }}",
                                 body="Total {{ credit_note.total }}")
    send_all()
    assert any(m.subject == f"CN {note.number}" for m in mail.outbox)
    mail.outbox.clear()
    CustomerNotificationSettings.objects.create(customer=customer, invoice_emails=False)
    OutboxEvent.objects.update(dispatched_at=None)
    Delivery.objects.all().delete()
    send_all()
    assert mail.outbox == []


@pytest.fixture
def superuser_client():
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw-123456"))
    return client


def test_adding_an_endpoint_in_the_admin_shows_the_secret_once(superuser_client):
    response = superuser_client.post("/admin/notifications/webhookendpoint/add/", {
        "url": PUBLIC, "description": "product", "event_types": ["invoice.issued"], "enabled": "on"})
    assert response.status_code == 200
    found = re.search(r'value="(whsec_[^"]+)"', response.content.decode())
    assert found is not None
    secret = found.group(1)
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.secret == secret and endpoint.event_types == ["invoice.issued"]
    page = superuser_client.get(f"/admin/notifications/webhookendpoint/{endpoint.pk}/change/").content.decode()
    assert secret not in page


def test_a_refused_url_is_a_form_error(superuser_client):
    response = superuser_client.post("/admin/notifications/webhookendpoint/add/", {
        "url": "https://169.254.169.254/latest", "description": "", "enabled": "on"})
    assert response.status_code == 200 and "private or reserved" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_rotate_and_send_test_event_from_the_admin(superuser_client, monkeypatch):
    from notifications import transport

    sent: list[dict[str, str]] = []

    def receive(url: str, headers: dict[str, str], body: str, timeout: float) -> transport.Response:
        sent.append(headers)
        return transport.Response(200, "ok", "", 1)

    monkeypatch.setattr(transport, "post", receive)
    endpoint = endpoint_create(url=PUBLIC).endpoint
    old = endpoint.secret
    page = superuser_client.get(f"/admin/notifications/webhookendpoint/{endpoint.pk}/do/rotate/")
    assert page.status_code == 200 and "24 hours" in page.content.decode()
    response = superuser_client.post(f"/admin/notifications/webhookendpoint/{endpoint.pk}/do/rotate/")
    endpoint.refresh_from_db()
    assert endpoint.secret != old and endpoint.previous_secret == old
    assert endpoint.secret in response.content.decode()
    with_callbacks = superuser_client.post(f"/admin/notifications/webhookendpoint/{endpoint.pk}/do/send_test/")
    assert with_callbacks.status_code == 302
    delivery = Delivery.objects.get(event__type="test")
    send_all()
    delivery.refresh_from_db()
    assert delivery.status == "delivered" and len(sent) == 1
    assert len(sent[0]["webhook-signature"].split(" ")) == 2  # old and new secret both sign during the rotation
    log = superuser_client.get(f"/admin/notifications/delivery/{delivery.pk}/change/").content.decode()
    assert "ok" in log and delivery.event.uid in log
    resend = superuser_client.post(f"/admin/notifications/delivery/{delivery.pk}/do/resend/")
    assert resend.status_code == 302
    send_all()
    assert len(sent) == 2 and sent[1]["webhook-id"] == sent[0]["webhook-id"]


def test_share_a_portal_link_from_the_customer_page_and_revoke_it(superuser_client):
    note = cancelled_in_december()
    customer = note.customer
    page = superuser_client.get(f"/admin/customers/customer/{customer.pk}/change/").content.decode()
    assert "Share portal link" in page and "alerts that fired" in page.lower()
    shared = superuser_client.post(f"/admin/notifications/portallink/share/{customer.pk}/").content.decode()
    found = re.search(r'value="(http://testserver/portal/[^"]+)"', shared)
    assert found is not None
    url = found.group(1)
    client = Client()
    assert client.get(url).status_code == 200
    link = PortalLink.objects.get()
    superuser_client.post(f"/admin/notifications/portallink/{link.pk}/do/revoke/")
    assert client.get(url).status_code == 404


def test_the_dashboard_warns_about_disabled_endpoints(superuser_client):
    endpoint = endpoint_create(url=PUBLIC).endpoint
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=False, disabled_reason="The receiver answered 410 "
                                                                                         "Gone.")
    page = superuser_client.get("/admin/").content.decode()
    assert 'id="card-webhooks"' in page and "410 Gone" in page


@pytest.mark.parametrize("path", [
    "/admin/notifications/webhookendpoint/", "/admin/notifications/webhookendpoint/add/",
    "/admin/notifications/delivery/", "/admin/notifications/outboxevent/", "/admin/notifications/firedalert/",
    "/admin/notifications/emailtemplate/add/", "/admin/notifications/usagealertrule/add/",
    "/admin/notifications/customernotificationsettings/add/", "/admin/notifications/portallink/",
])
def test_admin_pages_open(superuser_client, path):
    assert superuser_client.get(path).status_code == 200


def test_a_broken_email_template_is_a_form_error(superuser_client):
    response = superuser_client.post("/admin/notifications/emailtemplate/add/", {
        "key": "invoice.issued", "subject": "{% if %}", "body": "x"})
    assert response.status_code == 200 and "Template error" in response.content.decode()
    assert not EmailTemplate.objects.exists()
