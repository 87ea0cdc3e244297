"""``python manage.py llm_prices import [--provider openai --provider anthropic …] [--model gpt-4o …]
[--markup PERCENT] [--plan KEY --rate-card KEY [--token-type TYPE]] [--effective-from ISO8601] [--dry-run]``.

Reads the genai-prices package's bundled price data (USD per million tokens → per token, exactly), shows the diff,
then fills the cost table and, with ``--plan``/``--rate-card``, the dimensional price table (price = cost ×
(1 + markup %); with ``--token-type cache_read`` only that token type's prices, as rows by model, for a rate card
on a companion meter such as ``llm_cache_read_tokens``): into the plan's draft version (made when missing), or
scheduled on the published version from ``--effective-from``. ``--dry-run`` shows the diff and writes nothing.
See :mod:`catalog.services.llm_prices`.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from catalog.services.llm_prices import (
    TOKEN_TYPES,
    LlmPricesError,
    import_preview,
    llm_prices_import,
    provider_prices,
)
from catalog.services.plans import PlanError
from common.problems import Problem
from metering.api.params import parse_rfc3339

MAX_MARKUP = Decimal(100_000)


def _markup(value: str | None) -> Decimal:
    if value is None:
        return Decimal(0)
    try:
        markup = Decimal(value.strip().removesuffix("%"))
    except (InvalidOperation, ValueError):
        raise CommandError(f"--markup must be a percentage, e.g. 20 or 12.5, not {value!r}") from None
    if not markup.is_finite() or markup < -100 or markup > MAX_MARKUP:
        raise CommandError(f"--markup must be between -100 and {MAX_MARKUP} percent, not {value!r}")
    return markup


class Command(BaseCommand):
    help = "Import LLM provider prices from genai-prices into the cost table and a dimensional price table."

    def add_arguments(self, parser):
        parser.add_argument("action", choices=["import"])
        parser.add_argument("--provider", action="append", help="A genai-prices provider id (repeatable; default: "
                                                                "all).")
        parser.add_argument("--model", action="append", help="Only this model id (repeatable).")
        parser.add_argument("--markup", help="Price = cost × (1 + PERCENT / 100); default 0.")
        parser.add_argument("--plan", help="The plan whose dimensional rate card gets the rows.")
        parser.add_argument("--rate-card", dest="rate_card", help="That rate card's key.")
        parser.add_argument("--token-type", dest="token_type", choices=sorted(TOKEN_TYPES.values()),
                            help="The rate card prices this token type only (a companion meter of llm_tokens, "
                                 "e.g. llm_cache_read_tokens → cache_read): its rows match the model only.")
        parser.add_argument("--effective-from", dest="effective_from",
                            help="Schedule the changed rows on the published version from this RFC 3339 time.")
        parser.add_argument("--dry-run", dest="dry_run", action="store_true", help="Show the diff, write nothing.")

    def handle(self, *args, **options):
        for name in ("provider", "model"):
            for value in options.get(name) or []:
                if "\x00" in value:
                    raise CommandError(f"--{name} must not contain NUL characters")
        for name in ("markup", "plan", "rate_card", "effective_from"):
            if options.get(name) is not None and "\x00" in options[name]:
                raise CommandError(f"--{name.replace('_', '-')} must not contain NUL characters")
        markup = _markup(options.get("markup"))
        now = timezone.now()
        try:
            effective_from = (parse_rfc3339("--effective-from", options["effective_from"])
                              if options.get("effective_from") else None)
        except Problem as exc:
            raise CommandError(str(exc.detail)) from exc
        try:
            prices = provider_prices(providers=options.get("provider"), models=options.get("model"), at=now)
            plan = import_preview(prices=prices, markup=markup, plan_key=options.get("plan"),
                                  rate_card_key=options.get("rate_card"), token_type=options.get("token_type"))
        except LlmPricesError as exc:
            raise CommandError("; ".join(exc.problems)) from exc
        for line in plan.lines:
            self.stdout.write(line)
        if not plan.lines:
            self.stdout.write("No changes.")
        if options["dry_run"]:
            self.stdout.write(f"Dry run: {len(plan.lines)} change(s), nothing written.")
            return
        try:
            rate_card = llm_prices_import(plan=plan, effective_from=effective_from, now=now)
        except (PlanError, LlmPricesError) as exc:
            raise CommandError("; ".join(exc.problems)) from exc
        summary = f"Imported {len(prices)} provider price(s) into the cost table"
        if rate_card is not None and plan.rows:
            where = (f"scheduled from {effective_from.isoformat()} on" if effective_from is not None
                     else "written to")
            summary += (f"; {len(plan.rows)} row(s) {where} {rate_card.plan.key} v{rate_card.plan.version} / "
                        f"{rate_card.key}")
            if effective_from is None and rate_card.plan.is_editable:
                summary += " (a draft: publish it to take effect)"
        self.stdout.write(summary + ".")
