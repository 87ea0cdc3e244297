"""Reads of invoicing: the preview of the invoice a customer would get now, and JSON shapes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Prefetch

from catalog.money import format_major
from common.time import format_rfc3339
from customers.models import Customer
from customers.selectors import active_subscriptions

from .billing import DraftLine, cycle_at, cycle_lines
from .models import Invoice, InvoiceLine


@dataclass(frozen=True)
class Preview:
    customer: Customer
    currency: str
    period_start: dt.datetime | None
    period_end: dt.datetime | None
    lines: list[DraftLine]

    @property
    def total(self) -> int:
        return sum(line.amount for line in self.lines)


def invoice_preview(*, customer: Customer, at: dt.datetime) -> Preview:
    """The invoice the customer would get for the period running at ``at``: usage so far, the in-advance fees
    of the next period, credits and late usage, as the close will compute them. Nothing is saved.

    A customer with several subscriptions gets their lines together; the period spans them."""
    lines: list[DraftLine] = []
    starts, ends = [], []
    for subscription in active_subscriptions(customer, at):
        cycle = cycle_at(subscription, at)
        if cycle is None:
            continue
        lines += cycle_lines(subscription, cycle, usage_until=at, now=at)
        starts.append(cycle.invoice_period.start)
        ends.append(cycle.invoice_period.end)
    return Preview(customer, customer.currency, min(starts) if starts else None, max(ends) if ends else None, lines)


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def line_json(
    *,
    kind: str,
    rate_card_key: str,
    name: str,
    feature: str | None,
    description: str,
    quantity: Decimal,
    unit_price: Decimal | None,
    amount: int,
    currency: str,
    period_start: dt.datetime,
    period_end: dt.datetime,
    tiers: list | None = None,
) -> dict[str, Any]:
    return {
        "kind": kind,
        "rate_card": rate_card_key,
        "name": name,
        "feature": feature,
        "description": description,
        "quantity": _decimal(quantity),
        "unit_price": _decimal(unit_price),
        "amount": format_major(amount, currency),
        "period_start": format_rfc3339(period_start),
        "period_end": format_rfc3339(period_end),
        "tiers": tiers or [],
    }


def preview_json(preview: Preview) -> dict[str, Any]:
    currency = preview.currency
    lines = [
        line_json(
            kind=line.kind,
            rate_card_key=line.rate_card.key,
            name=line.rate_card.display_name,
            feature=line.rate_card.feature.key if line.rate_card.feature_id else None,
            description=line.description,
            quantity=line.quantity,
            unit_price=line.unit_price,
            amount=line.amount,
            currency=currency,
            period_start=line.period_start,
            period_end=line.period_end,
            tiers=line.tiers,
        )
        for line in preview.lines
    ]
    return {
        "customer": preview.customer.key,
        "currency": currency,
        "period_start": format_rfc3339(preview.period_start) if preview.period_start else None,
        "period_end": format_rfc3339(preview.period_end) if preview.period_end else None,
        "lines": lines,
        "subtotal": format_major(preview.total, currency),
        "total": format_major(preview.total, currency),
    }


def invoice_json(invoice: Invoice) -> dict[str, Any]:
    currency = invoice.currency
    stamp = lambda value: format_rfc3339(value) if value else None  # noqa: E731
    return {
        "id": str(invoice.pk),
        "number": invoice.number,
        "status": invoice.status,
        "customer": invoice.customer.key,
        "currency": currency,
        "period_start": format_rfc3339(invoice.period_start),
        "period_end": format_rfc3339(invoice.period_end),
        "subtotal": format_major(invoice.subtotal, currency),
        "total": format_major(invoice.total, currency),
        "issued_at": stamp(invoice.issued_at),
        "due_at": stamp(invoice.due_at),
        "paid_at": stamp(invoice.paid_at),
        "voided_at": stamp(invoice.voided_at),
        "stripe": {
            "sync_status": invoice.sync_status,
            "invoice_id": invoice.stripe_invoice_id or None,
            "hosted_invoice_url": invoice.stripe_hosted_url or None,
        },
        "lines": [
            line_json(
                kind=line.kind,
                rate_card_key=line.rate_card_key,
                name=line.rate_card.display_name,
                feature=line.feature.key if line.feature_id else None,
                description=line.description,
                quantity=line.quantity,
                unit_price=line.unit_price,
                amount=line.amount,
                currency=currency,
                period_start=line.period_start,
                period_end=line.period_end,
                tiers=line.tiers,
            )
            for line in invoice.lines.all()
        ],
    }


def _invoices_with_lines():
    """Invoices with their customer and lines (with rate card, feature) in three queries, whatever the count."""
    return Invoice.objects.select_related("customer").prefetch_related(
        Prefetch("lines", InvoiceLine.objects.select_related("rate_card", "rate_card__feature", "feature"))
    )


def invoice_list(*, customer_key: str | None = None, statuses: list[str] | None = None,
                 limit: int = 100) -> list[Invoice]:
    """Newest period first, optionally one customer's and only some statuses."""
    invoices = _invoices_with_lines().order_by("-period_start", "-id")
    if customer_key:
        invoices = invoices.filter(customer__key=customer_key)
    if statuses:
        invoices = invoices.filter(status__in=statuses)
    return list(invoices[:limit])


def invoice_by_id_or_number(id_or_number: str) -> Invoice | None:
    numeric = id_or_number.isascii() and id_or_number.isdigit()
    invoice = _invoices_with_lines().filter(pk=int(id_or_number)).first() if numeric else None
    if invoice is None:
        invoice = _invoices_with_lines().filter(number=id_or_number).first()
    return invoice
