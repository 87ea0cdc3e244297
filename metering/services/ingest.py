"""Storing a validated batch of events: one transaction, deduplicated on (source, id), all or nothing.

PostgreSQL, more than ``SMALL_BATCH`` events: the batch's COPY text rows (built by the parser straight from the
body, :class:`metering.cloudevents.EventBatch`), sorted by (source, id), are first ``COPY``'d straight into the
events table, with the transaction's id as ``ingest_tx``: a repeat of a stored (source, id) makes the unique index
refuse the whole COPY (nothing of it stays), and only then is the batch written the deduplicating way, in a new
transaction: ``COPY`` into a per-connection temporary staging table, then one
``INSERT … SELECT … ORDER BY source, event_id ON CONFLICT (source, event_id) DO NOTHING``. Repeats are what
gateways send after a lost answer, a small share of batches; every other batch costs what a raw COPY does, not the
staging table, its sort and the speculative inserts. Sorting gives every transaction the same lock order, so
overlapping concurrent batches wait for each other instead of deadlocking (a deadlock all the same, e.g. with a
writer that sorts by the database's collation, is retried); a duplicate racing in from another transaction
waits for that transaction and is then refused (→ the deduplicating write ignores it) or inserted, if the other
one rolled back. Small batches are one ``INSERT … ON CONFLICT DO NOTHING`` in autocommit.

SQLite: one ``executemany`` of ``INSERT … ON CONFLICT (source, event_id) DO NOTHING`` inside an
IMMEDIATE transaction (writers are serialized by the database lock). ``ON CONFLICT`` is used rather than
``INSERT OR IGNORE`` so that only the dedup key is ignored, never another constraint.

The answer is sent only after COMMIT, so a 2xx means the events are durable; a failure rolls back the
whole batch, leaving no dedup claim behind, so the gateway's retry counts once.

Django's ``CONN_HEALTH_CHECKS`` would spend a ``SELECT 1`` round trip on the first query of every request; ingest
skips it and instead, when its first attempt on a reused connection fails because that connection is dead, closes
it and tries once more on a new one (safe: a batch written twice is stored once).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import weakref
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import DatabaseError, DataError, IntegrityError, OperationalError, connection, transaction

from ..cloudevents import EventBatch, EventRow

logger = logging.getLogger(__name__)

EVENT_TABLE = "metering_event"
STAGING_TABLE = "metering_event_staging"
DEDUP_CONSTRAINT = "metering_event_source_id_uniq"
SMALL_BATCH = 32
MAX_ATTEMPTS = 3
_COLUMNS = "source, event_id, type, subject, time, data, ingested_at, ingest_tx"

# Raw connections on which the temporary staging table already exists.
_staging_ready: weakref.WeakSet = weakref.WeakSet()


class EventsNotStorable(ValueError):
    """The database refused the batch's values (nothing was stored); the API answers 400."""


@dataclass(frozen=True)
class IngestResult:
    received: int
    stored: int  # the rest were duplicates (in the batch, or already stored)


def events_ingest(*, rows: list[EventRow] | EventBatch, received_at: dt.datetime) -> IngestResult:
    """Store a batch atomically; duplicates (in the batch or already stored) are accepted and ignored."""
    batch = rows if isinstance(rows, EventBatch) else EventBatch.of_rows(rows)
    if not len(batch):
        return IngestResult(received=batch.received, stored=0)
    postgres = connection.vendor == "postgresql"
    reused = postgres and _skip_health_check()
    raw = connection.connection
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return IngestResult(received=batch.received, stored=_write(batch, received_at, postgres=postgres))
        except DataError as exc:  # PostgreSQL: the data holds a number jsonb cannot (e.g. 1e400000); rolled back
            raise EventsNotStorable(str(exc).strip().splitlines()[0] if str(exc).strip() else "data error") from exc
        except OperationalError as exc:
            if attempt == 1 and reused and _lost(raw):
                # The persistent connection died while idle (server restart, idle timeout): a new one, once.
                logger.warning("ingest: the database connection was dead (%s); reconnecting", exc)
                if connection.connection is raw:
                    connection.close()
                continue
            # Deadlock or serialization failure: the transaction was rolled back, so retrying is safe.
            if attempt == MAX_ATTEMPTS or not _is_retryable(exc):
                raise
            logger.warning("ingest attempt %s failed (%s); retrying", attempt, exc)
            time.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


def _write(batch: EventBatch, received_at: dt.datetime, *, postgres: bool) -> int:
    if not postgres:
        with transaction.atomic():
            return _write_sqlite(batch, received_at)
    # A small batch is one INSERT statement, atomic and committed on its own in autocommit mode: no BEGIN/COMMIT
    # round trips (single-event POSTs are mostly round trips).
    if len(batch) <= SMALL_BATCH and connection.get_autocommit():
        return _write_postgresql(batch, received_at)
    try:
        with transaction.atomic():
            return _write_postgresql(batch, received_at)
    except IntegrityError as exc:
        if not _is_dedup_conflict(exc):
            raise
    # The batch repeats stored events: the deduplicating write, in a new transaction (the refused COPY left
    # nothing behind).
    with transaction.atomic():
        return _write_postgresql(batch, received_at, dedup=True)


def _skip_health_check() -> bool:
    """Mark this request's health check as done (see the module's docstring); whether the connection is one
    reused from an earlier request (whose death ingest then handles itself)."""
    wrapper: Any = connection  # health_check_* are attributes of Django's database wrapper (Django ≥ 4.1), unstubbed
    if wrapper.connection is None or not wrapper.health_check_enabled or wrapper.health_check_done:
        return False
    wrapper.health_check_done = True
    return True


def _lost(raw) -> bool:
    """Whether the driver's connection ``raw`` is lost (Django may already have closed and replaced it)."""
    return raw is not None and (raw.closed or raw.broken)


def _is_retryable(exc: DatabaseError) -> bool:
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    return sqlstate in ("40P01", "40001") or "database is locked" in str(exc)


def _is_dedup_conflict(exc: IntegrityError) -> bool:
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(exc.__cause__, "sqlstate", None) == "23505" and (
        diag is None or diag.constraint_name in (None, DEDUP_CONSTRAINT))


def _write_postgresql(batch: EventBatch, received_at: dt.datetime, *, dedup: bool = False) -> int:
    """Write ``batch`` in the current transaction: a small batch as one INSERT … ON CONFLICT; a larger one by
    a COPY straight into the events table (``dedup=False``: an IntegrityError when an event is already stored) or
    through the staging table (``dedup=True``)."""
    if len(batch) <= SMALL_BATCH:
        return _insert_small(batch.rows, received_at)
    with connection.cursor() as cursor:
        lines = sorted(batch.lines)
        if not dedup:
            cursor.execute("SELECT pg_current_xact_id()::text::bigint")
            ingest_tx = cursor.fetchone()[0]
            end = b"\t%s\t%d\n" % (received_at.isoformat().encode(), ingest_tx)
            # COPY goes through the driver's own cursor: Django's wrapper turns its errors into Django's
            # (IntegrityError for a stored event, DataError for a number jsonb cannot hold → 400, OperationalError
            # for a lost connection), as for every other statement here.
            with connection.wrap_database_errors, cursor.cursor.copy(
                f"COPY {EVENT_TABLE} ({_COLUMNS}) FROM STDIN"
            ) as copy:
                copy.write(end.join(lines) + end)
            return len(lines)
        raw = connection.connection
        if raw not in _staging_ready:
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} "
                "(source text, event_id text, type text, subject text, time timestamptz, data jsonb) "
                "ON COMMIT DELETE ROWS"
            )
            # Remember it only once committed: a rolled-back CREATE leaves no table behind.
            transaction.on_commit(lambda: _staging_ready.add(raw))
        with connection.wrap_database_errors, cursor.cursor.copy(
            f"COPY {STAGING_TABLE} (source, event_id, type, subject, time, data) FROM STDIN"
        ) as copy:
            copy.write(b"\n".join(lines) + b"\n")
        cursor.execute(
            f"INSERT INTO {EVENT_TABLE} ({_COLUMNS}) "  # noqa: S608 - constants only
            f"SELECT source, event_id, type, subject, time, data, %s, pg_current_xact_id()::text::bigint "
            f"FROM {STAGING_TABLE} ORDER BY source, event_id "
            "ON CONFLICT (source, event_id) DO NOTHING",
            [received_at],
        )
        # The staging rows vanish at COMMIT (ON COMMIT DELETE ROWS) or with a ROLLBACK.
        return cursor.rowcount


def _small_insert_sql(n: int) -> str:
    row = "(%s, %s, %s, %s, %s, %s::jsonb, %s, pg_current_xact_id()::text::bigint)"
    return (f"INSERT INTO {EVENT_TABLE} ({_COLUMNS}) VALUES {', '.join([row] * n)} "  # noqa: S608 - constants only
            "ON CONFLICT (source, event_id) DO NOTHING")


_SMALL_INSERT_SQL = [_small_insert_sql(n) for n in range(SMALL_BATCH + 1)]


def _insert_small(rows: list[EventRow], received_at: dt.datetime) -> int:
    """One ``INSERT … VALUES … ON CONFLICT DO NOTHING`` (rows in (source, id) order), its values bound by the server
    (sent apart from the statement, not quoted into it). Not prepared: a batch whose values PostgreSQL refuses would
    leave each failed run's statement prepared on the server (and the earlier ``prepare=True`` here never took
    effect: Django turns preparation off on its connections)."""
    params: list = []
    for row in sorted(rows, key=lambda r: (r.source, r.event_id)):
        params.extend(row)
        params.append(received_at)
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_SMALL_INSERT_SQL[len(rows)], params)
        return cursor.rowcount


def _write_sqlite(batch: EventBatch, received_at: dt.datetime) -> int:
    adapt = connection.ops.adapt_datetimefield_value
    ingested_at = adapt(received_at)
    with connection.cursor() as cursor:
        # Writers hold the database lock from BEGIN (IMMEDIATE), so MAX+1 orders batches by commit.
        cursor.execute(f"SELECT COALESCE(MAX(ingest_tx), 0) + 1 FROM {EVENT_TABLE}")  # noqa: S608
        ingest_tx = cursor.fetchone()[0]
        before = _sqlite_total_changes(cursor)
        cursor.executemany(
            f"INSERT INTO {EVENT_TABLE} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "  # noqa: S608
            "ON CONFLICT (source, event_id) DO NOTHING",
            [
                (r.source, r.event_id, r.type, r.subject, adapt(r.time), r.data, ingested_at, ingest_tx)
                for r in batch.rows
            ],
        )
        return _sqlite_total_changes(cursor) - before


def _sqlite_total_changes(cursor) -> int:
    cursor.execute("SELECT total_changes()")
    return cursor.fetchone()[0]
