"""``billing_apply`` on hostile files: alias bombs, huge files, NUL characters, deep nesting and wrong types at
every level each end in a named error with its location and a non-zero exit, and nothing is written."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import ManagementUtility

from tests.builders import CATALOG_EXAMPLE as FIXTURE
from tests.builders import EMPTY, apply, apply_error, change_at, snapshot, write
from tests.builders import catalog_example as example
from tests.common.hostile_yaml import alias_bomb

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def with_change(path: str, value) -> dict:
    """The example with the value at ``a.0.b`` replaced."""
    doc = example()
    change_at(path, value)(doc)
    return doc


def fixture_with(old: str, new: str) -> str:
    text = FIXTURE.read_text()
    assert old in text
    return text.replace(old, new, 1)


def customer_with_metadata(yaml_text: str) -> str:
    """One customer whose ``metadata`` is ``yaml_text`` (block lines are indented under it)."""
    head = "customers:\n  - key: kong-air\n    name: Kong Air\n    currency: USD\n    metadata:"
    if "\n" not in yaml_text.rstrip("\n"):
        return f"{head} {yaml_text}"
    return head + "\n" + "".join(f"      {line}\n" for line in yaml_text.splitlines())


BOMB = "invalid YAML: with its aliases expanded, the file holds more than 500,000 values"
HOSTILE_TEXTS = {  # id: (file, the problem it names)
    "alias bomb": (alias_bomb(), f"catalog.yaml: line 6, column 5: {BOMB}"),
    "alias bomb in metadata": (customer_with_metadata(alias_bomb()), f"catalog.yaml: line 11, column 11: {BOMB}"),
    "alias loop": (customer_with_metadata("&m {loop: *m}\n"),
                   "catalog.yaml: line 5, column 15: invalid YAML: an alias refers to the node that contains it"),
    "2000 levels": (customer_with_metadata("{x: " + "[" * 2000 + "]" * 2000 + "}\n"),
                    "catalog.yaml: line 5, column 65: invalid YAML: nested more than 50 levels deep"),
    "raw NUL": (fixture_with("name: Token", "name: To\x00ken"),
                "catalog.yaml: line 11, column 13: invalid YAML: the character U+0000 is not allowed in YAML"),
    "escaped NUL in a plan": (fixture_with("name: Token", 'name: "To\\0ken"'),
                              "catalog.yaml: plans[0] (token).name: must not contain NUL"),
    "escaped NUL in a customer": (fixture_with("name: Kong Air", 'name: "Kong\\0Air"'),
                                  "catalog.yaml: customers[0] (kong-air).name: must not contain NUL characters"),
    "escaped NUL in a key": (fixture_with("{model: $.model", '{"mo\\0del": $.model'),
                             "catalog.yaml: meters[0] (llm_tokens).group_by: must not contain NUL characters"),
    "a list": ("- meters\n", "catalog.yaml: the file must be a mapping with the keys meters, features, plans, "
                             "customers, subscriptions"),
    "a string": ("just a string\n", "catalog.yaml: the file must be a mapping"),
}


@pytest.mark.parametrize(("text", "expected"), HOSTILE_TEXTS.values(), ids=HOSTILE_TEXTS.keys())
def test_hostile_yaml_is_a_named_error_and_writes_nothing(text, expected):
    message = apply_error(write(text))
    assert message.startswith("Nothing applied: ")
    assert expected in message
    assert snapshot() == EMPTY


ENTRY = "catalog.yaml: plans[0] (token) rate_cards"
WRONG_TYPES = [  # one per level: section, entry, field, nested mapping, nested list, list item, scalar inside
    ("meters", {"slug": "llm_tokens"}, "catalog.yaml: meters: must be a list of entries, not a mapping"),
    ("plans.0", 5, "catalog.yaml: plans[0]: must be a mapping of fields, not a number"),
    ("plans.0", {5: "x"}, "catalog.yaml: plans[0].5: unknown field (known: key, name,"),
    ("plans.0.key", 5, "catalog.yaml: plans[0].key: must be a string, not a number (put it in quotes)"),
    ("plans.0.rate_cards", "ai-token", "catalog.yaml: plans[0] (token).rate_cards: must be a list, not a string"),
    ("plans.0.rate_cards.0", ["ai-token"], f"{ENTRY}[0]: must be a mapping of fields, not a list"),
    ("plans.0.rate_cards.0.price", [1], f"{ENTRY}[0] (ai-token).price: must be a mapping of fields, not a list"),
    ("plans.0.rate_cards.0.price.type", ["unit"],
     f"{ENTRY}[0] (ai-token).price.type: must be one of dimensional, flat, graduated, package, unit, volume, "
     "not ['unit']"),
    ("plans.0.rate_cards.4.price.tiers", {"up_to": 1}, f"{ENTRY}[4] (ai-token-out).price.tiers: must be a list, "
                                                       "not a mapping"),
    ("plans.0.rate_cards.4.price.tiers.0", "1000000",
     f"{ENTRY}[4] (ai-token-out).price.tiers[0]: must be a mapping of fields, not a string"),
    ("plans.0.rate_cards.4.price.tiers.0.up_to", [1],
     f"{ENTRY}[4] (ai-token-out).price.tiers[0].up_to: must be a decimal number, not a list"),
    ("plans.0.rate_cards.0.entitlement", "boolean",
     f"{ENTRY}[0] (ai-token).entitlement: must be a mapping of fields, not a string"),
    ("plans.0.rate_cards.0.entitlement.type", {"boolean": True},
     f"{ENTRY}[0] (ai-token).entitlement.type: must be one of boolean, metered, static, not {{'boolean': True}}"),
    ("plans.0.rate_cards.3.entitlement.config", {"seats": "\x00"},
     f"{ENTRY}[3] (sso).entitlement.config: must not contain NUL characters"),
    ("plans.0.rate_cards.0.price.unit_amount", 10**40,
     f"{ENTRY}[0] (ai-token).price.unit_amount: must be less than 10^23"),
    ("features.0.filters", ["provider=openai"], "catalog.yaml: features[0] (ai-token).filters: must be a mapping, "
                                                "not a list"),
    ("features.0.filters.provider", ["openai"], "catalog.yaml: features[0] (ai-token).filters.provider: must be a "
                                                "non-empty string"),
    ("customers.0.subjects", "kong-air", "catalog.yaml: customers[0] (kong-air).subjects: must be a list, not a "
                                         "string"),
    ("customers.0.subjects.0", {"subject": "kong-air", "from": 5},
     "catalog.yaml: customers[0] (kong-air).subjects[0].from: must be an RFC 3339 date-time such as "
     "2026-10-01T00:00:00Z, not a number"),
    ("customers.0.metadata", {"crm": {"id": "\x00"}}, "catalog.yaml: customers[0] (kong-air).metadata: must not "
                                                      "contain NUL characters"),
    ("customers.0.metadata", {"since": dt.date(2026, 1, 1)}, "catalog.yaml: customers[0] (kong-air).metadata: "
                                                             "must hold only JSON values"),
    ("customers.0.days_until_due", 10**30, "catalog.yaml: customers[0] (kong-air).days_until_due: must be at most "
                                           "2147483647"),
    ("customers.0.email", "ap\x00@kong.example", "catalog.yaml: customers[0] (kong-air).email: must not contain "
                                                 "NUL characters"),
    ("subscriptions.0.start", "9999-12-31T23:59:59-10:00",
     "catalog.yaml: subscriptions[0] (kong-air on token).start: is out of range (years 1 to 9999 in UTC)"),
    ("subscriptions.0", ["kong-air", "token"], "catalog.yaml: subscriptions[0]: must be a mapping of fields, not "
                                               "a list"),
]


@pytest.mark.parametrize(("path", "value", "expected"), WRONG_TYPES, ids=[e[0] for e in WRONG_TYPES])
def test_wrong_types_at_every_level_name_their_location_and_write_nothing(path, value, expected):
    message = apply_error(write(with_change(path, value)))
    assert message.startswith("Nothing applied: ")
    assert expected in message
    assert snapshot() == EMPTY


def test_a_10_mb_file_is_refused_before_it_is_read_whole():
    write("# padding\n" * 1_000_001)
    assert apply_error() == "catalog.yaml: the file is larger than the limit of 4,194,304 bytes"
    assert snapshot() == EMPTY


def test_hostile_files_leave_an_applied_catalog_as_it_was():
    apply(write(FIXTURE.read_text()))
    before = snapshot()
    for text, _ in HOSTILE_TEXTS.values():
        apply_error(write(text))
    for path, value, _ in WRONG_TYPES:
        apply_error(write(with_change(path, value)))
    assert snapshot() == before


def test_the_command_line_exits_non_zero_with_the_message_and_no_traceback(capsys):
    write(HOSTILE_TEXTS["alias bomb in metadata"][0])
    with pytest.raises(SystemExit) as info:
        ManagementUtility(["manage.py", "billing_apply", "catalog.yaml"]).execute()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "invalid YAML: with its aliases expanded" in err
    assert "Traceback" not in err
