"""Prepaid credits on invoices: which grants pay which lines of a cycle's invoice, as "Credits applied" lines.

Credits pay the eligible lines of the invoice (a grant's ``applies_to`` features, or every charge), grants in
order of priority, then earliest expiry, then oldest (:func:`credits.selectors.credits_plan`), never more than
the invoice's net total, so no invoice goes below zero. The close writes the burns in the invoice's transaction
(:func:`invoicing.services.lifecycle.invoice_create`); a void returns them; a reissue burns again. The lines never
count as billed for the re-rating rule (``billed_items`` leaves them out): credits pay what was billed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from catalog.money import format_major
from credits.models import CreditGrant
from credits.selectors import Payable, credits_plan, payable_grants
from customers.models import Subscription

from ..models import InvoiceLine
from .lines import DraftLine

CREDITS_APPLIED = InvoiceLine.Kind.CREDITS_APPLIED


@dataclass
class CreditsLine:
    """A drafted "Credits applied" line: one per grant paying lines of the invoice (negative amount)."""

    subscription: Subscription
    grant: CreditGrant
    description: str
    period_start: dt.datetime
    period_end: dt.datetime
    amount: int
    kind: str = CREDITS_APPLIED
    quantity: Decimal = Decimal(1)
    unit_price: Decimal | None = None
    rated_quantity: Decimal | None = None
    rate_card: Any = None
    tiers: list[dict[str, Any]] = field(default_factory=list)


def credits_description(grant: CreditGrant, amount: int) -> str:
    what = grant.description or grant.get_source_display().lower() + " credits"
    return f"Credits applied — {what} (grant #{grant.pk}): {format_major(amount, grant.currency)} {grant.currency}"


def invoice_credits(subscription: Subscription, lines: Sequence[DraftLine], *, now: dt.datetime,
                    period_start: dt.datetime, period_end: dt.datetime) -> list[CreditsLine]:
    """The "Credits applied" lines for these invoice lines, from the customer's usable grants at ``now`` (a read:
    the close writes the burns with the invoice)."""
    if not lines:
        return []
    payables = [Payable(line.rate_card.feature.key if line.rate_card.feature_id and line.rate_card.feature else None,
                        line.amount, line.period_start, line.period_end) for line in lines]
    uses = credits_plan(payable_grants(subscription.customer_id, now), payables, at=now)
    return [CreditsLine(subscription, use.grant, credits_description(use.grant, use.amount), period_start,
                        period_end, -use.amount) for use in uses]
