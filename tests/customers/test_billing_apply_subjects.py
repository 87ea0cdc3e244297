"""``billing_apply`` / ``billing_dump``: the subjects of a customer, short form (no dates) and explicit form
(``{subject, from, to}``), round trips, refusals by issued invoices, hostile input."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml

from customers.models import Customer, SubjectAttribution
from customers.selectors import feature_usage
from customers.services.customers import attribution_add, attribution_end, customer_create
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice
from invoicing.services.close import close_cycles
from tests.builders import CATALOG_EXAMPLE as FIXTURE
from tests.builders import ai_token_feature, apply, apply_error, dump, ingest, iso, llm_event, token_plan, utc, write
from tests.builders import catalog_example as example

pytestmark = pytest.mark.django_db


NOV, NOV20, DEC = utc(2026, 11, 1), utc(2026, 11, 20), utc(2026, 12, 1)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def mappings() -> list[tuple]:
    return list(SubjectAttribution.objects.order_by("subject", "id").values_list(
        "customer__key", "subject", "start", "end"))


def only_customers(doc: dict) -> dict:
    """The example's customers (and meters/features/plans, which customers need nothing of), no subscriptions."""
    doc["subscriptions"] = []
    return doc


# ---------------------------------------------------------------------------------------------- the two forms


def test_short_form_includes_the_subject_from_the_beginning():
    apply(write(FIXTURE.read_text()))
    assert mappings() == [
        ("acme", "acme-corp", None, None), ("acme", "consumer:8f3c2a10-5b1e-4c7d-9e21-3a4b5c6d7e8f", None, None),
        ("kong-air", "kong-air", None, None)]
    assert apply() == "No changes.\n"


def test_a_back_dated_subscription_from_the_file_counts_usage_before_the_apply():
    ingest([llm_event(tokens=11, time=iso(utc(2026, 10, 2))), llm_event(tokens=5, time=iso(utc(2026, 9, 30)))])
    apply(write(FIXTURE.read_text()))  # kong-air from 2026-10-01, subject kong-air without dates
    subscription = Customer.objects.get(key="kong-air").subscriptions.get()
    usage = feature_usage(subscription=subscription, feature=ai_token_feature(), start=utc(2026, 10, 1), end=NOV)
    assert usage == 11  # from the subscription's start, whenever the subject was added


def test_explicit_form_with_from_and_to():
    doc = only_customers(example())
    doc["customers"][0]["subjects"] = [
        {"subject": "old-gw", "from": "2026-01-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"},
        {"subject": "kong-air", "from": "2026-11-01T00:00:00Z"},
        {"subject": "legacy", "to": "2026-03-01T00:00:00Z"},
    ]
    out = apply(write(doc))
    assert "add subject old-gw to customer kong-air from 2026-01-01T00:00:00Z until 2026-06-01T00:00:00Z" in out
    assert "add subject kong-air to customer kong-air from 2026-11-01T00:00:00Z" in out
    assert "add subject legacy to customer kong-air until 2026-03-01T00:00:00Z" in out
    kong_air = [m for m in mappings() if m[0] == "kong-air"]
    assert kong_air == [("kong-air", "kong-air", NOV, None), ("kong-air", "legacy", None, utc(2026, 3, 1)),
                        ("kong-air", "old-gw", utc(2026, 1, 1), utc(2026, 6, 1))]
    assert apply() == "No changes.\n"

    doc["customers"][0]["subjects"][1] = "kong-air"  # now: from the beginning
    assert apply(write(doc)).splitlines()[0] == (
        "change subject kong-air of customer kong-air: from 2026-11-01T00:00:00Z -> from the beginning")
    assert SubjectAttribution.objects.get(subject="kong-air").start is None
    assert apply() == "No changes.\n"


def test_a_listed_end_ends_the_open_mapping_and_another_customer_takes_over():
    apply(write(FIXTURE.read_text()))
    doc = example()
    doc["customers"][1]["subjects"] = [{"subject": "acme-corp", "to": "2026-11-20T00:00:00Z"},
                                       "consumer:8f3c2a10-5b1e-4c7d-9e21-3a4b5c6d7e8f"]
    doc["customers"][0]["subjects"] = ["kong-air", "acme-corp"]  # without dates: from where acme's ends
    out = apply(write(doc)).splitlines()
    assert out[:2] == ["change subject acme-corp of customer acme: from the beginning -> until 2026-11-20T00:00:00Z",
                       "add subject acme-corp to customer kong-air"]
    assert [m for m in mappings() if m[1] == "acme-corp"] == [("acme", "acme-corp", None, NOV20),
                                                              ("kong-air", "acme-corp", NOV20, None)]
    assert apply() == "No changes.\n"


def test_dump_writes_the_short_form_without_dates_and_the_explicit_form_otherwise():
    air = customer_create(key="kong-air", name="Kong Air", currency="USD")
    acme = customer_create(key="acme", name="Acme", currency="USD")
    attribution_end(attribution=attribution_add(customer=acme, subject="gw"), end=NOV20)
    attribution_add(customer=air, subject="gw")  # from Nov 20, where acme's ended
    attribution_add(customer=air, subject="kong-air")
    attribution_add(customer=air, subject="noon", start=utc(2026, 11, 3, 12, 0, 0, 500))
    customers = {c["key"]: c["subjects"] for c in yaml.safe_load(dump())["customers"]}
    assert customers == {
        "acme": [{"subject": "gw", "to": "2026-11-20T00:00:00Z"}],
        "kong-air": [{"subject": "gw", "from": "2026-11-20T00:00:00Z"}, "kong-air",
                     {"subject": "noon", "from": "2026-11-03T12:00:00.000500Z"}],
    }


def test_dump_then_apply_round_trips_and_rebuilds_an_empty_database():
    apply(write(FIXTURE.read_text()))
    doc = example()
    doc["customers"][1]["subjects"] = [{"subject": "acme-corp", "to": "2026-11-20T00:00:00Z"},
                                       {"subject": "acme-old", "from": "2025-01-01T00:00:00Z",
                                        "to": "2025-06-01T00:00:00Z"},
                                       "consumer:8f3c2a10-5b1e-4c7d-9e21-3a4b5c6d7e8f"]
    doc["customers"][0]["subjects"] = ["kong-air", "acme-corp"]
    apply(write(doc))
    text = dump()
    before = mappings()
    assert apply(write(text, "dump.yaml")) == "No changes.\n"
    assert mappings() == before and dump() == text

    SubjectAttribution.objects.all().delete()
    out = apply("dump.yaml")
    assert "No changes." not in out
    assert mappings() == before
    assert dump() == text
    assert apply("dump.yaml") == "No changes.\n"


def test_an_issued_invoice_blocks_moving_a_start_and_says_how_to_keep_it():
    """A mapping from before this change (start Nov 20) billed in an issued invoice: the short form would move
    its start to the beginning — refused, naming the invoice; the explicit form keeps it."""
    plan = token_plan()
    air = customer_create(key="kong-air", name="Kong Air", currency="USD")
    attribution_add(customer=air, subject="kong-air", start=NOV20)
    subscription_create(customer=air, plan=plan, start=NOV)
    ingest([llm_event(tokens=100_000, time=iso(utc(2026, 11, 25)))])
    close_cycles(now=DEC + dt.timedelta(hours=2))
    invoice = Invoice.objects.get(cycle=1)
    doc: dict[str, Any] = {"customers": [{"key": "kong-air", "name": "Kong Air", "currency": "USD",
                                          "subjects": ["kong-air"]}]}
    message = apply_error(write(doc))
    assert (f"catalog.yaml: customers[0] (kong-air).subjects[0]: invoice {invoice.number} (issued) billed usage of "
            "2026-11-01 – 2026-12-01 that this change would move" in message)
    assert "(to keep its start, write {subject: kong-air, from: 2026-11-20T00:00:00Z})" in message
    assert SubjectAttribution.objects.get().start == NOV20
    doc["customers"][0]["subjects"] = [{"subject": "kong-air", "from": "2026-11-20T00:00:00Z"}]
    assert apply(write(doc)) == "No changes.\n"


# ------------------------------------------------------------------------------------------------------ hostile


def _subjects(*items):
    def change(doc):
        doc["customers"][0]["subjects"] = list(items)
    return change


WHERE = "catalog.yaml: customers[0] (kong-air).subjects"
BAD_SUBJECTS = [
    (_subjects({"subject": "x", "since": "2026-11-01T00:00:00Z"}),
     f"{WHERE}[0].since: unknown field (known: subject, from, to)"),
    (_subjects({"subject": "x", "from": "yesterday"}), f"{WHERE}[0].from: must be an RFC 3339 date-time"),
    (_subjects({"subject": "x", "from": "2026-11-01T00:00:00"}), f"{WHERE}[0].from: needs a time zone offset"),
    (_subjects({"subject": "x", "from": dt.date(2026, 11, 1)}), f"{WHERE}[0].from: must be an RFC 3339 date-time"),
    (_subjects({"subject": "x", "to": "0001-01-01T00:00:00+01:00"}), f"{WHERE}[0].to: is out of range"),
    (_subjects({"subject": "x", "from": "2026-11-20T00:00:00Z", "to": "2026-11-01T00:00:00Z"}),
     f"{WHERE}[0].to: must be after from (2026-11-20T00:00:00Z)"),
    (_subjects({"subject": "x", "from": "2026-11-20T00:00:00Z", "to": "2026-11-20T00:00:00Z"}),
     f"{WHERE}[0].to: must be after from"),
    (_subjects("kong\x00air"), f"{WHERE}[0]: a subject must not contain control characters"),
    (_subjects({"subject": "kong\x00air"}), f"{WHERE}[0].subject: a subject must not contain control characters"),
    (_subjects(42), f"{WHERE}[0]: must be a subject (a string) or a mapping with subject, from and to, not a number"),
    (_subjects(["kong-air"]), f"{WHERE}[0]: must be a subject (a string) or a mapping"),
    (_subjects({"subject": 7}), f"{WHERE}[0].subject: must be a string"),
    (_subjects({"from": "2026-11-01T00:00:00Z"}), f"{WHERE}[0].subject: is required"),
    (_subjects(""), f"{WHERE}[0]: a subject is a non-empty string of at most 255 characters"),
    (_subjects("x" * 256), f"{WHERE}[0]: a subject is a non-empty string of at most 255 characters"),
    (_subjects("kong-air", {"subject": "kong-air", "from": "2026-11-01T00:00:00Z"}),
     f"{WHERE}[1]: 'kong-air' is listed twice without an end"),
    (_subjects({"subject": "gw", "from": "2026-01-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
               {"subject": "gw", "from": "2026-02-01T00:00:00Z", "to": "2026-04-01T00:00:00Z"}),
     f"{WHERE}[1]: overlaps {WHERE[14:]}[0]: the mappings of a subject must not overlap"),
    (_subjects("kong-air", {"subject": "kong-air", "to": "2026-11-01T00:00:00Z"}),  # the beginning twice
     f"{WHERE}[1]: kong-air is already included by this customer from the beginning"),
]


@pytest.mark.parametrize(("change", "expected"), BAD_SUBJECTS, ids=[e[1][len(WHERE):len(WHERE) + 50]
                                                                    for e in BAD_SUBJECTS])
def test_bad_subject_entries_name_file_entry_and_field_and_write_nothing(change, expected):
    doc = only_customers(example())
    change(doc)
    message = apply_error(write(doc))
    assert message.startswith("Nothing applied")
    assert expected in message
    assert Customer.objects.count() == 0 and SubjectAttribution.objects.count() == 0


def test_a_nul_in_raw_yaml_is_refused():
    text = FIXTURE.read_text().replace("subjects: [kong-air]", 'subjects: ["kong\\0air"]')
    assert '"kong\\0air"' in text
    message = apply_error(write(text))
    assert f"{WHERE}[0]: a subject must not contain control characters" in message
    assert Customer.objects.count() == 0
