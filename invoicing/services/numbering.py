"""Gapless document numbers: ``INV-2026-000001`` for invoices, ``CN-2026-000001`` for credit notes."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import connection
from django.db.models import Model

from ..models import Invoice, InvoiceNumberSequence


def next_number(prefix: str, at: dt.datetime) -> str:
    """Inside the caller's transaction: take the next number of the (prefix, year) sequence.

    One upsert: it creates the sequence row or increments it, and the row stays locked until the caller's
    transaction ends, so concurrent issuers queue and a rolled-back issue leaves no gap."""
    year = at.year
    with connection.cursor() as cursor:
        cursor.execute(_TAKE_SQL, [prefix, year])
        number = cursor.fetchone()[0]
    return _formatted(prefix, year, number)


_SEQUENCES = InvoiceNumberSequence._meta.db_table
_TAKE_SQL = (f"INSERT INTO {_SEQUENCES} (prefix, year, last_number) VALUES (%s, %s, 1) "  # noqa: S608 - table name
             f"ON CONFLICT (prefix, year) DO UPDATE SET last_number = {_SEQUENCES}.last_number + 1 "
             "RETURNING last_number")
NUMBER_DIGITS = 6  # zero-padded to at least this many digits


def _formatted(prefix: str, year: int, number: int) -> str:
    return f"{prefix}-{year}-{number:0{NUMBER_DIGITS}d}"


def number_into(model: type[Model], pk: int, prefix: str, at: dt.datetime) -> str:
    """:func:`next_number` stored into the ``number`` column of ``model``'s row ``pk`` (inside the caller's
    transaction). On PostgreSQL one statement takes the number and stores it (the number is formatted there as
    :func:`_formatted` does; a test holds the two equal); elsewhere two."""
    if connection.vendor != "postgresql":
        number = next_number(prefix, at)
        if not model._default_manager.filter(pk=pk).update(number=number):
            raise LookupError(f"no {model._meta.label} with id {pk} to number")
        return number
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH taken AS ({_TAKE_SQL}) UPDATE {table} SET number = %s || CASE "  # noqa: S608 - table names
            f"WHEN taken.last_number < {10 ** NUMBER_DIGITS} THEN lpad(taken.last_number::text, {NUMBER_DIGITS}, '0') "
            f"ELSE taken.last_number::text END FROM taken WHERE {table}.id = %s RETURNING {table}.number",
            [prefix, at.year, f"{prefix}-{at.year}-", pk],
        )
        row = cursor.fetchone()
    if row is None:  # the number taken is given back by the caller's rollback
        raise LookupError(f"no {model._meta.label} with id {pk} to number")
    return row[0]


def next_invoice_number(at: dt.datetime) -> str:
    return next_number(settings.INVOICE_NUMBER_PREFIX, at)


def invoice_number_into(invoice_id: int, at: dt.datetime) -> str:
    return number_into(Invoice, invoice_id, settings.INVOICE_NUMBER_PREFIX, at)


def next_credit_note_number(at: dt.datetime) -> str:
    return next_number(settings.CREDIT_NOTE_NUMBER_PREFIX, at)
