"""Inserting many new rows of one model when their primary keys are not needed back.

``bulk_create`` builds one ``INSERT … VALUES`` whose every parameter the driver quotes into the statement's text
(psycopg's client-side binding, which Django uses): for the dozen lines of each invoice a close writes, that
building and quoting was a fifth of the close's Python time. On PostgreSQL :func:`rows_insert` sends the same
values with one ``COPY … FROM STDIN`` instead (psycopg formats the rows in C), each value prepared exactly as
``bulk_create`` prepares it (``pre_save``, ``get_db_prep_save``), so both store the same row.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from django.db import connection, transaction
from django.db.backends.utils import CursorDebugWrapper
from django.db.models import Model


def rows_insert(model: type[Model], objs: Sequence[Model]) -> None:
    """Insert ``objs`` (unsaved instances of ``model`` with a database-generated primary key) inside the caller's
    transaction. Their ``pk`` stays unset: use ``bulk_create`` when the caller needs the ids.

    What ``bulk_create`` does besides preparing values is kept: related objects must be saved first (an unsaved
    one is refused, never written as NULL) and a failure marks the enclosing ``atomic`` block for rollback. What
    COPY cannot send (a value that is an SQL expression, such as a database default) goes through
    ``bulk_create``."""
    if not objs:
        return
    meta = model._meta
    if meta.parents or meta.auto_field is None or any(obj.pk is not None for obj in objs):
        raise ValueError(f"rows_insert writes new {meta.label} rows with a database-generated key only")
    for obj in objs:
        # Django's own check before bulk_create and save (not in django-stubs): an unsaved related object refused
        obj._prepare_related_fields_for_save(operation_name="rows_insert")  # type: ignore[attr-defined]
    if connection.vendor != "postgresql":
        model._default_manager.bulk_create(objs)
        return
    fields = [field for field in meta.concrete_fields
              if field is not meta.auto_field and not getattr(field, "generated", False)]
    rows = [[field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields] for obj in objs]
    if any(hasattr(value, "resolve_expression") for row in rows for value in row):
        model._default_manager.bulk_create(objs)
        return
    columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
    statement = f"COPY {connection.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN"

    def copy(sql: str, params: object, many: bool, context: dict[str, Any]) -> None:
        connection.validate_no_broken_transaction()
        with connection.wrap_database_errors, context["cursor"].cursor.copy(sql) as stream:
            for row in rows:
                stream.write_row(row)

    with transaction.mark_for_rollback_on_error(), connection.cursor() as cursor:
        # through the connection's execute wrappers and, when queries are logged (DEBUG, tests counting queries),
        # into the log, like every other statement
        logged = cursor.debug_sql(statement) if isinstance(cursor, CursorDebugWrapper) else nullcontext()
        with logged:
            cursor._execute_with_wrappers(statement, None, False, executor=copy)
