"""Catalog as code for dimensional prices: billing_apply reads the issue's YAML (rows, default, scheduled rows),
billing_dump writes it back, and applying the dump changes nothing."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import yaml

from catalog.models import Plan, PriceRow, RateCard
from tests.builders import ai_gateway_catalog, apply, apply_error, dump, llm_price_by_model_and_type, write

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("in_tmp_path")]

CATALOG = ai_gateway_catalog(llm_card="""\
        free_quantity: "1000"
""" + llm_price_by_model_and_type("0.0000025", "0.00001") + """\
            - {match: {model: gpt-4o-mini},            price: {type: unit, unit_amount: "0.00000015"}}
            - match: {model: o3}
              price: {type: graduated, tiers: [{up_to: "1000000", unit_amount: "0.00001"},
                                               {up_to: null, unit_amount: "0.000008", flat_amount: "2"}]}
            - {match: {model: gpt-4o, type: request}, price: {type: unit, unit_amount: "0.000002"},
               effective_from: "2027-01-01T00:00:00Z"}
          default: {type: package, amount: "1", quantity_per_package: "100000"}
""")


def test_apply_reads_the_table_as_rows():
    apply(write(CATALOG))
    rate_card = RateCard.objects.get(key="llm", plan__status="published")
    assert rate_card.price_type == "dimensional" and rate_card.dimensions == ["model", "type"]
    rows = list(rate_card.price_rows.order_by("position"))
    assert [(r.match, r.is_default) for r in rows] == [
        ({"model": "gpt-4o", "type": "request"}, False), ({"model": "gpt-4o", "type": "response"}, False),
        ({"model": "gpt-4o-mini"}, False), ({"model": "o3"}, False), ({"model": "gpt-4o", "type": "request"}, False),
        ({}, True)]
    assert rows[0].unit_amount == Decimal("0.0000025")
    assert rows[3].tiers[1] == {"up_to": None, "unit_amount": "0.000008", "flat_amount": "2"}
    assert rows[4].effective_from == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert (rows[5].price_type, rows[5].amount, rows[5].quantity_per_package) == ("package", Decimal(1),
                                                                                  Decimal(100000))


def test_dump_writes_the_issue_keys_and_applying_it_changes_nothing():
    apply(write(CATALOG))
    text = dump()
    price = yaml.safe_load(text)["plans"][0]["rate_cards"][0]["price"]
    assert price["type"] == "dimensional" and price["dimensions"] == ["model", "type"]
    assert price["rows"][0] == {"match": {"model": "gpt-4o", "type": "request"},
                                "price": {"type": "unit", "unit_amount": "0.0000025"}}
    assert price["rows"][4]["effective_from"] == "2027-01-01T00:00:00Z"
    assert price["default"] == {"type": "package", "amount": "1", "quantity_per_package": "100000"}
    assert apply(write(text, "dump.yaml")) == "No changes.\n"
    assert apply(write(CATALOG)) == "No changes.\n"


def test_a_changed_row_makes_a_new_version_and_the_diff_names_it():
    apply(write(CATALOG))
    out = apply(write(CATALOG.replace('"0.00001"}}', '"0.000012"}}')))
    assert "0.00001 -> 0.000012" in out
    assert Plan.objects.filter(key="ai").count() == 2
    assert PriceRow.objects.filter(rate_card__plan__status="published", unit_amount=Decimal("0.000012")).count() == 1


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("dimensions: [model, type]", "dimensions: [model, colour]", "colour"),
    ("{match: {model: gpt-4o-mini},", '{match: {model: ""},', "non-empty"),
    ('price: {type: unit, unit_amount: "0.00000015"}', 'price: {type: flat, amount: "1"}', "must be one of"),
    ('effective_from: "2027-01-01T00:00:00Z"', 'effective_from: "next tuesday"', "effective_from"),
    ("default: {type: package", "default: {type: dimensional", "must be one of"),
    ("{match: {model: gpt-4o, type: request},  price", "{matches: {model: gpt-4o, type: request},  price",
     "matches"),
])
def test_bad_tables_are_refused_and_nothing_is_written(old, new, expected):
    assert old in CATALOG
    message = apply_error(write(CATALOG.replace(old, new, 1)))
    assert expected in message
    assert not Plan.objects.exists()


COSTS = """
costs:
  - {provider: openai, model: gpt-4o, token_type: request, cost_per_token: "0.0000025", source: genai-prices}
  - {provider: openai, model: gpt-4o, token_type: response, cost_per_token: "0.00001"}
"""


def test_the_cost_table_round_trips():
    from catalog.models import ModelCost

    out = apply(write(CATALOG + COSTS))
    assert "create cost openai/gpt-4o request" in out
    assert ModelCost.objects.get(token_type="request").cost_per_token == Decimal("0.0000025")
    text = dump()
    assert yaml.safe_load(text)["costs"] == [
        {"provider": "openai", "model": "gpt-4o", "token_type": "request", "cost_per_token": "0.0000025",
         "currency": "USD", "source": "genai-prices"},
        {"provider": "openai", "model": "gpt-4o", "token_type": "response", "cost_per_token": "0.00001",
         "currency": "USD"}]
    assert apply(write(text, "dump.yaml")) == "No changes.\n"
    changed = apply(write(CATALOG + COSTS.replace('"0.00001"', '"0.000012"')))
    assert changed.startswith("update cost openai/gpt-4o response: cost_per_token 0.00001 -> 0.000012")


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('cost_per_token: "0.0000025"', 'cost_per_token: "-1"', "must not be negative"),
    ("token_type: request", "token_type: null", "token_type"),
    ("provider: openai, model: gpt-4o, token_type: response", "provider: openai, model: gpt-4o, token_type: request",
     "duplicate"),
])
def test_bad_costs_are_refused(old, new, expected):
    from catalog.models import ModelCost

    assert expected in apply_error(write(CATALOG + COSTS.replace(old, new, 1)))
    assert not ModelCost.objects.exists()
