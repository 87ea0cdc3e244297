"""The price as a person reads it (catalog.display.price_summary): pure functions on unsaved rate cards."""

from __future__ import annotations

from decimal import Decimal

import pytest

from catalog.display import money_text, plain_number, price_summary, unit_label, unit_name
from catalog.models import Feature, RateCard
from metering.models import Meter

D = Decimal
ZERO = D(0)

TOKENS = Meter(pk=1, slug="llm_tokens", event_type="kong.llm_request", aggregation="SUM", value_property="$.tokens")
REQUESTS = Meter(pk=2, slug="api_requests", event_type="kong.api_request", aggregation="COUNT", value_property="")
EVENTS = Meter(pk=3, slug="jobs", event_type="job.finished", aggregation="COUNT", value_property="")
GPU = Meter(pk=4, slug="gpu", event_type="gpu.used", aggregation="SUM", value_property="$.data.gpu_seconds")
LATENCY = Meter(pk=5, slug="lat", event_type="x", aggregation="MAX", value_property="$.duration_ms")


class Tier:
    def __init__(self, up_to, unit_amount, flat_amount=ZERO):
        self.up_to, self.unit_amount, self.flat_amount = up_to, unit_amount, flat_amount


def card(meter: Meter | None = TOKENS, **fields) -> RateCard:
    feature = Feature(pk=1, key="f", name="f", meter=meter) if meter is not None else None
    return RateCard(key="rc", feature=feature, **fields)


@pytest.mark.parametrize(("meter", "plural", "singular"), [
    (TOKENS, "tokens", "token"), (REQUESTS, "requests", "request"), (EVENTS, "events", "event"),
    (GPU, "gpu seconds", "gpu second"), (LATENCY, "duration ms", "duration ms"), (None, "units", "unit"),
])
def test_the_unit_word_comes_from_the_meter(meter, plural, singular):
    assert unit_label(card(meter)) == plural
    assert unit_name(plural) == singular and unit_name(plural, 2) == plural


def test_numbers_are_normalised_and_never_rounded():
    assert plain_number(D("0.000010000000000")) == "0.00001"
    assert plain_number(D("1E+6")) == "1,000,000"
    assert plain_number(D("12345678901234567890123.123456789012345")) == (
        "12,345,678,901,234,567,890,123.123456789012345")
    assert money_text(D("0.000020000000000"), "USD") == "USD 0.00002"
    assert money_text(D("49"), "USD") == "USD 49.00"
    assert money_text(D("0.000000000000003"), "USD") == "USD 0.000000000000003"  # 15 places, not $0.00
    assert money_text(D("1234.5"), "EUR") == "EUR 1,234.50"
    assert money_text(D("5"), "JPY") == "JPY 5"
    assert money_text(D("1.5"), "KWD") == "KWD 1.500"
    assert money_text(D("1.5"), "usd") == "usd 1.5"  # an unknown code is shown as it is, never a crash
    assert money_text(None, "USD") == "USD ?"


@pytest.mark.parametrize(("fields", "cadence", "expected"), [
    ({"price_type": "unit", "unit_amount": D("0.000020000000000")}, "P1M", "USD 0.00002 per token"),
    ({"price_type": "flat", "amount": D("49"), "payment_term": "in_advance"}, "P1M",
     "USD 49.00 per month (in advance)"),
    ({"price_type": "flat", "amount": D("490.5"), "payment_term": "in_arrears"}, "P1Y",
     "USD 490.50 per year (in arrears)"),
    ({"price_type": "flat", "amount": D("10"), "payment_term": "in_arrears"}, None,
     "USD 10.00 per period (in arrears)"),
    ({"price_type": "package", "amount": D("5"), "quantity_per_package": D("1000")}, "P1M",
     "USD 5.00 per 1,000 tokens (a started package counts in full)"),
    ({"price_type": "unit", "unit_amount": D("0.00002"), "free_quantity": D("1000"), "minimum_spend": D("5"),
      "maximum_spend": D("100")}, "P1W",
     "USD 0.00002 per token (first 1,000 tokens free, minimum USD 5.00 per week, maximum USD 100.00 per week)"),
    ({"price_type": "unit", "unit_amount": D("0.00002"), "free_quantity": D("1")}, "P1D",
     "USD 0.00002 per token (first 1 token free)"),
    ({"price_type": "unit", "unit_amount": None}, "P1M", "USD ? per token"),
    ({"price_type": ""}, "P1M", "no price"),
])
def test_price_sentences(fields, cadence, expected):
    assert price_summary(card(**fields), "USD", cadence=cadence, tiers=[]) == expected


def test_package_of_requests():
    rate_card = card(REQUESTS, price_type="package", amount=D("5.00"), quantity_per_package=D(1000))
    assert price_summary(rate_card, "USD", cadence="P1M") == (
        "USD 5.00 per 1,000 requests (a started package counts in full)")


def test_graduated_tiers():
    tiers = [Tier(D(1000), D("0.01")), Tier(D(10000), D("0.005")), Tier(None, D("0.001"), D("2.00"))]
    rate_card = card(price_type="graduated", free_quantity=D(500), minimum_spend=D("5"))
    assert price_summary(rate_card, "USD", cadence="P1M", tiers=tiers) == (
        "graduated: first 1,000 tokens at USD 0.01, then up to 10,000 at USD 0.005, then USD 0.001 per token "
        "above 10,000 + USD 2.00 once reached (first 500 tokens free, minimum USD 5.00 per month)")
    assert price_summary(rate_card, "USD", cadence="P1M", tiers=[Tier(None, D("0.5"))]).startswith(
        "graduated: USD 0.50 per token")
    assert price_summary(card(price_type="graduated"), "USD", cadence="P1M", tiers=[]) == "graduated (no tiers yet)"


def test_volume_tiers():
    tiers = [Tier(D(1000), D("0.01")), Tier(None, D("0.005"), D("1"))]
    rate_card = card(REQUESTS, price_type="volume", maximum_spend=D("250"))
    assert price_summary(rate_card, "EUR", cadence="P3M", tiers=tiers) == (
        "volume (every request at the rate of the total): up to 1,000 at EUR 0.01, above 1,000 at EUR 0.005 "
        "+ EUR 1.00 (maximum EUR 250.00 per quarter)")


def test_unknown_price_type_is_named():
    assert price_summary(card(price_type="tiered"), "USD", cadence="P1M") == "unknown price type 'tiered'"
