"""Usage no row of a dimensional price prices, in a window of time rather than a billing period (the
``usage.unpriced`` announcements). Nothing here decides what is unpriced: the usage is read by
:func:`~invoicing.services.lines.dimensional_usage_between` and priced by :func:`catalog.charges.charge_rate_card`,
whose ``unpriced`` is what the invoice preview warns about, the dashboard card counts and ``billing_reconcile``
lists (the event explorer asks :func:`catalog.dimensional.resolve_row`, the rule beneath them all)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from catalog.charges import charge_rate_card, is_dimensional
from catalog.dimensional import UnpricedUsage
from catalog.models import RateCard
from catalog.pricing import PricingError
from customers.models import Subscription
from customers.selectors import feature_usage_grouped_by_subject

from ..services.lines import BillingContext, dimensional_usage_between


@dataclass(frozen=True)
class UnpricedWindow:
    """Usage of one subscription that no row (and no default) of one dimensional rate card prices, in
    ``[start, end)`` (clipped to the subscription by the usage read)."""

    subscription: Subscription
    rate_card: RateCard
    start: dt.datetime
    end: dt.datetime
    usage: UnpricedUsage

    @property
    def dimensions(self) -> dict[str, str | None]:
        return dict(self.usage.values)


def unpriced_usage_between(subscription: Subscription, *, start: dt.datetime, end: dt.datetime,
                           context: BillingContext | None = None) -> list[UnpricedWindow]:
    """What the subscription's dimensional rate cards leave unpriced of its usage in ``[start, end)``: one read per
    dimensional rate card (and effective segment of its table). A rate card whose price cannot be computed is
    skipped: the preview and the close report it."""
    context = context or BillingContext()
    found: list[UnpricedWindow] = []
    if end <= start:
        return found
    for rate_card in context.rate_cards(subscription.plan):
        if not is_dimensional(rate_card) or rate_card.feature is None:
            continue
        groups = dimensional_usage_between(context, subscription, rate_card, start, end)
        if not groups:
            continue
        try:
            charge = charge_rate_card(rate_card, quantity=Decimal(0), currency=subscription.plan.currency,
                                      usage_groups=groups)
        except PricingError:
            continue
        found += [UnpricedWindow(subscription, rate_card, start, end, usage) for usage in charge.unpriced]
    return found


def unpriced_subjects(unpriced: UnpricedWindow) -> list[str]:
    """The customer's subjects whose usage in the window has the unpriced values (one usage read)."""
    rate_card = unpriced.rate_card
    dimensions = tuple(name for name, _ in unpriced.usage.values)
    values = tuple(value for _, value in unpriced.usage.values)
    per_subject = feature_usage_grouped_by_subject(subscription=unpriced.subscription, feature=rate_card.usage_feature,
                                                   dimensions=dimensions, start=unpriced.start, end=unpriced.end)
    return [subject for subject, groups in per_subject.items() if groups.get(values)]
