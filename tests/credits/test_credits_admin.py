"""The credits admin: the customer page's balance, grants and buttons; granting (form errors for bad input,
nothing written); *Adjust* with a required reason and *Void grant*, each confirmed; the ledger list; credits on
the printable invoice and in the preview."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from credits.models import CreditGrant, LedgerEntry
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice
from invoicing.selectors.invoices import preview_json
from invoicing.selectors.previews import invoice_preview
from invoicing.services.close import close_cycles
from tests.builders import ai_token_feature, cent_plan, customer, grant, ingest, kong_air, tokens, utc

pytestmark = pytest.mark.django_db
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)


def staff(django_user_model, role: str):
    user = django_user_model.objects.create_user(role.replace(" ", "-").lower(), password="x", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


def add_form(**fields):
    data = {"customer": "", "amount_major": "20.00", "priority": "10", "source": "promotional",
            "effective_at_0": "2026-11-01", "effective_at_1": "00:00:00", "expires_at_0": "", "expires_at_1": "",
            "features": "", "description": "$20 free"}
    data.update(fields)
    return data


def test_the_customer_page_shows_the_balance_grants_and_buttons(admin_client):
    acme = customer("acme")
    grant(acme, 2000, effective_at=timezone.now() - dt.timedelta(days=1), description="$20 free")
    page = admin_client.get(f"/admin/customers/customer/{acme.pk}/change/").content.decode()
    assert '<span id="credits-balance">20.00 USD</span>' in page
    assert 'id="credits-grants"' in page and "<td>Manual</td><td>20.00</td><td>20.00</td>" in page
    assert 'id="grant-credits"' in page and f"?customer={acme.pk}" in page
    assert 'id="credits-ledger"' in page and "<svg" in page


def test_viewers_see_credits_but_cannot_grant_adjust_or_void(client, django_user_model):
    acme = customer("acme")
    credit = grant(acme, 2000, effective_at=NOV)
    client.force_login(staff(django_user_model, "Finance viewer"))
    page = client.get(f"/admin/customers/customer/{acme.pk}/change/").content.decode()
    assert 'id="credits-balance"' in page and 'id="grant-credits"' not in page
    assert client.get("/admin/credits/creditgrant/").status_code == 200
    assert client.get("/admin/credits/creditgrant/add/").status_code == 403
    client.post(f"/admin/credits/creditgrant/{credit.pk}/do/void/", {"reason": "no"})
    credit.refresh_from_db()
    assert credit.voided_at is None


def test_granting_through_the_admin(admin_client):
    acme = customer("acme")
    ai_token_feature()
    response = admin_client.post("/admin/credits/creditgrant/add/",
                                 add_form(customer=acme.pk, features="ai-token", expires_at_0="2027-11-01",
                                          expires_at_1="00:00:00"))
    assert response.status_code == 302, response.content.decode()[:2000]
    created = CreditGrant.objects.get()
    assert (created.amount, created.priority, created.applies_to, created.source, created.expires_at) == (
        2000, 10, ["ai-token"], "promotional", utc(2027, 11, 1))
    assert list(LedgerEntry.objects.values_list("kind", "amount")) == [("grant", 2000)]


@pytest.mark.parametrize("fields, message", [
    ({"amount_major": "0"}, "more than zero"),
    ({"amount_major": "-5"}, "more than zero"),
    ({"amount_major": "1.005"}, "decimal places"),
    ({"amount_major": "1,5"}, "dot"),
    ({"expires_at_0": "2026-10-01", "expires_at_1": "00:00:00"}, "after the effective time"),
    ({"features": "no-such-feature"}, "unknown feature"),
    ({"source": "recurring"}, "recurring grants come from rate cards"),
    ({"description": "nul\x00"}, "Null characters are not allowed"),
])
def test_bad_grants_are_form_errors_and_write_nothing(admin_client, fields, message):
    acme = customer("acme")
    response = admin_client.post("/admin/credits/creditgrant/add/", add_form(customer=acme.pk, **fields))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not CreditGrant.objects.exists() and not LedgerEntry.objects.exists()


def test_adjust_needs_a_reason_and_never_goes_below_zero(admin_client):
    credit = grant(customer("acme"), 2000, effective_at=NOV)
    url = f"/admin/credits/creditgrant/{credit.pk}/do/adjust/"
    assert b"Adjust" in admin_client.get(url).content
    assert admin_client.post(url, {"amount": "-5.00", "reason": ""}).status_code == 200
    refused = admin_client.post(url, {"amount": "-25.00", "reason": "too much"})
    assert "only 2000 minor units are left" in refused.content.decode()
    assert LedgerEntry.objects.filter(kind="adjustment").count() == 0
    done = admin_client.post(url, {"amount": "-5.00", "reason": "goodwill correction"})
    assert done.status_code == 302
    entry = LedgerEntry.objects.get(kind="adjustment")
    assert (entry.amount, entry.reason, entry.actor_label) == (-500, "goodwill correction", "admin")


def test_void_grant_is_confirmed(admin_client):
    credit = grant(customer("acme"), 2000, effective_at=NOV)
    url = f"/admin/credits/creditgrant/{credit.pk}/do/void/"
    page = admin_client.get(url).content.decode()
    assert "Void writes off what is left" in page and "20.00 USD" in page
    credit.refresh_from_db()
    assert credit.voided_at is None  # a GET only asks
    assert admin_client.post(url, {"reason": "duplicate"}).status_code == 302
    assert list(LedgerEntry.objects.order_by("pk").values_list("kind", "amount", "reason")) == [
        ("grant", 2000, "Manual"), ("void", -2000, "duplicate")]
    detail = admin_client.get(f"/admin/credits/creditgrant/{credit.pk}/change/").content.decode()
    assert 'id="creditgrant-void"' not in detail


def test_the_ledger_list_filters(admin_client):
    acme, globex = customer("acme"), customer("globex")
    grant(acme, 100, effective_at=NOV)
    grant(globex, 200, effective_at=NOV)
    listing = admin_client.get(f"/admin/credits/ledgerentry/?customer__id__exact={acme.pk}&kind=grant")
    assert listing.status_code == 200
    text = listing.content.decode()
    assert "1.00" in text and "2.00" not in text


def test_credits_on_the_printable_invoice_and_in_the_preview(admin_client):
    air = kong_air()
    subscription_create(customer=air, plan=cent_plan(), start=NOV)
    ingest([tokens(1000, utc(2026, 11, 5))])
    credit = grant(air, 400, effective_at=NOV, description="launch credits")
    preview = preview_json(invoice_preview(customer=air, at=utc(2026, 11, 20)))
    applied = [line for line in preview["lines"] if line["kind"] == "credits_applied"]
    assert [(line["grant"], line["amount"]) for line in applied] == [(str(credit.pk), "-4.00")]
    assert preview["total"] == "6.00"
    close_cycles(now=DEC + dt.timedelta(hours=2))
    invoice = Invoice.objects.get(cycle=1)
    printable = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/print/").content.decode()
    assert "Credits applied — launch credits" in printable
    assert "Prepaid credits applied" in printable and "-$4.00" in printable and "$6.00" in printable
    assert "Subtotal" in printable and "$10.00" in printable
