"""The close's two cheaper writes: lines stored with one COPY (``common.bulk.rows_insert``) and the invoice number
taken and stored in one statement (``numbering.number_into``), on PostgreSQL; elsewhere the ORM's way. Both must
store exactly what the ORM's way stores."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db import connection

from common.bulk import rows_insert
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice, InvoiceLine, InvoiceNumberSequence
from invoicing.services.close import close_cycles
from invoicing.services.numbering import _formatted, invoice_number_into, next_invoice_number
from tests.builders import graduated_out, ingest, kong_air, the_invoice, token_plan, tokens, utc

pytestmark = pytest.mark.django_db
NOV = utc(2026, 11, 1)
AFTER_NOV = utc(2026, 12, 1, 2)
AWKWARD_TEXT = "tab\there, back\\slash, new\nline, 'quote' \"double\" ü € \\N 😀"
STORED = [field.attname for field in InvoiceLine._meta.concrete_fields if field.attname not in ("id", "position")]


def _closed_invoice() -> Invoice:
    subscription_create(customer=kong_air(), plan=token_plan(extra=[graduated_out()]), start=NOV)
    ingest([tokens(1000, utc(2026, 11, 3)), tokens(250_000, utc(2026, 11, 4), kind="response")])
    close_cycles(now=AFTER_NOV)
    return the_invoice()


def _copies(lines: list[InvoiceLine], first_position: int) -> list[InvoiceLine]:
    copies = []
    for n, line in enumerate(lines):
        values = {name: getattr(line, name) for name in STORED}
        copies.append(InvoiceLine(**values, position=first_position + n))
    return copies


def _stored(position_from: int, count: int) -> list[dict]:
    return list(InvoiceLine.objects.filter(position__gte=position_from, position__lt=position_from + count)
                .order_by("position").values(*STORED))


def test_rows_insert_stores_exactly_what_bulk_create_stores():
    invoice = _closed_invoice()
    lines = list(invoice.lines.order_by("position"))
    assert any(line.tiers for line in lines)  # the graduated line's tier breakdown (JSON) is among them
    awkward = lines[0]
    awkward.description = AWKWARD_TEXT
    awkward.price_part = "\\."
    awkward.dimensions = {"model": AWKWARD_TEXT, "type": None, "n": [1, "2"]}
    awkward.quantity = Decimal("12345678901234567890123.000000000000001")
    awkward.unit_price = Decimal("0.000000000000001")
    awkward.rated_quantity = None
    awkward.period_start = dt.datetime(2026, 11, 1, 0, 0, 0, 1, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
    copied, created = _copies(lines, 100), _copies(lines, 200)

    rows_insert(InvoiceLine, copied)
    InvoiceLine.objects.bulk_create(created)

    assert _stored(100, len(lines)) == _stored(200, len(lines))
    first = _stored(100, 1)[0]
    assert first["description"] == AWKWARD_TEXT and first["dimensions"]["model"] == AWKWARD_TEXT
    assert first["quantity"] == Decimal("12345678901234567890123.000000000000001")
    assert first["period_start"] == dt.datetime(2026, 10, 31, 18, 30, 0, 1, tzinfo=dt.UTC)
    assert _stored(100, len(lines))[1:] == [{name: getattr(line, name) for name in STORED} for line in lines[1:]]


def test_rows_insert_of_nothing_writes_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        rows_insert(InvoiceLine, [])


def test_rows_insert_is_one_logged_statement(django_assert_num_queries):
    invoice = _closed_invoice()
    lines = list(invoice.lines.order_by("position"))
    with django_assert_num_queries(1) as captured:
        rows_insert(InvoiceLine, _copies(lines, 100))
    assert InvoiceLine._meta.db_table in captured.captured_queries[0]["sql"]
    assert len(_stored(100, len(lines))) == len(lines)


def test_a_refused_row_writes_none_of_them():
    invoice = _closed_invoice()
    lines = list(invoice.lines.order_by("position"))
    copies = _copies(lines, 100)
    copies[-1].invoice_id = 10**9  # no such invoice: the foreign key refuses it (at the latest at the commit)
    with pytest.raises(Exception):  # noqa: B017 - IntegrityError from the insert or the deferred check
        from django.db import transaction
        with transaction.atomic():
            rows_insert(InvoiceLine, copies)
            connection.check_constraints(table_names=[InvoiceLine._meta.db_table])
    assert not InvoiceLine.objects.filter(position__gte=100).exists()


@pytest.mark.parametrize("last", [0, 41, 999_998, 999_999, 12_345_678])
def test_number_into_gives_the_number_next_number_would_give(last):
    invoice = _closed_invoice()
    at = invoice.issued_at
    assert at is not None
    sequence = InvoiceNumberSequence.objects.get(year=at.year)
    sequence.last_number = last
    sequence.save()

    stored = invoice_number_into(invoice.pk, at)

    assert stored == _formatted(sequence.prefix, at.year, last + 1)
    invoice.refresh_from_db()
    assert invoice.number == stored
    assert next_invoice_number(at) == _formatted(sequence.prefix, at.year, last + 2)  # the sequence moved by one


def test_number_into_starts_a_new_year_at_one():
    invoice = _closed_invoice()
    assert invoice.issued_at is not None
    next_year = invoice.issued_at.replace(year=invoice.issued_at.year + 1)
    assert invoice_number_into(invoice.pk, next_year).endswith(f"-{next_year.year}-000001")
