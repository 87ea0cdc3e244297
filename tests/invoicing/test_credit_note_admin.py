"""The admin around the re-rating rule: credit notes (list, detail, void, printable), manual corrections, the
reconciliation page, cycle closes held by an error, each for the roles that may use them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from customers.services.subscriptions import subscription_create
from invoicing.models import CreditNote, CycleClose, Invoice
from tests.builders import cancelled_in_december, cent_plan, ingest, kong_air, monthly_close, tokens, utc

pytestmark = pytest.mark.django_db
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)


@pytest.fixture
def credited():
    return cancelled_in_december()


def staff(django_user_model, role: str):
    user = django_user_model.objects.create_user(role.replace(" ", "-").lower(), password="x", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def test_credit_note_list_detail_print_and_void(admin_client, credited):
    listing = admin_client.get("/admin/invoicing/creditnote/").content.decode()
    assert "CN-2026-000001" in listing and "15.48" in listing
    page = admin_client.get(f"/admin/invoicing/creditnote/{credited.pk}/change/").content.decode()
    assert "Unused Platform fee (Dec 16, 2026 – Jan 1, 2027)" in page and 'id="credit-note-void"' in page
    printable = admin_client.get(f"/admin/invoicing/creditnote/{credited.pk}/print/").content.decode()
    assert "Credit note CN-2026-000001" in printable and "15.48" in printable and credited.invoice.number in printable
    confirm = admin_client.get(f"/admin/invoicing/creditnote/{credited.pk}/do/void/")
    assert b"Void CN-2026-000001?" in confirm.content
    credited.refresh_from_db()
    assert credited.status == "issued"  # a GET only asks
    admin_client.post(f"/admin/invoicing/creditnote/{credited.pk}/do/void/", {"reason": "by mistake"})
    credited.refresh_from_db()
    assert credited.status == "void"
    again = admin_client.post(f"/admin/invoicing/creditnote/{credited.pk}/do/void/", follow=True)
    assert "already void" in again.content.decode()


def test_viewers_see_credit_notes_but_cannot_void_or_credit(client, django_user_model, credited):
    client.force_login(staff(django_user_model, "Finance viewer"))
    assert client.get(f"/admin/invoicing/creditnote/{credited.pk}/change/").status_code == 200
    assert client.get(f"/admin/invoicing/creditnote/{credited.pk}/print/").status_code == 200
    client.post(f"/admin/invoicing/creditnote/{credited.pk}/do/void/")
    credited.refresh_from_db()
    assert credited.status == "issued"
    invoice = credited.invoice
    page = client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").content.decode()
    assert "CN-2026-000001" in page and 'id="invoice-credit-note"' not in page
    client.post(f"/admin/invoicing/invoice/{invoice.pk}/credit-note/", {"amount": "1.00", "reason": "no"})
    assert CreditNote.objects.count() == 1


def test_manual_credit_note_form(admin_client):
    subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    ingest([tokens(1000, utc(2026, 11, 5))])
    monthly_close(DEC)
    invoice = Invoice.objects.get(cycle=1)
    url = f"/admin/invoicing/invoice/{invoice.pk}/credit-note/"
    assert "10.00 USD is left to credit" in admin_client.get(url).content.decode()
    for amount, message in (("2,50", "dot as the decimal separator"), ("10.01", "left to credit"),
                            ("0.001", "2 decimal places"), ("-1", "greater than or equal"), ("", "required")):
        response = admin_client.post(url, {"amount": amount, "reason": "outage"})
        assert response.status_code == 200 and message in response.content.decode(), amount
    assert not CreditNote.objects.exists()
    response = admin_client.post(url, {"amount": "2.50", "reason": "outage on Nov 3"})
    assert response.status_code == 302
    note = CreditNote.objects.get()
    assert (note.total, note.reason, note.lines.get().kind) == (250, "outage on Nov 3", "adjustment")


def test_reconciliation_page(client, django_user_model):
    subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    ingest([tokens(100, utc(2026, 11, 5))])
    monthly_close(DEC)
    ingest([tokens(5, utc(2026, 11, 6))], now=utc(2026, 12, 3))
    client.force_login(staff(django_user_model, "Finance viewer"))
    page = client.get("/admin/invoicing/invoice/reconciliation/").content.decode()
    assert "late usage awaiting the next close" in page and "0 unexplained" in page
    everything = client.get("/admin/invoicing/invoice/reconciliation/", {"all": "1", "customer": "kong-air"})
    assert everything.status_code == 200
    assert client.get("/admin/invoicing/invoice/reconciliation/", {"customer": "x\x00"}).status_code == 200
    assert "Reconciliation" in client.get("/admin/").content.decode()


def test_held_cycles_show_on_the_dashboard_and_their_list(admin_client):
    subscription = subscription_create(customer=kong_air(), plan=cent_plan(), start=NOV)
    CycleClose.objects.create(subscription=subscription, cycle=1, boundary=DEC, error="BillingOverflow: too large")
    page = admin_client.get("/admin/").content.decode()
    assert 'id="card-held-cycles"' in page
    listing = admin_client.get("/admin/invoicing/cycleclose/", {"error__isempty": "0"}).content.decode()
    assert "too large" in listing
