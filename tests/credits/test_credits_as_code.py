"""Credits in catalog as code: a rate card's recurring ``credit_grant`` and a metered entitlement's credit mode
are applied (a new plan version when they change) and dumped; malformed ones are errors, nothing written."""

from __future__ import annotations

import pytest
import yaml

from catalog.models import Plan, RateCard
from tests.builders import apply, apply_error, catalog_example, dump, write

pytestmark = pytest.mark.django_db


def with_credits(doc: dict, grant=None, mode="credit_only") -> dict:
    plan = doc["plans"][0]
    card = next(c for c in plan["rate_cards"] if c.get("entitlement", {}).get("type") == "metered"
                or c.get("price"))
    card["credit_grant"] = grant or {"amount": "10.00", "every": "P1M", "expires_after": "P1M", "priority": 10}
    metered = [c for c in plan["rate_cards"] if c.get("entitlement", {}).get("type") == "metered"]
    for entry in metered:
        entry["entitlement"]["credits"] = mode
    return doc


def test_recurring_grants_and_credit_modes_are_applied_and_dumped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = with_credits(catalog_example())
    apply(write(doc))
    plan = Plan.objects.get(key=doc["plans"][0]["key"], status="published")
    cards = {c.key: c for c in RateCard.objects.filter(plan=plan)}
    granted = [c for c in cards.values() if c.credit_grant]
    assert [c.credit_grant for c in granted] == [{"amount": "10.00", "every": "P1M", "expires_after": "P1M",
                                                   "priority": 10}]
    dumped = yaml.safe_load(dump())
    dumped_plan = next(p for p in dumped["plans"] if p["key"] == plan.key)
    assert any(c.get("credit_grant") == granted[0].credit_grant for c in dumped_plan["rate_cards"])
    modes = [c["entitlement"].get("credits") for c in dumped_plan["rate_cards"]
             if (c.get("entitlement") or {}).get("type") == "metered"]
    assert all(mode == "credit_only" for mode in modes)
    assert "no changes" in apply(write(doc)).lower() or "unchanged" in apply(write(doc)).lower()


@pytest.mark.parametrize("grant, words", [
    ({"amount": "0", "every": "P1M"}, "more than zero"),
    ({"amount": "10.00", "every": "sometimes"}, "every must be one of"),
    ({"amount": "10.00", "bonus": True}, "unknown field"),
])
def test_malformed_recurring_grants_are_errors(tmp_path, monkeypatch, grant, words):
    monkeypatch.chdir(tmp_path)
    message = apply_error(write(with_credits(catalog_example(), grant=grant)))
    assert words in message
    assert not Plan.objects.exists()


def test_an_unknown_credit_mode_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = apply_error(write(with_credits(catalog_example(), mode="credit_maybe")))
    assert "credit_maybe" in message or "credits" in message
    assert not Plan.objects.exists()


def test_customer_grants_are_applied_once_and_dumped(tmp_path, monkeypatch):
    from credits.models import CreditGrant

    monkeypatch.chdir(tmp_path)
    doc = catalog_example()
    key = doc["customers"][0]["key"]
    doc["credit_grants"] = [{"customer": key, "amount": "20.00", "effective_at": "2026-11-01T00:00:00Z",
                             "priority": 10, "source": "promotional", "description": "$20 free"}]
    out = apply(write(doc))
    assert "grant credits to" in out
    grant_row = CreditGrant.objects.get()
    assert (grant_row.amount, grant_row.priority, grant_row.source) == (2000, 10, "promotional")
    again = apply(write(doc))
    assert "grant credits" not in again and CreditGrant.objects.count() == 1
    dumped = yaml.safe_load(dump())
    assert dumped["credit_grants"] == doc["credit_grants"]
    assert "grant credits" not in apply(write(dumped))


@pytest.mark.parametrize("entry, words", [
    ({"amount": "0", "effective_at": "2026-11-01T00:00:00Z"}, "more than zero"),
    ({"amount": "1.001", "effective_at": "2026-11-01T00:00:00Z"}, "more decimals"),
    ({"amount": "5", "effective_at": "2026-11-01T00:00:00Z", "expires_at": "2026-10-01T00:00:00Z"}, "after"),
    ({"amount": "5", "effective_at": "2026-11-01T00:00:00Z", "applies_to": ["nope"]}, "unknown feature"),
    ({"amount": "5"}, "effective_at"),
    ({"amount": "5", "effective_at": "2026-11-01T00:00:00Z", "source": "recurring"}, "source"),
    ({"amount": "5", "effective_at": "2026-11-01T00:00:00Z", "customer": "nobody"}, "unknown customer"),
])
def test_bad_customer_grants_are_errors_and_nothing_is_applied(tmp_path, monkeypatch, entry, words):
    from credits.models import CreditGrant
    from customers.models import Customer

    monkeypatch.chdir(tmp_path)
    doc = catalog_example()
    doc["credit_grants"] = [{"customer": doc["customers"][0]["key"], **entry}]
    message = apply_error(write(doc))
    assert words in message
    assert not CreditGrant.objects.exists() and not Customer.objects.exists()
