"""Storing a validated batch of events: one transaction, deduplicated on (source, id), all or nothing.

PostgreSQL: the batch is COPYed into a per-connection temporary staging table, then moved with one
``INSERT … SELECT … ORDER BY source, event_id ON CONFLICT (source, event_id) DO NOTHING``. Sorting gives
every transaction the same lock order, so overlapping concurrent batches wait for each other instead of
deadlocking; a duplicate racing in from another transaction waits for that transaction and is then
ignored (or inserted, if the other one rolled back). Small batches skip the staging table.

SQLite: one ``executemany`` of ``INSERT … ON CONFLICT (source, event_id) DO NOTHING`` inside an
IMMEDIATE transaction (writers are serialized by the database lock). ``ON CONFLICT`` is used rather than
``INSERT OR IGNORE`` so that only the dedup key is ignored, never another constraint.

The answer is sent only after COMMIT, so a 2xx means the events are durable; a failure rolls back the
whole batch, leaving no dedup claim behind, so the gateway's retry counts once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import weakref
from dataclasses import dataclass

from django.db import DatabaseError, DataError, OperationalError, connection, transaction

from ..cloudevents import EventRow

logger = logging.getLogger(__name__)

EVENT_TABLE = "metering_event"
STAGING_TABLE = "metering_event_staging"
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
    stored: int

    @property
    def duplicates(self) -> int:
        return self.received - self.stored


def events_ingest(*, rows: list[EventRow], received_at: dt.datetime) -> IngestResult:
    """Store a batch atomically; duplicates (in the batch or already stored) are accepted and ignored."""
    unique: dict[tuple[str, str], EventRow] = {}
    for row in rows:
        unique.setdefault((row.source, row.event_id), row)  # the first of a repeated id wins
    batch = list(unique.values())
    if not batch:
        return IngestResult(received=len(rows), stored=0)
    writer = _write_postgresql if connection.vendor == "postgresql" else _write_sqlite
    # A small batch on PostgreSQL is one INSERT statement, atomic and committed on its own in autocommit mode:
    # no BEGIN/COMMIT round trips (single-event POSTs are mostly round trips).
    single_statement = (connection.vendor == "postgresql" and len(batch) <= SMALL_BATCH
                        and connection.get_autocommit())
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            if single_statement:
                stored = writer(batch, received_at)
            else:
                with transaction.atomic():
                    stored = writer(batch, received_at)
            return IngestResult(received=len(rows), stored=stored)
        except DataError as exc:  # PostgreSQL: the data holds a number jsonb cannot (e.g. 1e400000); rolled back
            raise EventsNotStorable(str(exc).strip().splitlines()[0] if str(exc).strip() else "data error") from exc
        except OperationalError as exc:
            # Deadlock or serialization failure: the transaction was rolled back, so retrying is safe.
            if attempt == MAX_ATTEMPTS or not _is_retryable(exc):
                raise
            logger.warning("ingest attempt %s failed (%s); retrying", attempt, exc)
            time.sleep(0.01 * attempt)
    raise AssertionError("unreachable")


def _is_retryable(exc: DatabaseError) -> bool:
    cause = exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None)
    return sqlstate in ("40P01", "40001") or "database is locked" in str(exc)


def _write_postgresql(batch: list[EventRow], received_at: dt.datetime) -> int:
    with connection.cursor() as cursor:
        if len(batch) <= SMALL_BATCH:
            values = ", ".join(["(%s, %s, %s, %s, %s, %s::jsonb)"] * len(batch))
            params: list = []
            for row in sorted(batch, key=lambda r: (r.source, r.event_id)):
                params.extend(row)
            cursor.execute(
                f"INSERT INTO {EVENT_TABLE} ({_COLUMNS}) "  # noqa: S608 - constants only
                f"SELECT v.*, %s, pg_current_xact_id()::text::bigint FROM (VALUES {values}) "
                "AS v(source, event_id, type, subject, time, data) "
                "ON CONFLICT (source, event_id) DO NOTHING",
                [received_at, *params],
            )
            return cursor.rowcount
        raw = connection.connection
        if raw not in _staging_ready:
            cursor.execute(
                f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGING_TABLE} "
                "(source text, event_id text, type text, subject text, time timestamptz, data jsonb) "
                "ON COMMIT DELETE ROWS"
            )
            # Remember it only once committed: a rolled-back CREATE leaves no table behind.
            transaction.on_commit(lambda: _staging_ready.add(raw))
        # COPY goes through the driver's own cursor: Django's wrapper turns its errors into Django's (DataError
        # for a number jsonb cannot hold → 400, OperationalError for a lost connection), as for every other
        # statement here.
        with connection.wrap_database_errors, cursor.cursor.copy(
            f"COPY {STAGING_TABLE} (source, event_id, type, subject, time, data) FROM STDIN"
        ) as copy:
            for row in batch:
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO {EVENT_TABLE} ({_COLUMNS}) "  # noqa: S608 - constants only
            f"SELECT source, event_id, type, subject, time, data, %s, pg_current_xact_id()::text::bigint "
            f"FROM {STAGING_TABLE} ORDER BY source, event_id "
            "ON CONFLICT (source, event_id) DO NOTHING",
            [received_at],
        )
        # The staging rows vanish at COMMIT (ON COMMIT DELETE ROWS) or with a ROLLBACK.
        return cursor.rowcount


def _write_sqlite(batch: list[EventRow], received_at: dt.datetime) -> int:
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
                for r in batch
            ],
        )
        return _sqlite_total_changes(cursor) - before


def _sqlite_total_changes(cursor) -> int:
    cursor.execute("SELECT total_changes()")
    return cursor.fetchone()[0]
