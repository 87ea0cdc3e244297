"""Which cycles a subscription has, when each is due, and which subscriptions' periods a cycle may bill.

Cycle ``k`` closes at boundary ``k``: the subscription's start for k = 0, else the end of period ``k − 1``. Its
own periods are period ``k − 1`` (usage and in-arrears fees, after the grace period) and period ``k`` (in-advance
fees). A subscription that a plan change replaced (``Subscription.next``) has no cycle at or after the change:
its last usage and unused in-advance fees are billed by the new subscription's first cycle, which waits for the
grace period too, so a plan change gives one invoice. A subscription that ended on its own keeps *settling*
cycles at its later boundaries for as long as its periods are within the late-usage lookback: they have no periods
of their own and only bill what late usage (or a void) left missing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings

from customers.models import Subscription
from customers.periods import Period, boundary, index_at, periods_between


@dataclass(frozen=True)
class Cycle:
    index: int
    boundary: dt.datetime
    previous: Period | None  # its own period billed in arrears
    next: Period | None  # its own period billed in advance
    waits_for_grace: bool = False
    settles: Period | None = None  # a settling cycle after the end: the subscription's last period

    def due_at(self, grace: dt.timedelta) -> dt.datetime:
        return self.boundary + grace if (self.previous is not None or self.waits_for_grace) else self.boundary

    @property
    def invoice_period(self) -> Period:
        period = self.previous or self.next or self.settles
        assert period is not None
        return period


def grace_period() -> dt.timedelta:
    return dt.timedelta(seconds=settings.INVOICE_GRACE_PERIOD_SECONDS)


def lookback_cutoff(now: dt.datetime) -> dt.datetime:
    """Periods ending at or before this are outside the late-usage lookback (measured from the period's end)."""
    return now - dt.timedelta(days=settings.INVOICE_LATE_USAGE_LOOKBACK_DAYS)


def subscription_periods(subscription: Subscription, *, until: dt.datetime) -> list[Period]:
    """The subscription's periods that begin before ``until`` (the last one may still be running)."""
    return periods_between(
        subscription.billing_anchor, subscription.plan.billing_cadence, subscription.start, subscription.cancel_at,
        until=until,
    )


def _runs(subscription: Subscription) -> bool:
    """Not canceled before it began (such a subscription has no periods and no cycles)."""
    return subscription.cancel_at is None or subscription.cancel_at > subscription.start


def replaced_at(subscription: Subscription) -> dt.datetime | None:
    """Where a plan change replaced this subscription by its ``next`` one (whose first cycle bills the rest)."""
    successor = getattr(subscription, "next", None)
    if (successor is not None and subscription.cancel_at is not None and successor.start == subscription.cancel_at
            and _runs(successor)):
        return subscription.cancel_at
    return None


def _replaced(subscription: Subscription) -> Subscription | None:
    """The subscription this one replaced by a plan change, if it did."""
    previous = subscription.previous
    if previous is not None and previous.cancel_at == subscription.start and _runs(subscription):
        return previous
    return None


def subscription_cycles(subscription: Subscription, *, until: dt.datetime) -> list[Cycle]:
    """Every cycle whose boundary is at or before ``until``, in order."""
    periods = subscription_periods(subscription, until=until + dt.timedelta(microseconds=1))
    cutover = replaced_at(subscription)
    if not periods:
        # Canceled at (or before) its start: nothing of its own to bill, but what its first cycle may have billed
        # at that very instant must still be settled.
        if subscription.cancel_at is not None and cutover is None and subscription.start <= until:
            nothing = Period(-1, subscription.cancel_at, subscription.cancel_at, subscription.cancel_at,
                             subscription.cancel_at)
            return _settling_cycles(subscription, nothing, first_index=1, until=until)
        return []
    cycles = [Cycle(0, periods[0].start, None, periods[0], waits_for_grace=_replaced(subscription) is not None)]
    for index, period in enumerate(periods, start=1):
        if period.end > until or (cutover is not None and period.end >= cutover):
            return cycles
        following = periods[index] if index < len(periods) else None  # starts at the boundary, so listed
        cycles.append(Cycle(index, period.end, period, following))
    if subscription.cancel_at is not None and cutover is None and len(cycles) == len(periods) + 1:
        cycles += _settling_cycles(subscription, periods[-1], first_index=len(cycles), until=until)
    return cycles


def _settling_cycles(subscription: Subscription, last: Period, *, first_index: int,
                     until: dt.datetime) -> list[Cycle]:
    """After the end: one cycle at each later boundary of the anchor while the last period is in the lookback."""
    cadence = subscription.plan.billing_cadence
    horizon = last.end + dt.timedelta(days=settings.INVOICE_LATE_USAGE_LOOKBACK_DAYS)
    index = index_at(subscription.billing_anchor, cadence, last.end) + 1
    cycles: list[Cycle] = []
    while True:
        at = boundary(subscription.billing_anchor, cadence, index)
        if at > until or at >= horizon:
            return cycles
        cycles.append(Cycle(first_index + len(cycles), at, None, None, waits_for_grace=True, settles=last))
        index += 1


def cycle_at(subscription: Subscription, at: dt.datetime) -> Cycle | None:
    """The cycle that will close the period running at ``at`` (for previews)."""
    periods = subscription_periods(subscription, until=at + dt.timedelta(microseconds=1))
    if not periods or periods[-1].end <= at:
        return None
    current = periods[-1]
    after = subscription_periods(subscription, until=current.end + dt.timedelta(microseconds=1))
    following = after[-1] if after and after[-1].start == current.end else None
    return Cycle(len(periods), current.end, current, following)


def due_cycles(subscription: Subscription, *, now: dt.datetime, done: set[int]) -> list[Cycle]:
    grace = grace_period()
    return [c for c in subscription_cycles(subscription, until=now) if c.index not in done and c.due_at(grace) <= now]


def subscription_chain(subscription: Subscription) -> list[Subscription]:
    """The subscription and those it replaced by plan changes, newest first (their periods it may bill)."""
    chain = [subscription]
    replaced = _replaced(subscription)
    while replaced is not None and len(chain) < 100:
        chain.append(replaced)
        replaced = _replaced(replaced)
    return chain
