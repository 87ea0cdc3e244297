"""The invoice a customer would get now: the same lines the close will compute (the re-rating rule), unsaved."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from customers.models import Customer
from customers.selectors import active_subscriptions

from ..services.credits import CreditsLine, invoice_credits
from ..services.cycles import cycle_at
from ..services.lines import DraftLine, Unpriced, cycle_bill, split_credits


@dataclass(frozen=True)
class Preview:
    customer: Customer
    currency: str
    period_start: dt.datetime | None
    period_end: dt.datetime | None
    lines: list[DraftLine | CreditsLine]  # priced lines, then the prepaid credits that would pay them
    credits: list[DraftLine]  # credits too large for the invoice: they will be issued as credit notes
    unpriced: list[Unpriced] = field(default_factory=list)  # usage no row of a dimensional price prices

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)


def invoice_preview(*, customer: Customer, at: dt.datetime) -> Preview:
    """The invoice the customer would get for the period running at ``at``: usage so far, the in-advance fees
    of the next period, credits and late usage, as the close will compute them. Nothing is saved.

    A customer with several subscriptions gets their lines together; the period spans them."""
    lines: list[DraftLine] = []
    credits: list[DraftLine] = []
    unpriced: list[Unpriced] = []
    starts, ends = [], []
    subscriptions = list(active_subscriptions(customer, at).select_related("previous__plan", "next"))
    for subscription in subscriptions:
        cycle = cycle_at(subscription, at)
        if cycle is None:
            continue
        bill = cycle_bill(subscription, cycle, usage_until=at, now=at)
        invoice_lines, credit_lines = split_credits(bill.lines)
        unpriced += bill.unpriced
        lines += invoice_lines
        credits += credit_lines
        starts.append(cycle.invoice_period.start)
        ends.append(cycle.invoice_period.end)
    start, end = min(starts) if starts else None, max(ends) if ends else None
    applied: list[CreditsLine] = []
    if lines and start is not None and end is not None:
        applied = invoice_credits(subscriptions[0], lines, now=at, period_start=start, period_end=end)
    return Preview(customer, customer.currency, start, end, [*lines, *applied], credits,
                   unpriced)


