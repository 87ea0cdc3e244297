"""Customer grants in catalog as code: the ``credit_grants`` section of ``billing_apply`` / ``billing_dump``
(registered into ``customers.hooks`` from ``CreditsConfig.ready()``).

An entry is ``{customer, amount, effective_at, priority?, expires_at?, applies_to?, source?, description?}``
(amount in major units of the customer's currency, as text: ``"20.00"``). Grants are append-only: an entry is
identified by customer, effective time, amount, source and description; a missing one is granted, an existing
one is left as it is (never changed nor voided: void a grant in the admin or through the API), and grants not in
the file are left alone. The dump lists the grants staff made (manual and promotional, and purchases without an
invoice), not void, so applying it changes nothing. Recurring grants live on rate cards (``credit_grant``)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any

from catalog.money import format_major, minor_unit_exponent, to_minor
from common.time import format_rfc3339
from common.yaml_reader import Problems, Reader
from customers.models import Customer

from .models import CreditGrant
from .services.grants import CreditError, grant_create

SECTION = "credit_grants"
FIELDS = ("customer", "amount", "effective_at", "priority", "expires_at", "applies_to", "source", "description")
STAFF_SOURCES = (CreditGrant.Source.MANUAL, CreditGrant.Source.PROMOTIONAL, CreditGrant.Source.PURCHASED)


def _identity(customer_id: int, effective_at: dt.datetime, amount: int, source: str, description: str) -> tuple:
    return (customer_id, effective_at, amount, source, description)


def credit_grants_apply(problems: Problems, entries: list, lines: list[str], now: dt.datetime) -> None:
    existing = {_identity(g.customer_id, g.effective_at, g.amount, g.source, g.description)
                for g in CreditGrant.objects.all()}
    customers = {c.key: c for c in Customer.objects.all()}
    for index, data in enumerate(entries):
        where = f"{SECTION}[{index}]"
        r = Reader(problems, where, data, FIELDS)
        key = r.text("customer", required=True)
        amount_text = r.raw("amount", None)
        effective_at = r.datetime("effective_at", required=True)
        expires_at = r.datetime("expires_at")
        priority = r.integer("priority", maximum=2**31 - 1) if r.has("priority") else 100
        source = r.text("source", default=CreditGrant.Source.MANUAL, choices=tuple(STAFF_SOURCES))
        description = r.text("description", default="", max_length=500) or ""
        applies_to = r.items("applies_to") or []
        if not r.ok or effective_at is None:
            continue
        customer = customers.get(key) if isinstance(key, str) else None
        if customer is None:
            r.fail("customer", f"unknown customer {key!r}")
            continue
        if not isinstance(amount_text, str | int) or isinstance(amount_text, bool):
            r.fail("amount", 'must be a decimal as text, e.g. "20.00"')
            continue
        try:
            amount_major = Decimal(str(amount_text))
        except InvalidOperation:
            r.fail("amount", 'must be a decimal as text, e.g. "20.00"')
            continue
        if not amount_major.is_finite() or amount_major <= 0 or amount_major >= Decimal(10) ** 15:
            r.fail("amount", "must be more than zero (and less than 10^15)")
            continue
        if -amount_major.as_tuple().exponent > minor_unit_exponent(customer.currency):  # type: ignore[operator]
            r.fail("amount", f"has more decimals than {customer.currency} has")
            continue
        if not isinstance(priority, int) or priority < 0:
            r.fail("priority", "must be a whole number from 0")
            continue
        amount = to_minor(amount_major, customer.currency)
        if _identity(customer.pk, effective_at, amount, str(source), description) in existing:
            continue
        try:
            grant = grant_create(customer=customer, amount=amount, priority=priority, effective_at=effective_at,
                                 expires_at=expires_at, applies_to=applies_to, source=str(source),
                                 description=description, label="billing_apply", now=now)
        except CreditError as exc:
            for name, message in exc.errors.items():
                r.fail(name, message)
            continue
        existing.add(_identity(customer.pk, effective_at, amount, grant.source, description))
        lines.append(f"grant credits to {customer.key}: {format_major(amount, customer.currency)} "
                     f"{customer.currency} from {format_rfc3339(effective_at)}")


def credit_grants_dump() -> list[dict[str, Any]]:
    docs = []
    grants = (CreditGrant.objects.filter(source__in=STAFF_SOURCES, voided_at__isnull=True,
                                         purchase_invoice_id__isnull=True)
              .select_related("customer").order_by("customer__key", "effective_at", "id"))
    for grant in grants:
        doc: dict[str, Any] = {"customer": grant.customer.key, "amount": format_major(grant.amount, grant.currency),
                               "effective_at": format_rfc3339(grant.effective_at)}
        if grant.priority != 100:
            doc["priority"] = grant.priority
        if grant.expires_at is not None:
            doc["expires_at"] = format_rfc3339(grant.expires_at)
        if grant.applies_to:
            doc["applies_to"] = list(grant.applies_to)
        if grant.source != CreditGrant.Source.MANUAL:
            doc["source"] = grant.source
        if grant.description:
            doc["description"] = grant.description
        docs.append(doc)
    return docs
