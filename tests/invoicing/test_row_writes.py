"""The close's two cheaper writes: lines stored with one COPY (``common.bulk.rows_insert``) and the invoice number
taken and stored in one statement (``numbering.number_into``), on PostgreSQL; elsewhere the ORM's way. Both must
store exactly what the ORM's way stores."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from common.bulk import rows_insert
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice, InvoiceEvent, InvoiceLine, InvoiceNumberSequence
from invoicing.services.close import close_cycles
from invoicing.services.numbering import _formatted, invoice_number_into, next_invoice_number, number_into
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
    lines[1].dimensions, lines[1].description, lines[1].price_part = None, "", ""  # SQL NULL and empty texts
    copied, created = _copies(lines, 100), _copies(lines, 200)

    rows_insert(InvoiceLine, copied)
    InvoiceLine.objects.bulk_create(created)

    assert _stored(100, len(lines)) == _stored(200, len(lines))
    without_dimensions = InvoiceLine.objects.filter(dimensions__isnull=True)  # SQL NULL, not JSON null
    assert (without_dimensions.filter(position__gte=100, position__lt=200).count()
            == without_dimensions.filter(position__gte=200, position__lt=300).count() >= 1)
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


def test_log_rows_are_stored_as_bulk_create_stores_them():
    invoice = _closed_invoice()
    before = timezone.now()
    events = [InvoiceEvent(invoice=invoice, action=action, actor=None, actor_label=label, detail=detail)
              for action, label, detail in (("noted", "beat", AWKWARD_TEXT), ("noted", "", ""))]
    rows_insert(InvoiceEvent, events[:1] + events[1:])
    InvoiceEvent.objects.bulk_create([InvoiceEvent(invoice=e.invoice, action=e.action, actor=None,
                                                   actor_label=e.actor_label, detail=e.detail) for e in events])
    stored = list(InvoiceEvent.objects.filter(action="noted").order_by("id")
                  .values("invoice_id", "credit_note_id", "action", "detail", "actor_id", "actor_label", "at"))
    assert len(stored) == 4
    assert [{k: v for k, v in row.items() if k != "at"} for row in stored[:2]] == \
        [{k: v for k, v in row.items() if k != "at"} for row in stored[2:]]
    assert stored[0]["detail"] == AWKWARD_TEXT
    assert all(before <= row["at"] <= timezone.now() for row in stored)  # auto_now_add filled on both paths


def test_an_unsaved_related_object_is_refused_not_stored_as_null():
    invoice = _closed_invoice()
    unsaved_user = User(username="not-saved-yet")
    event = InvoiceEvent(invoice=invoice, action="noted", actor=unsaved_user, actor_label="x")
    with pytest.raises(ValueError, match="unsaved related object"):
        rows_insert(InvoiceEvent, [event])
    assert not InvoiceEvent.objects.filter(action="noted").exists()


def test_rows_that_already_have_a_key_are_refused():
    invoice = _closed_invoice()
    line = invoice.lines.order_by("position").first()
    assert line is not None
    with pytest.raises(ValueError, match="database-generated key"):
        rows_insert(InvoiceLine, [line])


def test_a_refused_row_writes_none_of_them():
    invoice = _closed_invoice()
    lines = list(invoice.lines.order_by("position"))
    copies = _copies(lines, 100)
    copies[-1].invoice_id = 10**9  # no such invoice: the foreign key refuses it (at the latest at the commit)
    with pytest.raises(IntegrityError), transaction.atomic():
        rows_insert(InvoiceLine, copies)
        connection.check_constraints(table_names=[InvoiceLine._meta.db_table])
    assert not InvoiceLine.objects.filter(position__gte=100).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_failed_copy_caught_inside_atomic_still_rolls_the_block_back():
    """As with bulk_create: the error marks the atomic block, so catching it cannot commit half of the block or
    run its on-commit tasks (a Stripe push of an invoice that was never stored)."""
    invoice = _closed_invoice()
    copies = _copies(list(invoice.lines.order_by("position")), 100)
    copies[0].description = "NUL \x00 inside"
    committed: list[int] = []
    with transaction.atomic():
        Invoice.objects.filter(pk=invoice.pk).update(total=123)
        transaction.on_commit(lambda: committed.append(1))
        with pytest.raises((ValueError, DatabaseError)):
            rows_insert(InvoiceLine, copies)
    assert committed == []
    invoice.refresh_from_db()
    assert invoice.total != 123
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


def test_number_into_a_prefix_with_sql_characters():
    invoice = _closed_invoice()
    assert invoice.issued_at is not None
    prefix = "IN%s'V\\%%"
    stored = number_into(Invoice, invoice.pk, prefix, invoice.issued_at)
    assert stored == _formatted(prefix, invoice.issued_at.year, 1)
    invoice.refresh_from_db()
    assert invoice.number == stored


def test_number_into_a_missing_row_is_an_error_not_a_lost_number():
    invoice = _closed_invoice()
    assert invoice.issued_at is not None
    with pytest.raises(LookupError, match="no invoicing.Invoice with id"), transaction.atomic():
        invoice_number_into(10**9, invoice.issued_at)
    assert next_invoice_number(invoice.issued_at) == _formatted("INV", invoice.issued_at.year, 2)  # no gap


def test_number_into_starts_a_new_year_at_one():
    invoice = _closed_invoice()
    assert invoice.issued_at is not None
    next_year = invoice.issued_at.replace(year=invoice.issued_at.year + 1)
    assert invoice_number_into(invoice.pk, next_year).endswith(f"-{next_year.year}-000001")
