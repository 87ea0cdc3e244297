"""Customer currencies are upper-cased or refused on save: service, admin and billing_apply (plans too)."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import CommandError, call_command

from catalog.models import Plan
from customers.models import Customer
from customers.services.customers import CustomerError, customer_create, customer_update
from tests.builders import admin_form_post

pytestmark = pytest.mark.django_db


def test_customer_services_store_upper_case():
    customer = customer_create(key="acme", name="Acme", currency="usd")
    assert Customer.objects.get(pk=customer.pk).currency == "USD"
    customer_update(customer=customer, currency=" eur ")
    assert Customer.objects.get(pk=customer.pk).currency == "EUR"


@pytest.mark.parametrize("typed", ["XYZ", "us", "US D", "US\x00", ""])
def test_customer_services_refuse_unknown_codes(typed):
    with pytest.raises(CustomerError) as caught:
        customer_create(key="acme", name="Acme", currency=typed)
    assert "currency" in caught.value.errors
    customer = customer_create(key="acme", name="Acme", currency="USD")
    with pytest.raises(CustomerError):
        customer_update(customer=customer, currency=typed)
    assert Customer.objects.get().currency == "USD"


def _customer_add(client, currency: str):
    return admin_form_post(client, "/admin/customers/customer/add/", "customer_form", key="acme", name="Acme",
                           currency=currency, metadata="{}")


def test_customer_admin_upper_cases_the_currency(admin_client):
    assert _customer_add(admin_client, "usd").status_code == 302
    assert Customer.objects.get().currency == "USD"


@pytest.mark.parametrize("typed", ["XYZ", "us", "US\x00"])
def test_customer_admin_refuses_unknown_codes(admin_client, typed):
    response = _customer_add(admin_client, typed)
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["currency"]
    assert not Customer.objects.exists()


DOC = {
    "features": [{"key": "platform", "name": "Platform"}],
    "plans": [{"key": "basic", "name": "Basic", "currency": "usd", "billing_cadence": "P1M",
               "rate_cards": [{"key": "platform", "payment_term": "in_advance",
                               "price": {"type": "flat", "amount": "49.00"}}]}],
    "customers": [{"key": "acme", "name": "Acme", "currency": "usd"}],
    "subscriptions": [{"customer": "acme", "plan": "basic", "start": "2026-10-01T00:00:00Z"}],
}


def _apply(tmp_path, doc) -> str:
    path = tmp_path / "billing.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = io.StringIO()
    call_command("billing_apply", str(path), stdout=out)
    return out.getvalue()


def test_billing_apply_upper_cases_currencies_and_a_second_apply_changes_nothing(tmp_path):
    _apply(tmp_path, DOC)
    assert Plan.objects.get().currency == "USD" and Customer.objects.get().currency == "USD"
    assert _apply(tmp_path, DOC).strip() == "No changes."


@pytest.mark.parametrize(("where", "typed"), [("plans", "XYZ"), ("customers", "XYZ"), ("plans", "US D"),
                                              ("customers", "us"), ("plans", "US\x00")])
def test_billing_apply_names_an_unknown_currency_and_applies_nothing(tmp_path, where, typed):
    doc = yaml.safe_load(yaml.safe_dump(DOC))
    doc[where][0]["currency"] = typed
    with pytest.raises(CommandError) as caught:
        _apply(tmp_path, doc)
    assert f"{where}[0] (" in str(caught.value) and ".currency: currency " in str(caught.value)
    assert "is not a known ISO 4217 code" in str(caught.value)
    assert not Plan.objects.exists() and not Customer.objects.exists()
