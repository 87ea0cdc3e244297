"""The usage aggregator: folds new events into hourly and daily rollups, in SQL, exactly once.

Each meter has a high-water mark ``rollup_low``. One chunk, in one transaction:

1. lock the meter row (a concurrent aggregator skips it, so two never fold the same events);
2. ``high`` = the oldest transaction still running (:func:`usage_sql.safe_high`): every event with
   ``ingest_tx < high`` is committed for good, so nothing below it can still appear. This is what keeps a
   late-committing ingest transaction from being skipped: ids and ``ingested_at`` are not commit order,
   transaction ids below the snapshot's xmin are;
3. aggregate the meter's events with ``rollup_low ≤ ingest_tx < chunk_high`` with ``GROUP BY`` over the
   JSON paths into a temporary table of hourly partials, create the usage series (subject × group-by
   values) not seen before, add the partials to ``HourlyUsage`` by series (plain inserts for hours after
   the newest stored one, upserts for the others), fold the same partials into ``DailyUsage`` (UTC days)
   likewise, and for UNIQUE_COUNT add the distinct values;
4. move ``rollup_low`` to ``chunk_high``.

A crash anywhere rolls the chunk back whole, so a rerun neither skips nor double-counts. Queries read
the rollups plus the raw events at or above ``rollup_low`` in one statement (one snapshot).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection, transaction
from django.utils import timezone

from ..meter_rules import MeterDefinition, meter_definition
from ..models import AggregationCursor, DailyUsage, HourlyDistinctValue, HourlyUsage, Meter, UsageSeries
from ..usage_sql import (
    day_bucket,
    db_datetime,
    group_key_from_columns,
    groups_object_from_columns,
    hour_bucket,
    in_range,
    is_postgres,
    safe_high,
    text_expr,
    value_expr,
)

logger = logging.getLogger(__name__)
Aggregation = Meter.Aggregation

CHUNK_EVENTS = 500_000
CHUNK_TABLE = "metering_rollup_chunk"
CHUNK_WORK_MEM = "64MB"  # PostgreSQL, per chunk transaction (and per parallel worker): a chunk's sorts
ROLLUP_COLUMNS = ("event_count, value_count, value_sum, value_min, value_max, latest_time, latest_event, "
                  "latest_value")


@dataclass(frozen=True)
class ChunkResult:
    events: int
    low: int
    high: int
    caught_up: bool


def _chunk_high(cursor, low: int, high: int, max_events: int) -> int:
    """The exclusive upper bound of a chunk of at most ~max_events events (whole transactions)."""
    cursor.execute(
        "SELECT ingest_tx FROM metering_event WHERE ingest_tx >= %s AND ingest_tx < %s "
        "ORDER BY ingest_tx LIMIT 1 OFFSET %s",
        [low, high, max_events],
    )
    row = cursor.fetchone()
    if row is None:
        return high
    return max(int(row[0]), low + 1)


def _merge_set(table: str) -> str:
    """ON CONFLICT assignments that add a chunk's partial aggregate to a stored one."""
    t, x = table, "excluded"
    newer = (f"{x}.latest_time IS NOT NULL AND ({t}.latest_time IS NULL OR {x}.latest_time > {t}.latest_time "
             f"OR ({x}.latest_time = {t}.latest_time AND {x}.latest_event > {t}.latest_event))")
    return (
        f"event_count = {t}.event_count + {x}.event_count, "
        f"value_count = {t}.value_count + {x}.value_count, "
        f"value_sum = {t}.value_sum + {x}.value_sum, "
        f"value_min = CASE WHEN {t}.value_min IS NULL OR {x}.value_min < {t}.value_min "
        f"THEN {x}.value_min ELSE {t}.value_min END, "
        f"value_max = CASE WHEN {t}.value_max IS NULL OR {x}.value_max > {t}.value_max "
        f"THEN {x}.value_max ELSE {t}.value_max END, "
        f"latest_value = CASE WHEN {newer} THEN {x}.latest_value ELSE {t}.latest_value END, "
        f"latest_event = CASE WHEN {newer} THEN {x}.latest_event ELSE {t}.latest_event END, "
        f"latest_time = CASE WHEN {newer} THEN {x}.latest_time ELSE {t}.latest_time END"
    )


@dataclass(frozen=True)
class _ChunkShape:
    """What the chunk's statements depend on: the meter's aggregation and group-by names, and the database."""

    definition: MeterDefinition
    postgres: bool
    names: list[str]  # the meter's group-by names, sorted
    keys: list[str]  # their columns in the chunk table: g0, g1, …

    @classmethod
    def of(cls, definition: MeterDefinition) -> _ChunkShape:
        names = sorted(definition.group_by)
        return cls(definition, is_postgres(), names, [f"g{i}" for i in range(len(names))])

    @property
    def aggregation(self) -> str:
        return self.definition.aggregation

    @property
    def numeric(self) -> bool:
        """Whether the value is a number (SUM, AVG, MIN, MAX, LATEST) rather than absent or a text."""
        return self.aggregation not in (Aggregation.COUNT, Aggregation.UNIQUE_COUNT)

    @property
    def latest(self) -> bool:
        return self.aggregation == Aggregation.LATEST

    @property
    def key_list(self) -> str:
        """``g0, g1, `` (each key followed by a comma and a space)."""
        return "".join(f"{key}, " for key in self.keys)

    def null(self, sql_type: str) -> str:
        """A typed NULL on PostgreSQL (a column of a temporary table needs a type), a plain one on SQLite."""
        return f"CAST(NULL AS {sql_type})" if self.postgres else "NULL"


def _event_value(shape: _ChunkShape) -> tuple[str, list]:
    """The SQL of an event's value: none for COUNT, the text for UNIQUE_COUNT, else the number (the range
    check is applied once to the extracted column, see :func:`_chunk_events`)."""
    if shape.aggregation == Aggregation.COUNT:
        return shape.null("NUMERIC"), []
    if shape.aggregation == Aggregation.UNIQUE_COUNT:
        return text_expr(shape.definition.required_value_path)
    return value_expr(shape.definition.required_value_path, bounded=False, absent_zero=shape.definition.absent_zero)


def _chunk_events(shape: _ChunkShape, low: int, high: int) -> tuple[str, list]:
    """The meter's events with ``low <= ingest_tx < high``, one row each: subject, group-by values as text
    (g0, g1, …), hour, the value ``v`` (and for LATEST the time, id and rank ``rn`` of each event in its hour)."""
    key_selects, params = [], []
    for name, key in zip(shape.names, shape.keys, strict=True):
        sql, key_params = text_expr(shape.definition.group_by[name])
        key_selects.append(f"{sql} AS {key}")
        params.extend(key_params)
    value_sql, value_params = _event_value(shape)
    # PostgreSQL groups by sorting; bytewise (COLLATE "C") sorts faster, and grouping is the same under any
    # deterministic collation.
    subject = 'e.subject COLLATE "C"' if shape.postgres else "e.subject"
    # PostgreSQL would flatten this subquery into the aggregates above and extract the value once per
    # aggregate (4 times). A volatile output column keeps it a subquery (value extracted once per event);
    # unlike OFFSET 0, clock_timestamp() is parallel safe, so workers read, extract and sort in parallel.
    fence = ", clock_timestamp() AS fence" if shape.postgres else ""
    events = (
        f"SELECT {subject} AS subject, {''.join(f'{s}, ' for s in key_selects)}{hour_bucket('e.time')} "
        "AS bucket_start, " + ("e.time, e.id, " if shape.latest else "")
        + f"{value_sql} AS v{fence} FROM metering_event e "
        "WHERE e.type = %s AND e.ingest_tx >= %s AND e.ingest_tx < %s"
    )
    params += [*value_params, shape.definition.event_type, low, high]
    if shape.numeric:  # a value out of range (metering.jsonpath.VALUE_BOUND) is not counted
        columns = f"subject, {shape.key_list}bucket_start, " + ("time, id, " if shape.latest else "")
        events = f"SELECT {columns}{in_range('v')} AS v FROM ({events}) AS extracted"
    if shape.latest:
        events = (f"SELECT events.*, CASE WHEN v IS NOT NULL THEN ROW_NUMBER() OVER (PARTITION BY subject, "
                  f"{shape.key_list}bucket_start, v IS NULL ORDER BY time DESC, id DESC) END AS rn "
                  f"FROM ({events}) AS events")
    return events, params


def _hourly_partials(shape: _ChunkShape, events: str) -> str:
    """The events grouped by subject, hour and group-by values, as rollup columns."""
    count_value = "count(v)" if shape.aggregation != Aggregation.COUNT else "count(*)"
    null_numeric = shape.null("NUMERIC")
    if shape.numeric:
        values = "COALESCE(sum(v), 0) AS value_sum, min(v) AS value_min, max(v) AS value_max, "
    else:
        values = f"0 AS value_sum, {null_numeric} AS value_min, {null_numeric} AS value_max, "
    if shape.latest:
        latest = ("max(CASE WHEN rn = 1 THEN time END) AS latest_time, max(CASE WHEN rn = 1 THEN id END) "
                  "AS latest_event, max(CASE WHEN rn = 1 THEN v END) AS latest_value")
    else:
        latest = (f"{shape.null('TIMESTAMPTZ')} AS latest_time, {shape.null('BIGINT')} AS latest_event, "
                  f"{null_numeric} AS latest_value")
    return (
        f"SELECT subject, {shape.key_list}bucket_start, count(*) AS event_count, {count_value} AS value_count, "
        + values + latest
        + f" FROM ({events}) AS events GROUP BY subject, bucket_start{''.join(f', {key}' for key in shape.keys)}"
    )


def _temp_schema(shape: _ChunkShape) -> str:
    return "pg_temp" if shape.postgres else "temp"


def _create_chunk_table(cursor, shape: _ChunkShape, partials: str, params: list) -> None:
    """The chunk's hourly partials into a (new) temporary table."""
    if shape.postgres:
        # Sorts and hash tables of a chunk in memory. Group by sorting: about every other event starts a group
        # of its own, so a hash table saves nothing, while sorted groups come out in index order and the
        # sorting (with the reading and the JSON extraction) is shared by parallel workers; the planner,
        # which prices the extraction like reading a column, underrates that parallel work.
        cursor.execute(f"SET LOCAL work_mem = '{CHUNK_WORK_MEM}'", [])
        cursor.execute("SET LOCAL enable_hashagg = off", [])
        cursor.execute("SET LOCAL parallel_tuple_cost = 0.01", [])
    cursor.execute(f"DROP TABLE IF EXISTS {_temp_schema(shape)}.{CHUNK_TABLE}", [])
    cursor.execute(f"CREATE TEMPORARY TABLE {CHUNK_TABLE} AS {partials}", params)
    if shape.postgres:
        cursor.execute("SET LOCAL enable_hashagg TO DEFAULT", [])
        cursor.execute("SET LOCAL parallel_tuple_cost TO DEFAULT", [])


def _chunk_totals(cursor) -> tuple[int, object, object]:
    """The chunk table's number of events, newest hour and newest (UTC) day."""
    cursor.execute(f"SELECT COALESCE(SUM(event_count), 0), max(bucket_start), max({day_bucket('bucket_start')}) "
                   f"FROM {CHUNK_TABLE}", [])
    events_folded, newest_hour, newest_day = cursor.fetchone()
    return int(events_folded or 0), newest_hour, newest_day


def _daily_partials(shape: _ChunkShape) -> str:
    """The chunk's hourly partials folded by UTC day (LATEST: the newest hour's latest value of each day)."""
    day = day_bucket("bucket_start")
    day_rank = (f"ROW_NUMBER() OVER (PARTITION BY subject, {shape.key_list}{day} ORDER BY "
                "CASE WHEN latest_time IS NULL THEN 1 ELSE 0 END, latest_time DESC, latest_event DESC)"
                if shape.latest else "NULL")
    if shape.latest:
        latest = ("max(CASE WHEN rn = 1 THEN latest_time END) AS latest_time, max(CASE WHEN rn = 1 THEN latest_event "
                  "END) AS latest_event, max(CASE WHEN rn = 1 THEN latest_value END) AS latest_value ")
    else:
        latest = ("max(latest_time) AS latest_time, max(latest_event) AS latest_event, "
                  "max(latest_value) AS latest_value ")
    return (
        f"SELECT subject, {shape.key_list}day AS bucket_start, sum(event_count) AS event_count, "
        "sum(value_count) AS value_count, sum(value_sum) AS value_sum, min(value_min) AS value_min, "
        "max(value_max) AS value_max, "
        + latest
        + f"FROM (SELECT c.*, {day} AS day, {day_rank} AS rn FROM {CHUNK_TABLE} c) AS c "
        f"GROUP BY subject, {shape.key_list}day"
    )


def _add_distinct_values(cursor, shape: _ChunkShape, events: str, events_params: list, series_join: str,
                         series_params: list) -> None:
    """UNIQUE_COUNT: the chunk's distinct values of each series and hour (read from the events again)."""
    distinct = HourlyDistinctValue._meta.db_table
    cursor.execute(
        f"INSERT INTO {distinct} (series_id, bucket_start, value) "  # noqa: S608
        f"SELECT s.id, c.bucket_start, c.v FROM (SELECT DISTINCT subject, {shape.key_list}"
        f"bucket_start, v FROM ({events}) AS events WHERE v IS NOT NULL) AS c {series_join} WHERE 1 = 1 "
        "ON CONFLICT (series_id, bucket_start, value) DO NOTHING",
        [*events_params, *series_params],
    )


def _record_newest_buckets(cursor, meter_id: int, newest_hour, newest_day) -> None:
    """Move the meter's newest stored hour and day forward (never back), for :func:`_merge`'s next chunk.
    Raw SQL keeps the database's own datetime representation (SQLite: the UTC text it compares)."""
    cursor.execute(
        "UPDATE metering_meter SET "
        "rollup_newest_hour = CASE WHEN rollup_newest_hour IS NULL OR rollup_newest_hour < %s THEN %s "
        "ELSE rollup_newest_hour END, "
        "rollup_newest_day = CASE WHEN rollup_newest_day IS NULL OR rollup_newest_day < %s THEN %s "
        "ELSE rollup_newest_day END WHERE id = %s",
        [newest_hour, newest_hour, newest_day, newest_day, meter_id],
    )


def _fold_into_rollups(cursor, meter: Meter, shape: _ChunkShape, events: str, events_params: list) -> None:
    """Add the chunk table's partials to the meter's series: hourly, daily, and distinct values."""
    group_object, group_params = groups_object_from_columns(shape.names, shape.keys)
    group_key = group_key_from_columns([f"c.{key}" for key in shape.keys])
    _add_series(cursor, meter.pk, keys=shape.keys, group_key=group_key, group_object=group_object,
                group_params=group_params)
    series_join = (f"JOIN metering_usageseries s ON s.meter_id = %s AND s.subject = c.subject "
                   f"AND s.group_key = {group_key}")
    series_params = [meter.pk]
    hours = f"SELECT s.id AS series_id, c.bucket_start, {_prefixed('c')} FROM {CHUNK_TABLE} c {series_join}"
    _merge(cursor, HourlyUsage._meta.db_table, rows=hours, params=series_params,
           newest=_stored(meter.rollup_newest_hour))
    days = (f"SELECT s.id AS series_id, c.bucket_start, {_prefixed('c')} FROM ({_daily_partials(shape)}) AS c "
            f"{series_join}")
    _merge(cursor, DailyUsage._meta.db_table, rows=days, params=series_params,
           newest=_stored(meter.rollup_newest_day))
    if shape.aggregation == Aggregation.UNIQUE_COUNT:
        _add_distinct_values(cursor, shape, events, events_params, series_join, series_params)


def _aggregate_chunk(cursor, meter: Meter, definition: MeterDefinition, low: int, high: int) -> int:
    """Fold the meter's events with ``low <= ingest_tx < high`` into its rollups (inside the chunk transaction).

    One pass over the events extracts each value and group-by value once and groups by subject, hour and
    the group-by values as text into a temporary table of hourly partials; the JSON group object is built
    per group, not per event. :func:`_add_series` creates the series the meter lacks yet, :func:`_merge`
    adds the partials to the hourly rollups, and the same partials folded by UTC day to the daily ones.
    """
    shape = _ChunkShape.of(definition)
    events, events_params = _chunk_events(shape, low, high)
    _create_chunk_table(cursor, shape, _hourly_partials(shape, events), events_params)
    events_folded, newest_hour, newest_day = _chunk_totals(cursor)
    if events_folded:
        _fold_into_rollups(cursor, meter, shape, events, events_params)
        _record_newest_buckets(cursor, meter.pk, newest_hour, newest_day)
    cursor.execute(f"DROP TABLE {_temp_schema(shape)}.{CHUNK_TABLE}", [])
    return events_folded


def _stored(value):
    return None if value is None else db_datetime(value)


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{column.strip()}" for column in ROLLUP_COLUMNS.split(","))


def _add_series(cursor, meter_id: int, *, keys: list[str], group_key: str, group_object: str,
                group_params: list) -> None:
    """Create the series (subject × group-by values) of the chunk's partials that the meter lacks yet.

    Distinct text values first, then one key and one JSON object per new series. The caller holds the
    meter row lock, so no one else adds this meter's series meanwhile."""
    key_list = "".join(f", {key}" for key in keys)
    cursor.execute(
        "INSERT INTO metering_usageseries (meter_id, subject, group_key, group_values) "  # noqa: S608
        f"SELECT %s, c.subject, {group_key}, {group_object} FROM (SELECT DISTINCT subject{key_list} "
        f"FROM {CHUNK_TABLE}) AS c WHERE NOT EXISTS (SELECT 1 FROM metering_usageseries s "
        f"WHERE s.meter_id = %s AND s.subject = c.subject AND s.group_key = {group_key}) ORDER BY c.subject",
        [meter_id, *group_params, meter_id],
    )


def _merge(cursor, table: str, *, rows: str, params: list, newest) -> None:
    """Add partial aggregates (``rows``: series_id, bucket_start and the rollup columns) to a rollup table.

    Buckets after the meter's newest stored bucket (``newest``, kept on the meter) cannot have a row yet:
    a plain INSERT (no speculative insertion), in primary-key order so index pages are touched in order.
    Older buckets (the one the previous chunk ended in, late events) go through ON CONFLICT. The caller
    holds the meter row lock, so no one else writes the meter's rollups meanwhile; were a row there after
    all, the INSERT would fail and roll the chunk back: never a double count."""
    columns = f"series_id, bucket_start, {ROLLUP_COLUMNS}"
    upsert = (f"INSERT INTO {table} ({columns}) SELECT series_id, bucket_start, {ROLLUP_COLUMNS} "
              f"FROM ({rows}) AS r WHERE r.bucket_start <= %s "
              f"ON CONFLICT (series_id, bucket_start) DO UPDATE SET {_merge_set(table)}")
    cursor.execute(
        f"INSERT INTO {table} ({columns}) SELECT series_id, bucket_start, {ROLLUP_COLUMNS} "
        f"FROM ({rows}) AS r" + (" WHERE r.bucket_start > %s" if newest is not None else "")
        + " ORDER BY series_id, bucket_start",
        [*params, *([newest] if newest is not None else [])],
    )
    if newest is not None:
        cursor.execute(upsert, [*params, newest])


def rollups_process_chunk(*, meter_id: int, max_events: int = CHUNK_EVENTS) -> ChunkResult | None:
    """Fold one chunk of a meter's new events into its rollups. None when another worker holds the meter.

    A chunk that succeeds clears the meter's recorded rollup error (in the same UPDATE)."""
    with transaction.atomic():
        meter = Meter.objects.select_for_update(skip_locked=True).filter(pk=meter_id).first()
        if meter is None:
            return None
        cleared = {"rollup_error": "", "rollup_failed_at": None} if meter.rollup_error else {}
        with connection.cursor() as cursor:
            high = safe_high(cursor)
            low = meter.rollup_low
            if high <= low:
                if cleared:
                    Meter.objects.filter(pk=meter.pk).update(**cleared)
                return ChunkResult(0, low, low, True)
            chunk_high = _chunk_high(cursor, low, high, max_events)
            events = _aggregate_chunk(cursor, meter, meter_definition(meter), low, chunk_high)
        Meter.objects.filter(pk=meter.pk).update(rollup_low=chunk_high, **cleared)
    return ChunkResult(events, low, chunk_high, chunk_high >= high)


ROLLUP_ERROR_MAX = 2000


def meter_rollup_failed(*, meter_id: int, exc: BaseException) -> str:
    """Record on the meter why folding it failed (the chunk itself was rolled back); returns the text.

    Shown in the meter admin, on the dashboard and in the job run; cleared by the next chunk that succeeds."""
    error = f"{type(exc).__name__}: {exc}".strip()[:ROLLUP_ERROR_MAX]
    Meter.objects.filter(pk=meter_id).update(rollup_error=error, rollup_failed_at=timezone.now())
    return error


def _is_fatal(exc: BaseException) -> bool:
    """Errors that end the whole job rather than one meter's part of it (the task's time limit)."""
    return isinstance(exc, SoftTimeLimitExceeded)


def rollups_catch_up_isolated(*, meter_id: int, slug: str = "", **options) -> tuple[int, str | None]:
    """:func:`rollups_catch_up`, with a failure recorded on the meter and returned instead of raised:
    ``(events folded, error or None)``. Each chunk is its own transaction (a savepoint inside an outer
    one), so a failed chunk leaves nothing behind and the caller can go on with the next meter."""
    try:
        return rollups_catch_up(meter_id=meter_id, **options), None
    except Exception as exc:
        if _is_fatal(exc):
            raise
        logger.exception("usage rollup of meter %s failed; the other meters go on", slug or meter_id)
        return 0, meter_rollup_failed(meter_id=meter_id, exc=exc)


def rollups_catch_up(*, meter_id: int, time_budget: float | None = None,
                     progress: Callable[[int], None] | None = None, max_events: int = CHUNK_EVENTS) -> int:
    """Process chunks until the meter is caught up (or the time budget is spent); returns events folded."""
    started = time.monotonic()
    total = 0
    while True:
        result = rollups_process_chunk(meter_id=meter_id, max_events=max_events)
        if result is None:
            return total
        total += result.events
        if progress is not None:
            progress(total)
        if result.caught_up or (time_budget is not None and time.monotonic() - started > time_budget):
            return total


@transaction.atomic
def meter_rollups_reset(*, meter: Meter) -> Meter:
    """Forget a meter's rollups: the aggregator rebuilds them from raw events (after a definition change)."""
    meter = Meter.objects.select_for_update().get(pk=meter.pk)
    series = UsageSeries.objects.filter(meter=meter)
    for model in (HourlyUsage, DailyUsage, HourlyDistinctValue):
        model.objects.filter(series__in=series).delete()
    series.delete()
    Meter.objects.filter(pk=meter.pk).update(rollup_low=0, rollup_newest_hour=None, rollup_newest_day=None)
    meter.rollup_low, meter.rollup_newest_hour, meter.rollup_newest_day = 0, None, None
    return meter


def usage_rebuild(*, meter: Meter, progress: Callable[[int, int], None] | None = None) -> int:
    """Rebuild one meter's rollups from every raw event; ``progress(done, total)`` after each chunk.

    A failure is recorded on the meter (see :func:`meter_rollup_failed`) and raised; the meter keeps what
    the chunks before it folded, and its raw events still answer queries."""
    try:
        meter_rollups_reset(meter=meter)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM metering_event WHERE type = %s", [meter.event_type])
            total = int(cursor.fetchone()[0])
        if progress is not None:
            progress(0, total)
        return rollups_catch_up(meter_id=meter.pk,
                                progress=(lambda done: progress(done, total)) if progress else None)
    except Exception as exc:
        if not _is_fatal(exc):
            logger.exception("rebuilding the usage of meter %s failed", meter.slug)
            meter_rollup_failed(meter_id=meter.pk, exc=exc)
        raise


# --- subject and event-type activity -----------------------------------------------------------------------

ACTIVITY_CURSOR = "activity"


def activity_process_chunk(*, max_events: int = CHUNK_EVENTS) -> ChunkResult:
    """Count events per subject and per type (first/last seen), for the admin's consumer pickers."""
    with transaction.atomic():
        AggregationCursor.objects.get_or_create(name=ACTIVITY_CURSOR)
        state = AggregationCursor.objects.select_for_update().get(name=ACTIVITY_CURSOR)
        with connection.cursor() as cursor:
            high = safe_high(cursor)
            if high <= state.low:
                return ChunkResult(0, state.low, state.low, True)
            chunk_high = _chunk_high(cursor, state.low, high, max_events)
            span = [state.low, chunk_high]
            cursor.execute(
                "INSERT INTO metering_subjectactivity (subject, event_count, first_seen, last_seen, last_ingested_at) "
                "SELECT subject, count(*), min(time), max(time), max(ingested_at) FROM metering_event "
                "WHERE ingest_tx >= %s AND ingest_tx < %s GROUP BY subject "
                "ON CONFLICT (subject) DO UPDATE SET "
                "event_count = metering_subjectactivity.event_count + excluded.event_count, "
                "first_seen = CASE WHEN excluded.first_seen < metering_subjectactivity.first_seen "
                "THEN excluded.first_seen ELSE metering_subjectactivity.first_seen END, "
                "last_seen = CASE WHEN excluded.last_seen > metering_subjectactivity.last_seen "
                "THEN excluded.last_seen ELSE metering_subjectactivity.last_seen END, "
                "last_ingested_at = CASE WHEN excluded.last_ingested_at > metering_subjectactivity.last_ingested_at "
                "THEN excluded.last_ingested_at ELSE metering_subjectactivity.last_ingested_at END",
                span,
            )
            cursor.execute(
                "INSERT INTO metering_eventtypeactivity (type, event_count, last_seen) "
                "SELECT type, count(*), max(time) FROM metering_event "
                "WHERE ingest_tx >= %s AND ingest_tx < %s GROUP BY type "
                "ON CONFLICT (type) DO UPDATE SET "
                "event_count = metering_eventtypeactivity.event_count + excluded.event_count, "
                "last_seen = CASE WHEN excluded.last_seen > metering_eventtypeactivity.last_seen "
                "THEN excluded.last_seen ELSE metering_eventtypeactivity.last_seen END",
                span,
            )
            cursor.execute("SELECT count(*) FROM metering_event WHERE ingest_tx >= %s AND ingest_tx < %s", span)
            events = int(cursor.fetchone()[0])
        AggregationCursor.objects.filter(pk=state.pk).update(low=chunk_high)
    return ChunkResult(events, state.low, chunk_high, chunk_high >= high)


ACTIVITY_FAILURE = "(activity counters)"  # not a meter slug


@dataclass(frozen=True)
class ProcessReport:
    events_by_meter: dict[str, int]
    activity_events: int
    failures: dict[str, str] = field(default_factory=dict)  # meter slug (or ACTIVITY_FAILURE) → error

    @property
    def total(self) -> int:
        return sum(self.events_by_meter.values())


def usage_process_all(*, time_budget: float = 20.0) -> ProcessReport:
    """The beat job: activity counters, then every meter, until caught up or the budget is spent.

    Each meter is folded on its own: a meter that fails has its error recorded on it (and in the report)
    and the job goes on with the next one; the activity counters likewise."""
    started = time.monotonic()
    activity = 0
    failures: dict[str, str] = {}
    try:
        while True:
            result = activity_process_chunk()
            activity += result.events
            if result.caught_up or time.monotonic() - started > time_budget:
                break
    except Exception as exc:
        if _is_fatal(exc):
            raise
        logger.exception("activity counters failed; the meters go on")
        failures[ACTIVITY_FAILURE] = f"{type(exc).__name__}: {exc}"[:ROLLUP_ERROR_MAX]
    by_meter: dict[str, int] = {}
    for meter_id, slug in Meter.objects.order_by("pk").values_list("pk", "slug"):
        remaining = max(1.0, time_budget - (time.monotonic() - started))
        by_meter[slug], error = rollups_catch_up_isolated(meter_id=meter_id, slug=slug, time_budget=remaining)
        if error is not None:
            failures[slug] = error
    return ProcessReport(by_meter, activity, failures)
