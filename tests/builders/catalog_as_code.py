"""Catalog-as-code files and the commands that read and write them (``billing_apply``, ``billing_dump``). The
files are written in the current directory: tests chdir to their ``tmp_path`` first, so messages start with the
bare file name."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import yaml
from django.core.management import CommandError, call_command

from catalog.models import Feature, Plan, PriceTier, RateCard
from customers.models import Customer, SubjectAttribution, Subscription, SubscriptionEvent
from metering.models import Meter

__all__ = ["CATALOG_EXAMPLE", "catalog_example", "write", "apply", "apply_error", "dump", "DELETE", "change_at",
           "snapshot", "EMPTY", "ai_gateway_catalog", "llm_price_by_model_and_type"]

# The example catalog: meters, features, plans, customers and subscriptions.
CATALOG_EXAMPLE = Path(__file__).resolve().parents[1] / "customers" / "fixtures" / "catalog.yaml"


def ai_gateway_catalog(*, meters: str = "", features: str = "", llm_card: str) -> str:
    """A catalog file as people write it (flow style): the Kong AI Gateway's token meter ``llm_tokens`` and feature
    ``llm-tokens``, each followed by ``meters`` and ``features`` (more list items), and plan "ai" (USD, monthly)
    whose rate card "llm" for llm-tokens goes on with ``llm_card`` (its price, indented by eight spaces, and any
    further rate cards)."""
    return f"""
meters:
  - {{slug: llm_tokens, name: AI Gateway Tokens, event_type: kong.llm_request, aggregation: SUM,
     value_property: $.tokens, group_by: {{model: $.model, provider: $.provider, type: $.type}}}}
{meters}features:
  - {{key: llm-tokens, name: LLM tokens, meter: llm_tokens}}
{features}plans:
  - key: ai
    name: AI gateway
    currency: USD
    billing_cadence: P1M
    rate_cards:
      - key: llm
        name: LLM tokens
        feature: llm-tokens
{llm_card}"""


def llm_price_by_model_and_type(request: str, response: str) -> str:
    """The start of a dimensional price for ``ai_gateway_catalog``'s ``llm_card`` (indented as it wants), by
    ``[model, type]``: its first rows price gpt-4o's request and response tokens at these unit amounts. More rows
    (indented as these), ``default`` or further rate cards may follow."""
    return f"""\
        price:
          type: dimensional
          dimensions: [model, type]
          rows:
            - {{match: {{model: gpt-4o, type: request}},  price: {{type: unit, unit_amount: "{request}"}}}}
            - {{match: {{model: gpt-4o, type: response}}, price: {{type: unit, unit_amount: "{response}"}}}}
"""


def catalog_example() -> dict:
    return copy.deepcopy(yaml.safe_load(CATALOG_EXAMPLE.read_text()))


def write(doc_or_text: dict | str, name: str = "catalog.yaml") -> str:
    text = doc_or_text if isinstance(doc_or_text, str) else yaml.safe_dump(doc_or_text, sort_keys=False)
    Path(name).write_text(text)
    return name


def apply(name: str = "catalog.yaml", *args: str) -> str:
    out = io.StringIO()
    call_command("billing_apply", name, *args, stdout=out)
    return out.getvalue()


def apply_error(name: str = "catalog.yaml", *args: str) -> str:
    with pytest.raises(CommandError) as info:
        apply(name, *args)
    return str(info.value)


def dump(*args: str) -> str:
    out = io.StringIO()
    call_command("billing_dump", *args, stdout=out)
    return out.getvalue()


DELETE = object()


def change_at(path: str, value):
    """A change to a document at ``a.0.b`` (``DELETE`` removes the key)."""

    def change(doc):
        *parents, last = path.split(".")
        target = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return change


def snapshot() -> dict:
    """Every row billing_apply may write, with the columns a change would touch."""
    return {
        "meters": list(Meter.objects.order_by("id").values_list("id", "updated_at", "definition_version")),
        "features": list(Feature.objects.order_by("id").values_list("id", "updated_at")),
        "plans": list(Plan.objects.order_by("id").values_list("id", "version", "status", "published_at",
                                                                "archived_at")),
        "rate_cards": list(RateCard.objects.order_by("id").values_list("id", flat=True)),
        "tiers": list(PriceTier.objects.order_by("id").values_list("id", flat=True)),
        "customers": list(Customer.objects.order_by("id").values_list("id", "updated_at")),
        "attributions": list(SubjectAttribution.objects.order_by("id").values_list("id", "start", "end")),
        "subscriptions": list(Subscription.objects.order_by("id").values_list("id", "plan_id", "start",
                                                                               "billing_anchor", "cancel_at")),
        "subscription_events": SubscriptionEvent.objects.count(),
    }


EMPTY = {"meters": [], "features": [], "plans": [], "rate_cards": [], "tiers": [], "customers": [],
         "attributions": [], "subscriptions": [], "subscription_events": 0}
