"""What the customer portal shows, for exactly one customer: usage per feature against entitlement limits, the
credit balance (when they have or had grants), the invoice preview, past invoices and credit notes (issued ones
only: drafts are internal), and alerts that fired.
Every query here is filtered by that customer; nothing takes an id from the request without that filter."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.utils import timezone

from catalog.money import format_major
from common.formatting import format_amount, format_date
from common.time import format_rfc3339
from credits.selectors import CustomerCredits, customer_credits, customer_has_grants, grant_status
from customers.models import Customer
from customers.selectors import active_subscriptions, subscription_entitlements, subscription_period_at
from invoicing.models import CreditNote, Invoice
from invoicing.selectors.invoices import preview_json
from invoicing.selectors.previews import invoice_preview
from invoicing.selectors.settings import company_profile
from metering.selectors.usage import usage_series

from ..models import FiredAlert

VISIBLE_INVOICE_STATUSES = (Invoice.Status.ISSUED, Invoice.Status.PAID, Invoice.Status.VOID,
                            Invoice.Status.UNCOLLECTIBLE)
DAY = dt.timedelta(days=1)


def _plain(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _daily(customer: Customer, feature, start: dt.datetime, end: dt.datetime, now: dt.datetime) -> list[dict]:
    """Cumulative usage by UTC day from the period's start until today."""
    if feature.meter is None:
        return []
    first = start.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    last = min(end, now.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) + DAY)
    subjects = sorted({a.subject for a in customer.attributions.all() if a.clip(first, last)})
    if not subjects or first >= last:
        return []
    rows = usage_series(meter=feature.meter, subjects=subjects, start=first, end=last, window_size="DAY",
                        filters=feature.meter_group_by_filters or None)
    by_day = {row.window_start: row.value for row in rows}
    points, running, cursor = [], Decimal(0), first
    while cursor < last:
        running += by_day.get(cursor, 0)
        points.append({"date": cursor.date().isoformat(), "usage": _plain(running)})
        cursor += DAY
    return points


def portal_usage(customer: Customer, *, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Per active subscription and entitlement: usage so far this period against the limit, by day."""
    now = now or timezone.now()
    features = []
    for subscription in active_subscriptions(customer, now):
        period = subscription_period_at(subscription, now)
        for rate_card, value in subscription_entitlements(subscription, now):
            feature = rate_card.feature
            if feature is None:
                continue
            metered = value.kind == "metered"
            start = value.period_start if metered and value.period_start else (period.start if period else None)
            end = value.period_end if metered and value.period_end else (period.end if period else None)
            features.append({
                "plan": subscription.plan.key, "feature": feature.key, "name": feature.name, "kind": value.kind,
                "has_access": value.has_access, "usage": _plain(value.usage), "limit": _plain(value.limit),
                "soft_limit": value.soft if metered else None,
                "period": {"from": format_rfc3339(start), "to": format_rfc3339(end)} if start and end else None,
                "daily": _daily(customer, feature, start, end, now) if metered and start and end else [],
            })
    return features


def portal_invoices(customer: Customer, limit: int = 100) -> list[Invoice]:
    return list(Invoice.objects.filter(customer=customer, status__in=VISIBLE_INVOICE_STATUSES)
                .order_by("-period_start", "-id")[:limit])


def portal_credit_notes(customer: Customer, limit: int = 100) -> list[CreditNote]:
    return list(CreditNote.objects.filter(customer=customer).select_related("invoice").order_by("-issued_at", "-id")
                [:limit])


def portal_invoice(customer: Customer, invoice_id: str) -> Invoice | None:
    if not (invoice_id.isascii() and invoice_id.isdigit() and len(invoice_id) <= 18):
        return None
    return (Invoice.objects.select_related("customer").filter(customer=customer, pk=int(invoice_id),
                                                              status__in=VISIBLE_INVOICE_STATUSES).first())


def portal_credit_note(customer: Customer, credit_note_id: str) -> CreditNote | None:
    if not (credit_note_id.isascii() and credit_note_id.isdigit() and len(credit_note_id) <= 18):
        return None
    return CreditNote.objects.select_related("customer", "invoice").filter(customer=customer,
                                                                           pk=int(credit_note_id)).first()


CUSTOMER_FACING_ALERTS = (FiredAlert.Kind.ENTITLEMENT, FiredAlert.Kind.SPEND)  # not: unpriced usage (internal)


def customer_alerts(customer: Customer, limit: int = 50, *, kinds: tuple[str, ...] | None = None) -> list[FiredAlert]:
    alerts = FiredAlert.objects.filter(customer=customer)
    if kinds is not None:
        alerts = alerts.filter(kind__in=kinds)
    return list(alerts.select_related("rate_card", "rate_card__feature")
                [:limit])


def portal_credits(customer: Customer, *, now: dt.datetime) -> CustomerCredits | None:
    """The customer's credits as ``GET /api/v1/customers/{id}/credits`` reads them (balance, pending usage,
    available, every grant with what is left of it); None for a customer who never had a grant. A fixed number
    of queries whatever the number of grants."""
    if not customer_has_grants(customer.pk):
        return None
    return customer_credits(customer, now)


def portal_credits_shown(credits: CustomerCredits, *, now: dt.datetime, locale: str | None = None) -> dict[str, Any]:
    """The portal page's credit section: the same figures written for people (:mod:`common.formatting`)."""
    currency = credits.customer.currency
    return {
        "balance": format_amount(credits.balance, currency, locale),
        "pending_usage": format_amount(credits.pending_usage, currency, locale),
        "available": format_amount(credits.available, currency, locale),
        "negative": credits.available < 0,
        "grants": [{"description": state.grant.description or state.grant.get_source_display(),
                    "amount": format_amount(state.grant.amount, state.grant.currency, locale),
                    "remaining": format_amount(state.remaining, state.grant.currency, locale),
                    "effective": format_date(state.grant.effective_at, locale),
                    "expires": format_date(state.grant.expires_at, locale) if state.grant.expires_at else "never",
                    "status": grant_status(state, now)} for state in credits.states],
    }


def portal_page_credits(customer: Customer, *, now: dt.datetime) -> dict[str, Any] | None:
    """:func:`portal_credits` for the page, in the company's locale (Settings → Company, as on invoices)."""
    credits = portal_credits(customer, now=now)
    return None if credits is None else portal_credits_shown(credits, now=now, locale=company_profile().locale)


def portal_data(customer: Customer, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The portal's JSON (``GET /api/v1/portal/usage``)."""
    now = now or timezone.now()
    preview = invoice_preview(customer=customer, at=now)
    credits = portal_credits(customer, now=now)
    credits_json = credits.as_json() if credits is not None else None  # what the credits API answers
    return {
        "customer": {"key": customer.key, "name": customer.name, "currency": customer.currency},
        "generated_at": format_rfc3339(now),
        "features": portal_usage(customer, now=now),
        "credit_balance": credits_json["balance"] if credits_json is not None else None,
        "credits": credits_json,
        "preview": preview_json(preview),
        "invoices": [{"id": str(i.pk), "number": i.number, "status": i.status,
                      "total": format_major(i.total, i.currency), "currency": i.currency,
                      "period_start": format_rfc3339(i.period_start), "period_end": format_rfc3339(i.period_end),
                      "issued_at": format_rfc3339(i.issued_at) if i.issued_at else None}
                     for i in portal_invoices(customer)],
        "credit_notes": [{"id": str(n.pk), "number": n.number, "status": n.status, "invoice": n.invoice.number,
                          "total": format_major(n.total, n.currency), "currency": n.currency,
                          "issued_at": format_rfc3339(n.issued_at)} for n in portal_credit_notes(customer)],
    }
