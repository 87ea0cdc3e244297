"""Gapless document numbers: ``INV-2026-000001`` for invoices, ``CN-2026-000001`` for credit notes."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import connection

from ..models import InvoiceNumberSequence


def next_number(prefix: str, at: dt.datetime) -> str:
    """Inside the caller's transaction: take the next number of the (prefix, year) sequence.

    One upsert: it creates the sequence row or increments it, and the row stays locked until the caller's
    transaction ends, so concurrent issuers queue and a rolled-back issue leaves no gap."""
    year = at.year
    table = InvoiceNumberSequence._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (prefix, year, last_number) VALUES (%s, %s, 1) "  # noqa: S608 - model table name
            f"ON CONFLICT (prefix, year) DO UPDATE SET last_number = {table}.last_number + 1 RETURNING last_number",
            [prefix, year],
        )
        number = cursor.fetchone()[0]
    return f"{prefix}-{year}-{number:06d}"


def next_invoice_number(at: dt.datetime) -> str:
    return next_number(settings.INVOICE_NUMBER_PREFIX, at)


def next_credit_note_number(at: dt.datetime) -> str:
    return next_number(settings.CREDIT_NOTE_NUMBER_PREFIX, at)
