"""Provider prices from a maintained source: the genai-prices package's bundled price data.

``provider_prices`` reads what each model of the chosen providers costs per token type (input → ``request``,
output → ``response``, cache read → ``cache_read``, cache write → ``cache_write``), converting genai-prices' USD
per million tokens to per-token decimals exactly (a shift of six decimal places, never a float). Of prices that
change on a date the one in effect at ``at`` is taken; of tiered prices the base price (below the first tier).

``llm_prices_import`` writes them, after a diff:

- always into the **cost table** (:class:`catalog.models.ModelCost`, what each model costs us; read by margins);
- with a plan and a dimensional rate card, into its **price table** as rows matching ``{model, type}`` (plus
  ``provider`` when the table has that dimension) priced at cost × (1 + markup %), exactly: a row of the same
  match is updated, hand-made rows are kept, new models are appended. A published plan is never rewritten: the
  rows go to its draft version (made when missing; publish it to take effect), or, with ``effective_from``, are
  scheduled on the published version.

With ``token_type`` (e.g. ``cache_read``) the price table is that of a meter counting one token type (a companion
of ``llm_tokens`` such as ``llm_cache_read_tokens``): only that type's prices become rows, matching ``{model}``
(plus ``provider``), and the table needs only the ``model`` dimension.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, localcontext

from django.db import transaction
from genai_prices import types as genai_types
from genai_prices.data import providers as genai_providers

from ..models import ModelCost, Plan, RateCard
from .plans import PlanError, PriceRowSpec, plan_new_version, price_row_model, price_rows_schedule

SOURCE = "genai-prices"
TOKEN_TYPES = {  # genai-prices field → the llm_tokens meter's `type` value
    "input_mtok": "request",
    "output_mtok": "response",
    "cache_read_mtok": "cache_read",
    "cache_write_mtok": "cache_write",
}
MAX_PLACES = 15  # PreciseDecimalField


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


class LlmPricesError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class ProviderPrice:
    provider: str
    model: str
    token_type: str
    per_token: Decimal  # USD


def known_providers() -> list[str]:
    return sorted(provider.id for provider in genai_providers)


def _model_price(model: genai_types.ModelInfo, at: dt.datetime) -> genai_types.ModelPrice | None:
    prices = model.prices
    if isinstance(prices, genai_types.ModelPrice):
        return prices
    chosen = prices[0].prices if prices else None
    for conditional in prices:  # the last active one wins (genai-prices' rule)
        if conditional.constraint is None or conditional.constraint.active(at):
            chosen = conditional.prices
    return chosen


def per_token(per_million: object) -> Decimal | None:
    """USD per million tokens → per token, exactly; tiered prices give their base price."""
    if isinstance(per_million, genai_types.TieredPrices):
        per_million = per_million.base
    if isinstance(per_million, bool) or not isinstance(per_million, Decimal | int):
        return None
    return Decimal(per_million).scaleb(-6)


def provider_prices(*, providers: list[str] | None = None, models: list[str] | None = None,
                    at: dt.datetime) -> list[ProviderPrice]:
    """The per-token prices of the providers' models (all providers when None; only these model ids when given)."""
    unknown = sorted(set(providers or []) - set(known_providers()))
    if unknown:
        raise LlmPricesError([f"unknown provider {name!r} (genai-prices knows: {', '.join(known_providers())})"
                              for name in unknown])
    found: list[ProviderPrice] = []
    for provider in genai_providers:
        if providers and provider.id not in providers:
            continue
        for model in provider.models:
            if models and model.id not in models:
                continue
            price = _model_price(model, at)
            if price is None:
                continue
            for field, token_type in TOKEN_TYPES.items():
                value = per_token(getattr(price, field, None))
                if value is not None:
                    found.append(ProviderPrice(provider.id, model.id, token_type, value))
    missing = sorted(set(models or []) - {p.model for p in found})
    if missing:
        raise LlmPricesError([f"no price for model {name!r} in genai-prices (of the chosen providers)"
                              for name in missing])
    return found


def with_markup(cost: Decimal, markup_percent: Decimal) -> Decimal:
    """``cost × (1 + markup / 100)``, exactly; refused when it needs more than 15 decimal places."""
    with localcontext() as ctx:
        ctx.prec = 60
        value = cost * (Decimal(100) + markup_percent) / Decimal(100)
        exact = value.quantize(Decimal(1).scaleb(-MAX_PLACES))
    if exact != value:
        raise LlmPricesError([f"{format(cost, 'f')} × (1 + {markup_percent}%) = {format(value, 'f')} needs more "
                              f"than {MAX_PLACES} decimal places"])
    return value


@dataclass
class ImportPlan:
    """What an import would change: lines of the diff, and what to write."""

    lines: list[str]
    costs: list[ProviderPrice]
    rows: list[PriceRowSpec]
    rate_card: RateCard | None


def _row_match(price: ProviderPrice, dimensions: list[str], *, by_type: bool = True) -> dict[str, str]:
    match = {"model": price.model, "type": price.token_type} if by_type else {"model": price.model}
    if "provider" in dimensions:
        match["provider"] = price.provider
    return match


def import_preview(*, prices: list[ProviderPrice], markup: Decimal = Decimal(0), plan_key: str | None = None,
                   rate_card_key: str | None = None, token_type: str | None = None) -> ImportPlan:
    """The diff of an import (nothing written). ``token_type``: the rate card prices one token type (its rows
    match the model only)."""
    if token_type is not None and token_type not in TOKEN_TYPES.values():
        raise LlmPricesError([f"unknown token type {token_type!r} (known: {', '.join(TOKEN_TYPES.values())})"])
    if token_type is not None and not (plan_key and rate_card_key):
        raise LlmPricesError(["--token-type chooses the prices of a rate card: give --plan and --rate-card too"])
    lines: list[str] = []
    costs = {(c.provider, c.model, c.token_type): c.cost_per_token for c in ModelCost.objects.all()}
    for price in prices:
        old = costs.get((price.provider, price.model, price.token_type))
        where = f"cost {price.provider}/{price.model} {price.token_type}"
        if old is None:
            lines.append(f"+ {where}: {_text(price.per_token)}")
        elif old != price.per_token:
            lines.append(f"~ {where}: {_text(old)} -> {_text(price.per_token)}")
    rows: list[PriceRowSpec] = []
    rate_card = None
    if plan_key or rate_card_key:
        if not (plan_key and rate_card_key):
            raise LlmPricesError(["--plan and --rate-card go together"])
        plan = (Plan.objects.filter(key=plan_key).exclude(status=Plan.Status.ARCHIVED)
                .order_by("-version").first())
        rate_card = plan.rate_cards.filter(key=rate_card_key).first() if plan is not None else None
        if rate_card is None:
            raise LlmPricesError([f"no rate card {rate_card_key!r} in a published or draft version of plan "
                                  f"{plan_key!r}"])
        if rate_card.price_type != RateCard.PriceType.DIMENSIONAL:
            raise LlmPricesError([f"rate card {rate_card_key} does not have a dimensional price"])
        missing = ({"model", "type"} if token_type is None else {"model"}) - set(rate_card.dimensions or [])
        if missing:
            raise LlmPricesError([f"rate card {rate_card_key} is not keyed by {', '.join(sorted(missing))}"])
        priced = prices if token_type is None else [p for p in prices if p.token_type == token_type]
        if token_type is not None and not priced:
            raise LlmPricesError([f"no {token_type} price for the chosen models in genai-prices"])
        current = {tuple(sorted(row.match.items())): row for row in rate_card.price_rows.all()
                   if not row.is_default and row.effective_from is None}
        for price in priced:
            match = _row_match(price, rate_card.dimensions, by_type=token_type is None)
            amount = with_markup(price.per_token, markup)
            row = current.get(tuple(sorted(match.items())))
            label = ", ".join(f"{k}={v}" for k, v in sorted(match.items()))
            if row is None:
                lines.append(f"+ {rate_card_key} row {label}: unit {_text(amount)}")
            elif row.price_type != "unit" or row.unit_amount != amount:
                was = _text(row.unit_amount) if row.price_type == "unit" and row.unit_amount is not None \
                    else row.price_type
                lines.append(f"~ {rate_card_key} row {label}: unit {was} -> {_text(amount)}")
            else:
                continue
            rows.append(PriceRowSpec(match=match, price_type="unit", unit_amount=amount))
    return ImportPlan(lines, prices, rows, rate_card)


@transaction.atomic
def llm_prices_import(*, plan: ImportPlan, effective_from: dt.datetime | None = None,
                      now: dt.datetime) -> RateCard | None:
    """Write an import: the cost table, then the price rows (into the plan's draft, made when missing, or
    scheduled on the published version from ``effective_from``). Returns the rate card written to."""
    for price in plan.costs:
        ModelCost.objects.update_or_create(
            provider=price.provider, model=price.model, token_type=price.token_type,
            defaults={"cost_per_token": price.per_token, "currency": "USD", "source": SOURCE})
    rate_card = plan.rate_card
    if rate_card is None or not plan.rows:
        return rate_card
    if effective_from is not None:
        if rate_card.plan.status != Plan.Status.PUBLISHED:
            raise PlanError(["--effective-from schedules rows on a published plan version"])
        scheduled = [PriceRowSpec(**{**row.__dict__, "effective_from": effective_from}) for row in plan.rows]
        price_rows_schedule(rate_card=rate_card, rows=scheduled, now=now)
        return rate_card
    draft = rate_card.plan if rate_card.plan.is_editable else plan_new_version(plan=rate_card.plan)
    target = draft.rate_cards.select_for_update().get(key=rate_card.key)
    existing = {tuple(sorted(row.match.items())): row for row in target.price_rows.all()
                if not row.is_default and row.effective_from is None}
    position = target.price_rows.count()
    for spec in plan.rows:
        row = existing.get(tuple(sorted(spec.match.items())))
        if row is not None:
            row.price_type, row.unit_amount, row.amount, row.quantity_per_package, row.tiers = (
                "unit", spec.unit_amount, None, None, [])
            row.save(update_fields=["price_type", "unit_amount", "amount", "quantity_per_package", "tiers"])
        else:
            price_row_model(target, position, spec).save()
            position += 1
    return target
