"""Registries higher layers fill at app-ready time, so customers asks them without importing them.

``invoicing`` sits above ``customers``: only it knows which invoices billed which usage. Before the start or
the end of a subject's mapping moves, the attribution services ask every registered guard
``guard(attribution, new_start, new_end) -> str | None``; a string is the reason the change is refused
(e.g. which issued invoice billed usage in the part of time the change moves).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import SubjectAttribution

AttributionChangeGuard = Callable[["SubjectAttribution", dt.datetime | None, dt.datetime | None], str | None]
_attribution_change_guards: list[AttributionChangeGuard] = []


def register_attribution_change_guard(guard: AttributionChangeGuard) -> None:
    """Register a guard once (registering the same function again is a no-op)."""
    if guard not in _attribution_change_guards:
        _attribution_change_guards.append(guard)


def attribution_change_refusals(
    attribution: SubjectAttribution, new_start: dt.datetime | None, new_end: dt.datetime | None
) -> list[str]:
    """Every registered guard's reason to refuse moving ``attribution`` to ``[new_start, new_end)``."""
    if (attribution.start, attribution.end) == (new_start, new_end):
        return []
    return [problem for guard in _attribution_change_guards if (problem := guard(attribution, new_start, new_end))]


# --- prepaid credits, for the entitlement check ------------------------------------------------------------
# ``credits`` sits above ``customers``: it registers ``provider(customer_id, at) -> balance`` (minor units of the
# customer's currency) here, so a ``credit_only`` or ``credit_then_invoice`` entitlement can read it; the pending
# usage the check subtracts is customers' own (:func:`customers.selectors.pending_usage`). With it, the same rule as
# ``subquery(customer_sql)``: a scalar subquery of that customer's balance at ``%(at)s``, which the gateway's check
# reads in its customer statement instead of a statement of its own.

CreditProvider = Callable[[int, dt.datetime], int]
_credit_providers: list[tuple[CreditProvider, Callable[[str], str]]] = []


def register_credit_provider(provider: CreditProvider, subquery: Callable[[str], str]) -> None:
    _credit_providers[:] = [(provider, subquery)]


def credit_balance_of(customer_id: int, at: dt.datetime) -> int | None:
    """The customer's live prepaid credit balance; None when no credits app is installed."""
    if not _credit_providers:
        return None
    return _credit_providers[0][0](customer_id, at)


def credit_balance_sql(customer_sql: str) -> str | None:
    """SQL of the live balance of the customer whose id is ``customer_sql``, at ``%(at)s``; None without a credits
    app."""
    if not _credit_providers:
        return None
    return _credit_providers[0][1](customer_sql)


# --- ended periods not billed yet, for pending usage ------------------------------------------------------------
# ``invoicing`` knows which cycles are closed: it registers ``provider(customer_id, at) -> [(Grant, Period, cycle)]``,
# the customer's periods that ended by ``at`` and whose usage no invoice has billed yet, each with the cycle whose
# close will bill it (a hashable key), and ``any_done([cycle]) -> bool``, whether any of those cycles is done now.

_unbilled_providers: list[tuple[Callable[[int, dt.datetime], list[Any]], Callable[[list[Any]], bool]]] = []


def register_unbilled_periods(provider: Callable[[int, dt.datetime], list[Any]],
                              any_done: Callable[[list[Any]], bool]) -> None:
    _unbilled_providers[:] = [(provider, any_done)]


def unbilled_periods_of(customer_id: int, at: dt.datetime) -> list[Any]:
    """``[(Grant, Period, cycle)]``: ended periods whose usage is not billed yet; empty without an invoicing app."""
    return _unbilled_providers[0][0](customer_id, at) if _unbilled_providers else []


def any_unbilled_cycle_done(cycles: list[Any]) -> bool:
    """Whether any of these cycles (of :func:`unbilled_periods_of`) has been closed since."""
    return _unbilled_providers[0][1](cycles) if _unbilled_providers and cycles else False


# --- more sections of catalog as code --------------------------------------------------------------------------
# ``billing_apply`` / ``billing_dump`` belong to customers; a higher app (credits: ``credit_grants``) adds a top-level
# section: ``apply(problems, entries, lines, now)`` checks and applies its entries inside the apply's transaction,
# after customers and subscriptions (problems it adds roll everything back); ``dump()`` returns its entries.


@dataclass(frozen=True)
class ApplySection:
    name: str
    apply: Callable[[Any, list, list[str], dt.datetime], None]
    dump: Callable[[], list[dict[str, Any]]]


_apply_sections: dict[str, ApplySection] = {}


def register_apply_section(section: ApplySection) -> None:
    _apply_sections[section.name] = section


def apply_sections() -> list[ApplySection]:
    return list(_apply_sections.values())
