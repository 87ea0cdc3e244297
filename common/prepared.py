"""Prepared statements for the gateway's hot reads on PostgreSQL.

The entitlement check runs the same few raw statements hundreds of times a second. PostgreSQL spent most of its time
on them parsing and planning (0.3 ms of planning against 0.05 ms of execution for the newest-events statement), so
:func:`prepared_cursor` gives those reads a psycopg cursor that binds parameters on the server and prepares each
statement on its connection the first time it runs: later runs are parsed once and, once PostgreSQL finds a generic
plan as good as the custom ones, not planned again (a statement whose right plan depends on its values is written
so that its plan cannot: see ``metering.selectors.usage._newest_events``).

Django's own cursors bind on the client (psycopg's ``ClientCursor``) and never prepare, so nothing else changes.
``DATABASE_PREPARED_STATEMENTS=false`` turns this off, e.g. behind a connection pooler in transaction mode that does
not track prepared statements (PgBouncer before 1.22, or ``max_prepared_statements = 0``). On SQLite, and with
psycopg 2, and while Django logs queries (``DEBUG``), :func:`prepared_cursor` is Django's cursor.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorWrapper

# psycopg prepares a statement after this many runs on a connection; Django turns that off (prepare_threshold=None)
# for the sake of poolers. A preparing cursor sets it for its own statements only and asks for preparation at once:
# Django's cursors, which bind on the client, never prepare, and psycopg does not even count their queries.
_ONLY_WHEN_ASKED = 2**31 - 1
# SQLSTATE of "cached plan must not change result type": a prepared statement's result columns changed (a migration).
_RESULT_TYPE_CHANGED = "0A000"


def _preparing_cursor_class() -> type | None:
    try:
        import psycopg
        from django.db.backends.postgresql.base import ServerBindingCursor
    except ImportError:  # psycopg 2: no server-side binding
        return None

    base: Any = ServerBindingCursor  # django-stubs leave its psycopg base untyped

    class PreparingCursor(base):
        """Django's server-binding cursor, asking psycopg to prepare every statement it runs."""

        def execute(self, query: Any, params: Any = None, *, prepare: bool | None = True, **kwargs: Any) -> Any:
            raw = self.connection
            configured = raw.prepare_threshold  # None as Django sets it, unless OPTIONS set a threshold
            if configured is None:
                raw.prepare_threshold = _ONLY_WHEN_ASKED
            try:
                try:
                    return super().execute(query, params, prepare=prepare, **kwargs)
                except psycopg.Error as error:
                    if raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                        raise  # in a transaction: its rollback makes psycopg deallocate what it prepared
                    # Outside one, drop every prepared statement (psycopg empties its cache on seeing this): a statement
                    # whose run failed stays prepared on the server though psycopg forgets it, and one whose result
                    # columns changed since (a migration) would fail on every run.
                    raw.execute("DEALLOCATE ALL")
                    if error.sqlstate != _RESULT_TYPE_CHANGED:
                        raise
                    return super().execute(query, params, prepare=prepare, **kwargs)  # it did not run: once more
            finally:
                raw.prepare_threshold = configured

    return PreparingCursor


_PREPARING_CURSOR = _preparing_cursor_class()


def prepared_cursor() -> CursorWrapper:
    """A cursor of the default connection whose statements are prepared on PostgreSQL (see the module's docstring);
    Django's cursor elsewhere. Parameters are bound by the server: a statement names ``%s`` or ``%(name)s`` as in
    Django, and casts a parameter whose type PostgreSQL cannot infer."""
    if (connection.vendor != "postgresql" or _PREPARING_CURSOR is None or connection.queries_logged
            or not getattr(settings, "DATABASE_PREPARED_STATEMENTS", True)):
        # Logged queries (DEBUG, a test capturing them) show their SQL with the values, which psycopg does not keep
        # for a prepared statement.
        return connection.cursor()
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        # As BaseDatabaseWrapper.cursor() wraps the cursor it creates (logging and execute wrappers included).
        return connection._prepare_cursor(_PREPARING_CURSOR(connection.connection))  # type: ignore[attr-defined]
