"""Catalog as code for companion meters: ``value_absent: zero`` round-trips through billing_apply / billing_dump, a
companion is priced by its own dimensional table, bad values are file errors, and a published plan freezes it."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import CommandError, call_command

from catalog.models import Plan, RateCard
from metering.models import Meter
from tests.builders import D, ai_gateway_catalog, apply, apply_error, dump, llm_price_by_model_and_type, write

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("in_tmp_path")]

CATALOG = ai_gateway_catalog(
    meters="""\
  - {slug: llm_cache_read_tokens, name: AI Gateway Cache Read Tokens, event_type: kong.llm_request,
     aggregation: SUM, value_property: $.cache_read_tokens, value_absent: zero,
     group_by: {model: $.model, provider: $.provider, type: $.type}}
""",
    features="""\
  - {key: llm-cache-read-tokens, name: LLM cache reads, meter: llm_cache_read_tokens}
""",
    llm_card=llm_price_by_model_and_type("0.000003", "0.000012") + """\
      - key: llm-cache-read
        name: LLM cache reads
        feature: llm-cache-read-tokens
        price:
          type: dimensional
          dimensions: [model]
          rows:
            - {match: {model: gpt-4o}, price: {type: unit, unit_amount: "0.0000015"}}
""")


def meters() -> dict[str, str]:
    return dict(Meter.objects.values_list("slug", "value_absent"))


def test_value_absent_round_trips():
    apply(write(CATALOG))
    assert meters() == {"llm_tokens": "invalid", "llm_cache_read_tokens": "zero"}
    dumped = yaml.safe_load(dump())
    docs = {doc["slug"]: doc for doc in dumped["meters"]}
    assert docs["llm_cache_read_tokens"]["value_absent"] == "zero"
    assert "value_absent" not in docs["llm_tokens"]  # the default is left out
    card = next(c for c in dumped["plans"][0]["rate_cards"] if c["key"] == "llm-cache-read")
    assert card["price"]["dimensions"] == ["model"]
    write(dumped, "dumped.yaml")
    assert apply("dumped.yaml").strip().endswith("No changes.")
    assert apply(write(CATALOG)).strip().endswith("No changes.")


def test_leaving_it_out_means_invalid_and_changes_a_draft_meter():
    draft = CATALOG.replace("    billing_cadence: P1M", "    billing_cadence: P1M\n    status: draft")
    apply(write(draft))
    out = apply(write(draft.replace(" value_absent: zero,", "")))
    assert "update meter llm_cache_read_tokens" in out and "value_absent" in out
    assert meters()["llm_cache_read_tokens"] == "invalid"


@pytest.mark.parametrize(("value", "message"), [
    ("maybe", "must be one of invalid, zero, not 'maybe'"),
    ("0", "must be a string, not a number"),
    ('""', "must be one of invalid, zero, not ''"),
    ("null", "must be one of invalid, zero"),
    ("[zero]", "must be a string"),
    ("yes", "must be a string"),
])
def test_bad_values_are_file_errors(value, message):
    error = apply_error(write(CATALOG.replace("value_absent: zero", f"value_absent: {value}")))
    assert "catalog.yaml: meters[1] (llm_cache_read_tokens).value_absent" in error and message in error
    assert not Meter.objects.exists()


def test_zero_on_a_count_meter_is_refused():
    text = CATALOG.replace("aggregation: SUM, value_property: $.cache_read_tokens, value_absent: zero",
                           "aggregation: COUNT, value_absent: zero")
    error = apply_error(write(text))
    assert "meters[1] (llm_cache_read_tokens).value_absent" in error and "not COUNT" in error
    assert not Meter.objects.exists()


def test_a_published_plan_freezes_it():
    apply(write(CATALOG))
    error = apply_error(write(CATALOG.replace(" value_absent: zero,", "")))
    assert "meters[1] (llm_cache_read_tokens).value_absent: refused: meter llm_cache_read_tokens is frozen" in error
    assert meters()["llm_cache_read_tokens"] == "zero"


def test_llm_prices_fills_a_companion_rate_card_by_model():
    apply(write(CATALOG))
    out = io.StringIO()
    call_command("llm_prices", "import", "--provider", "openai", "--model", "gpt-4o", "--model", "gpt-4o-mini",
                 "--markup", "20", "--plan", "ai", "--rate-card", "llm-cache-read", "--token-type", "cache_read",
                 stdout=out)
    assert "~ llm-cache-read row model=gpt-4o: unit 0.0000015 -> 0.0000015" not in out.getvalue()  # unchanged
    assert "+ llm-cache-read row model=gpt-4o-mini: unit 0.00000009" in out.getvalue()
    draft = RateCard.objects.get(key="llm-cache-read", plan__status="draft")
    rows = {tuple(sorted(r.match.items())): r.unit_amount for r in draft.price_rows.all()}
    # genai-prices: gpt-4o cache reads 1.25 USD / M tokens, gpt-4o-mini 0.075; + 20 %
    assert rows == {(("model", "gpt-4o"),): D("0.0000015"), (("model", "gpt-4o-mini"),): D("0.00000009")}
    assert not RateCard.objects.get(key="llm", plan__status="draft").price_rows.filter(
        match__type="cache_read").exists()  # the llm table is not touched
    assert Plan.objects.get(key="ai", status="published").rate_cards.get(key="llm-cache-read").price_rows.count() == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--token-type", "cache_read"], "give --plan and --rate-card too"),
    (["--token-type", "nope", "--plan", "ai", "--rate-card", "llm-cache-read"], "invalid choice"),
    (["--token-type", "cache_write", "--plan", "ai", "--rate-card", "llm-cache-read"], "no cache_write price"),
])
def test_llm_prices_token_type_errors(args, message):
    apply(write(CATALOG))
    with pytest.raises(CommandError, match=message):
        call_command("llm_prices", "import", "--provider", "openai", "--model", "gpt-4o", *args, stdout=io.StringIO())
    assert not Plan.objects.filter(status="draft").exists()
