"""``llm_prices import``: genai-prices' price data into the cost table and a dimensional price table, per token,
exactly, with a markup; a diff first; published versions never rewritten."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from catalog.models import ModelCost, Plan, PriceRow
from catalog.services.llm_prices import per_token, with_markup
from tests.builders import D, llm_plan

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("llm_prices", "import", *args, stdout=out)
    return out.getvalue()


def test_per_million_becomes_per_token_exactly():
    assert per_token(Decimal("2.5")) == Decimal("0.0000025")
    assert per_token(Decimal("0.075")) == Decimal("0.000000075")
    assert per_token(1.5) is None  # never a float


def test_markup_is_exact_or_refused():
    assert with_markup(D("0.0000025"), D(20)) == D("0.000003")
    assert with_markup(D("0.0000025"), D("12.5")) == D("0.0000028125")
    assert with_markup(D("0.000000075"), D(0)) == D("0.000000075")
    with pytest.raises(ValueError, match="more than 15 decimal places"):
        with_markup(D("0.000000075"), D("33.333333333"))


def test_import_fills_the_cost_table_and_the_draft_price_table_with_markup():
    llm_plan()
    out = run("--provider", "openai", "--model", "gpt-4o", "--model", "gpt-4o-mini", "--markup", "20",
              "--plan", "llm", "--rate-card", "llm")
    assert "+ cost openai/gpt-4o request: 0.0000025" in out
    assert "~ llm row model=gpt-4o, type=request: unit 0.0000025 -> 0.000003" in out
    assert "+ llm row model=gpt-4o-mini, type=cache_read: unit 0.00000009" in out
    cost = ModelCost.objects.get(provider="openai", model="gpt-4o", token_type="response")
    assert (cost.cost_per_token, cost.source) == (D("0.00001"), "genai-prices")
    published, draft = Plan.objects.get(key="llm", status="published"), Plan.objects.get(key="llm", status="draft")
    assert published.rate_cards.get().price_rows.get(match={"model": "gpt-4o", "type": "request"}).unit_amount \
        == D("0.0000025")  # the published version is never rewritten
    rows = {tuple(sorted(r.match.items())): r.unit_amount for r in draft.rate_cards.get().price_rows.all()}
    assert rows[(("model", "gpt-4o"), ("type", "request"))] == D("0.000003")
    assert rows[(("model", "gpt-4o"), ("type", "response"))] == D("0.000012")
    assert rows[(("model", "gpt-4o-mini"),)] == D("0.00000015")  # the hand-made row is kept
    assert rows[(("model", "gpt-4o-mini"), ("type", "response"))] == D("0.00000072")
    assert "publish it" in out
    assert run("--provider", "openai", "--model", "gpt-4o", "--markup", "20", "--plan", "llm",
               "--rate-card", "llm").startswith("No changes.")


def test_dry_run_writes_nothing():
    llm_plan()
    out = run("--provider", "anthropic", "--dry-run", "--plan", "llm", "--rate-card", "llm")
    assert "Dry run" in out and "+ cost anthropic/" in out
    assert not ModelCost.objects.exists() and Plan.objects.count() == 1


def test_scheduled_import_adds_rows_to_the_published_version():
    llm_plan()
    run("--provider", "openai", "--model", "gpt-4o", "--markup", "10", "--plan", "llm", "--rate-card", "llm",
        "--effective-from", "2099-01-01T00:00:00Z")
    scheduled = PriceRow.objects.filter(rate_card__plan__status="published", effective_from__isnull=False)
    assert {r.match["type"]: r.unit_amount for r in scheduled if r.match["type"] in ("request", "response")} == {
        "request": D("0.00000275"), "response": D("0.000011")}
    assert Plan.objects.count() == 1


@pytest.mark.parametrize(("args", "message"), [
    (("--provider", "nobody"), "unknown provider"),
    (("--provider", "openai", "--model", "gpt-0"), "no price for model"),
    (("--markup", "lots"), "--markup must be a percentage"),
    (("--markup", "-101"), "between -100"),
    (("--markup", "NaN"), "between -100"),
    (("--plan", "llm"), "go together"),
    (("--plan", "nope", "--rate-card", "llm"), "no rate card"),
    (("--provider", "openai\x00"), "NUL"),
    (("--provider", "openai", "--model", "gpt-4o", "--effective-from", "yesterday"), "effective-from"),
    (("--provider", "openai", "--model", "gpt-4o", "--plan", "llm", "--rate-card", "llm",
      "--effective-from", "2000-01-01T00:00:00Z"), "future"),
])
def test_hostile_arguments_are_refused_and_nothing_is_written(args, message):
    llm_plan()
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not ModelCost.objects.exists() and Plan.objects.count() == 1
