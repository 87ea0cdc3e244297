"""Credits paying invoices: the burns written in the invoice's transaction, and their return when it is voided."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.db import transaction

from ..models import CreditGrant, LedgerEntry
from ..selectors import CreditUse
from .grants import lock_customer
from .low_balance import credits_low_check

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def credits_burn(*, customer_id: int, uses: Sequence[CreditUse], invoice_id: int, line_ids: Sequence[int | None],
                 at: dt.datetime, reason: str = "", label: str = "close") -> list[LedgerEntry]:
    """Inside the invoice's transaction (the customer's row locked by the caller): one ``burn`` entry per grant
    paying lines of the invoice (``line_ids``: the invoice's "Credits applied" line of each use)."""
    entries = [
        LedgerEntry(customer_id=customer_id, grant=use.grant, kind=LedgerEntry.Kind.BURN, amount=-use.amount, at=at,
                    actor_label=label[:150], reason=(reason or f"applied on invoice #{invoice_id}")[:500],
                    invoice_id=invoice_id, invoice_line_id=line_id)
        for use, line_id in zip(uses, line_ids, strict=True)
    ]
    return LedgerEntry.objects.bulk_create(entries)


@transaction.atomic
def credits_return(*, customer_id: int, invoice_id: int, reason: str = "", actor: User | None = None,
                   label: str = "", now: dt.datetime) -> list[LedgerEntry]:
    """An invoice was voided: every burn of it goes back to its grant (once: a return names its burn, uniquely).
    A grant that has expired (or was voided) since keeps nothing: the return is written off at once by an
    ``expiry`` (or ``void``) entry beside it."""
    lock_customer(customer_id)
    returned = LedgerEntry.objects.filter(kind=LedgerEntry.Kind.RETURN, returns__invoice_id=invoice_id)
    burns = (LedgerEntry.objects.filter(invoice_id=invoice_id, kind=LedgerEntry.Kind.BURN)
             .exclude(pk__in=returned.values("returns_id")).select_related("grant").order_by("pk"))
    who = (label or (actor.get_username() if actor is not None else "system"))[:150]
    text = (reason or f"invoice #{invoice_id} voided")[:500]
    written: list[LedgerEntry] = []
    for burn in burns:
        grant: CreditGrant = burn.grant
        written.append(LedgerEntry(customer_id=customer_id, grant=grant, kind=LedgerEntry.Kind.RETURN,
                                   amount=-burn.amount, at=now, actor=actor, actor_label=who, reason=text,
                                   invoice_id=invoice_id, returns=burn))
        if grant.voided_at is not None:
            written.append(LedgerEntry(customer_id=customer_id, grant=grant, kind=LedgerEntry.Kind.VOID,
                                       amount=burn.amount, at=now, actor=actor, actor_label=who,
                                       reason="returned to a void grant"))
        elif grant.expires_at is not None and grant.expires_at <= now:
            written.append(LedgerEntry(customer_id=customer_id, grant=grant, kind=LedgerEntry.Kind.EXPIRY,
                                       amount=burn.amount, at=now, actor=actor, actor_label=who,
                                       reason="returned to an expired grant"))
    entries = LedgerEntry.objects.bulk_create(written)
    if entries:
        credits_low_check(customer_id=customer_id, now=now)
    return entries
