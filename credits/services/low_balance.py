"""The low-credit alert: ``credits.low`` (``{customer, available, threshold}``) when a customer's live credits fall
below the threshold of its :class:`~credits.models.LowBalanceAlert` — once per crossing, re-armed when ``available``
is back at or above the threshold.

Evaluated where a customer's credits change or are already evaluated — after a close (in its transaction), in the
auto top-up beat job (usage at the gateway lowers ``available`` between cycles), and after a grant is created, made
available, adjusted, voided, expired or given burns back — for that one customer, never by scanning every customer
on a hot path. The announcement is made inside the caller's transaction (the outbox row commits with the change, and
a rolled-back change announces nothing)."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from catalog.money import format_major
from common.announcements import announce

from ..models import LowBalanceAlert
from ..selectors import customer_credits
from .locking import lock_customer


def low_balance_payload(alert: LowBalanceAlert, available: int) -> dict[str, str]:
    currency = alert.customer.currency
    return {"customer": alert.customer.key, "available": format_major(available, currency),
            "threshold": format_major(alert.threshold, currency)}


@transaction.atomic
def credits_low_check(*, customer_id: int, now: dt.datetime | None = None) -> bool:
    """Announce ``credits.low`` if the customer's available credits are below its alert's threshold and it was not
    announced for this crossing yet; re-arm the alert when they are back at or above it. True when announced.
    A customer without an enabled alert costs one query."""
    alert = (LowBalanceAlert.objects.select_related("customer")
             .filter(customer_id=customer_id, enabled=True).first())
    if alert is None:
        return False
    now = now or timezone.now()
    lock_customer(customer_id)
    alert = LowBalanceAlert.objects.select_related("customer").get(pk=alert.pk)  # re-read under the lock
    available = customer_credits(alert.customer, now).available
    if available >= alert.threshold:
        if alert.low_since is not None:
            alert.low_since = None
            alert.save(update_fields=["low_since"])
        return False
    if alert.low_since is not None:
        return False  # still below: announced at the crossing
    alert.low_since = now
    alert.save(update_fields=["low_since"])
    announce("credits.low", customer=alert.customer, data=low_balance_payload(alert, available))
    return True
