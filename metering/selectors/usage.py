"""Usage queries: rollups plus the not-yet-rolled-up tail, aggregated in the database, in one statement.

Every query is ONE SQL statement (so it reads one consistent snapshot even while the aggregator moves the
meter's high-water mark) built from up to four branches:

- ``D`` pieces from ``DailyUsage`` and ``H`` pieces from ``HourlyUsage`` (see :mod:`metering.windows`),
  joined to their ``UsageSeries`` for the subject and the group-by values;
- ``R`` pieces (partial hours) from raw events, by time;
- the tail: raw events with ``ingest_tx`` at or above the meter's ``rollup_low`` that fall in D or H
  pieces — events not folded into the rollups yet, so a query sees an event the moment it is stored.

The branches are ``UNION ALL``-ed, joined to a ``VALUES`` table of pieces, and grouped by window, subject
and group-by values in SQL. Billing, previews and entitlements call :func:`usage_total`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import connection

from common.prepared import prepared_cursor

from ..meter_rules import MeterDefinition, meter_definition
from ..models import Meter
from ..usage_sql import (
    db_datetime,
    from_db_number,
    is_postgres,
    rollup_group_expr,
    text_expr,
    value_expr,
)
from ..windows import WINDOW_SIZES, Piece, WindowError, decompose, time_zone, windows

Aggregation = Meter.Aggregation
MAX_PIECES = 12_000
FILTER_OPERATORS = ("$eq", "$ne", "$in", "$nin")


class UsageQueryError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class GroupFilter:
    """``key`` compared with ``values``: ``$eq``/``$ne`` take one value, ``$in``/``$nin`` several.

    A missing group value never equals anything, so it passes ``$ne`` and ``$nin``.
    """

    key: str
    operator: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class UsageRow:
    window_start: dt.datetime
    window_end: dt.datetime
    subject: str | None
    group_by: dict[str, str | None]
    value: Decimal
    index: int = 0  # the window's position in ``window_bounds`` (windows may share bounds in batch queries)
    final: bool = False  # part "since" on PostgreSQL: events below the statement's snapshot xmin (``UsageRows.high``)


@dataclass
class _Sql:
    parts: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, sql: str, params: Iterable[Any] = ()) -> None:
        self.parts.append(sql)
        self.params.extend(params)


def equality_filters(filters: dict[str, str] | None) -> list[GroupFilter]:
    return [GroupFilter(key, "$eq", (str(value),)) for key, value in (filters or {}).items()]


def _filter_sql(expression: str, expression_params: list, group_filter: GroupFilter) -> tuple[str, list]:
    values = list(group_filter.values)
    placeholders = ", ".join(["%s"] * len(values))
    if group_filter.operator == "$eq":
        return f"{expression} = %s", [*expression_params, values[0]]
    if group_filter.operator == "$in":
        return f"{expression} IN ({placeholders})", [*expression_params, *values]
    if group_filter.operator == "$ne":
        return f"({expression} IS NULL OR {expression} <> %s)", [*expression_params, *expression_params, values[0]]
    return (f"({expression} IS NULL OR {expression} NOT IN ({placeholders}))",
            [*expression_params, *expression_params, *values])


def _pieces_values(pieces: Sequence[Piece], since: Sequence[int] = ()) -> tuple[str, list]:
    """``w(idx, a, b, kind, subj)`` as a VALUES list (typed on PostgreSQL); with ``since`` (per window index), also
    each piece's lowest ``ingest_tx``, ``w.since``."""
    rows, params = [], []
    for n, piece in enumerate(pieces):
        if n == 0 and is_postgres():
            rows.append("(%s::int, %s::timestamptz, %s::timestamptz, %s::text, %s::text"
                        + (", %s::bigint)" if since else ")"))
        else:
            rows.append("(%s, %s, %s, %s, %s" + (", %s)" if since else ")"))
        params.extend([piece.index, db_datetime(piece.start), db_datetime(piece.end), piece.kind, piece.subject])
        if since:
            params.append(since[piece.index])
    columns = "idx, a, b, kind, subj" + (", since" if since else "")
    return f"w ({columns}) AS (VALUES " + ", ".join(rows) + ")", params


def _bounds(pieces: Sequence[Piece]) -> tuple[Any, Any]:
    return db_datetime(min(p.start for p in pieces)), db_datetime(max(p.end for p in pieces))


# The rollup columns a branch reads (all of them, or the distinct value of UNIQUE_COUNT).
MEASURES = ("event_count", "value_count", "value_sum", "value_min", "value_max", "latest_time", "latest_event",
            "latest_value")
# Raw events as rollup columns: COUNT counts the event; the other numeric aggregations count its value too.
COUNT_MEASURES = ("1", "1", "0", "NULL", "NULL", "NULL", "NULL", "NULL")
VALUE_MEASURES = ("1", "CASE WHEN e.v IS NULL THEN 0 ELSE 1 END", "COALESCE(e.v, 0)", "e.v", "e.v",
                  "CASE WHEN e.v IS NULL THEN NULL ELSE e.time END", "CASE WHEN e.v IS NULL THEN NULL ELSE e.id END",
                  "e.v")


@dataclass
class _UsageQuery:
    """What :func:`_usage_sql` is asked, and the names its branches share."""

    meter: Meter
    definition: MeterDefinition
    pieces: Sequence[Piece]
    group_by: Sequence[str]
    group_by_subject: bool
    subjects: Sequence[str] | None
    filters: Sequence[GroupFilter]
    low_hint: int
    part: str = "all"  # "all"; "settled": what the rollups hold (below rollup_low); "since": raw events only
    since: tuple[int, ...] = ()  # part "since", per window index: its raw events with ingest_tx at or above this
    keys: list[str] = field(init=False)  # the group-by names grouped or filtered on, each once
    key_columns: list[str] = field(init=False)  # their columns in every branch: g0, g1, …
    unique: bool = field(init=False)
    latest: bool = field(init=False)
    per_subject_pieces: bool = field(init=False)  # pieces of several subjects' own periods (usage_total_for_periods)
    measure_aliases: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.keys = list(dict.fromkeys([*self.group_by, *(f.key for f in self.filters)]))
        self.key_columns = [f"g{i}" for i in range(len(self.keys))]
        self.unique = self.definition.aggregation == Aggregation.UNIQUE_COUNT
        self.latest = self.definition.aggregation == Aggregation.LATEST
        self.per_subject_pieces = any(p.subject is not None for p in self.pieces)
        self.measure_aliases = ("val",) if self.unique else MEASURES

    @property
    def grouped_keys(self) -> list[str]:
        """The keys rows are grouped by (filter-only keys are selected, not grouped)."""
        return [key for key in self.keys if key in self.group_by]


def _placeholders(values: Sequence[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def _subjects_condition(query: _UsageQuery, alias: str) -> tuple[list[str], list]:
    """``alias.subject IN (…)`` when the query names subjects (none: nothing matches)."""
    if query.subjects is None:
        return [], []
    if not query.subjects:
        return ["1 = 0"], []
    return [f"{alias}.subject IN ({_placeholders(query.subjects)})"], list(query.subjects)


def _filter_conditions(query: _UsageQuery, expressions: dict[str, tuple[str, list]]) -> tuple[list[str], list]:
    """The query's group-by filters on ``expressions`` (key → SQL of its value)."""
    conditions, params = [], []
    for group_filter in query.filters:
        expression, expression_params = expressions[group_filter.key]
        condition, condition_params = _filter_sql(expression, expression_params, group_filter)
        conditions.append(condition)
        params.extend(condition_params)
    return conditions, params


def _rollup_sources(query: _UsageQuery) -> list[tuple[str, tuple[str, ...]]]:
    """Rollup tables and the piece kinds read from each; UNIQUE_COUNT reads its distinct values from the
    hourly table for both D and H pieces."""
    if query.unique:
        return [("metering_hourlydistinctvalue", ("D", "H"))]
    return [("metering_dailyusage", ("D",)), ("metering_hourlyusage", ("H",))]


def _rollup_branch(query: _UsageQuery, table: str, kinds: tuple[str, ...], pieces: Sequence[Piece]) -> _Sql:
    """Rows of a rollup table in the pieces of ``kinds``: window index, subject, group-by values, measures.

    Rollup rows name their series (meter × subject × group-by values); the series' primary key
    (series, bucket_start) finds each one's buckets."""
    expressions = {key: rollup_group_expr(key, "s.group_values") for key in query.keys}
    selected = ["w.idx AS idx", "s.subject AS subject"]
    select_params: list = []
    for column, key in zip(query.key_columns, query.keys, strict=True):
        selected.append(f"{expressions[key][0]} AS {column}")
        select_params.extend(expressions[key][1])
    sources = ["value"] if query.unique else MEASURES
    selected += [f"r.{source} AS {name}" for source, name in zip(sources, query.measure_aliases, strict=True)]
    low, high = _bounds(pieces)
    conditions = [f"w.kind IN ({_placeholders(kinds)})", "r.bucket_start >= w.a", "r.bucket_start < w.b",
                  "s.meter_id = %s", "r.bucket_start >= %s", "r.bucket_start < %s"]
    params: list = [*kinds, query.meter.pk, low, high]
    subject_conditions, subject_params = _subjects_condition(query, "s")
    conditions += subject_conditions
    params += subject_params
    if query.per_subject_pieces:
        conditions.append("s.subject = w.subj")
    filter_conditions, filter_params = _filter_conditions(query, expressions)
    conditions += filter_conditions
    params += filter_params
    branch = _Sql()
    branch.add(f"SELECT {', '.join(selected)} FROM metering_usageseries s JOIN {table} r ON r.series_id = s.id "
               "JOIN w ON " + " AND ".join(conditions),
               [*select_params, *params])
    return branch


def _raw_value(query: _UsageQuery) -> tuple[str, list]:
    """The SQL of an event's value: none for COUNT, the text for UNIQUE_COUNT, else the number."""
    if query.definition.aggregation == Aggregation.COUNT:
        return "NULL", []
    if query.unique:
        return text_expr(query.definition.required_value_path)
    return value_expr(query.definition.required_value_path, absent_zero=query.definition.absent_zero)


def _raw_measures(query: _UsageQuery) -> Sequence[str]:
    """An event's contribution to each measure, named like the rollup columns."""
    if query.unique:
        return ["e.v"]
    if query.definition.aggregation == Aggregation.COUNT:
        return COUNT_MEASURES
    return VALUE_MEASURES


def _raw_events(query: _UsageQuery, pieces: Sequence[Piece], *, tail: bool) -> tuple[str, list]:
    """The subquery of the meter's events in the pieces' time range, with their value and group-by values
    extracted once: by time for R pieces, and for the tail (D and H pieces) only the events at or above the
    meter's ``rollup_low``, not folded into the rollups yet."""
    value_sql, value_params = _raw_value(query)
    columns = ["e.id", "e.subject", "e.time", "e.ingest_tx", f"{value_sql} AS v"]
    params: list = [*value_params]
    for column, key in zip(query.key_columns, query.keys, strict=True):
        key_sql, key_params = text_expr(query.definition.group_by[key])
        columns.append(f"{key_sql} AS {column}")
        params.extend(key_params)
    if _reads_newest(query.part):
        columns.append(f"e.ingest_tx < {SNAPSHOT_XMIN} AS fin")
    low, high = _bounds(pieces)
    if _reads_newest(query.part):
        return _newest_events(query, columns, params, low, high)
    where = ["e.type = %s", "e.time >= %s", "e.time < %s"]
    params += [query.definition.event_type, low, high]
    if query.part == "settled":  # R pieces: only the events the rollups' snapshot also counts
        where.append("e.ingest_tx < (SELECT rollup_low FROM metering_meter WHERE id = %s)")
        params.append(query.meter.pk)
    elif query.part == "since":  # SQLite (PostgreSQL's: _newest_events)
        where.append("e.ingest_tx >= %s")  # the lowest; each piece's own in the join (_raw_branch)
        params.append(min(query.since))
    if tail:
        where.append("e.ingest_tx >= (SELECT rollup_low FROM metering_meter WHERE id = %s)")
        params.append(query.meter.pk)
        if query.low_hint:  # redundant while rollup_low >= low_hint (usage_rows checks), but the planner can use it
            where.append("e.ingest_tx >= %s")
            params.append(query.low_hint)
    subject_conditions, subject_params = _subjects_condition(query, "e")
    where += subject_conditions
    params += subject_params
    # OFFSET 0 keeps the tail a separate subquery, read through the ingest_tx index (it is small) instead of walking
    # the subject's whole period in the (subject, time) index.
    offset = " OFFSET 0" if tail and is_postgres() else ""
    return f"SELECT {', '.join(columns)} FROM metering_event e WHERE {' AND '.join(where)}{offset}", params


# The largest ingest_tx: the newest events' upper bound, there only for the planner (see _newest_events).
_LAST_TX = 2**63 - 1


def _newest_events(query: _UsageQuery, columns: list[str], params: list, low: Any, high: Any) -> tuple[str, list]:
    """The "since" part's events (``ingest_tx`` at or above the lowest mark), for a statement that is prepared
    (usage_rows) and runs on every metered entitlement check.

    Its plan must not depend on the values: a plan for the values cost ~0.3 ms of PostgreSQL's planning per check,
    and a generic plan, which cannot see how recent the mark is, would walk a busy subject's whole period in the
    (subject, time) index. So the events are read in a fenced subquery (OFFSET 0) whose only usable index is
    ``ingest_tx``, and every condition's value comes through an InitPlan (``(SELECT %s)``), which the planner
    cannot look into: planned for the values or not, the estimates are the same, so after its first five runs
    PostgreSQL keeps the generic plan, its custom plans costing as much plus their planning. The ``ingest_tx``
    range has an upper bound that filters nothing: a bounded range of unknown values is estimated as narrow
    (0.5 %), an open one as a third of the table, whose sequential scan would then look cheaper than the index."""
    inner = ["type = (SELECT %s::text)", "ingest_tx >= (SELECT %s::bigint)", "ingest_tx <= (SELECT %s::bigint)"]
    params += [query.definition.event_type, min(query.since), _LAST_TX]
    where = ["e.time >= (SELECT %s::timestamptz)", "e.time < (SELECT %s::timestamptz)"]
    params += [low, high]
    if query.subjects is not None:
        where.append("e.subject = ANY((SELECT %s::text[])::text[])")  # the cast: an array, not a subquery's rows
        params.append(list(query.subjects))
    return (f"SELECT {', '.join(columns)} FROM (SELECT * FROM metering_event WHERE {' AND '.join(inner)} OFFSET 0) "
            f"AS e WHERE {' AND '.join(where)} OFFSET 0", params)


def _raw_branch(query: _UsageQuery, pieces: Sequence[Piece], *, tail: bool) -> _Sql:
    """Raw events as rows shaped like the rollup branches', joined to their pieces (R, or D and H for the
    tail) and filtered on the extracted group-by values. The "since" part reads its events once, from the
    statement's ``newest`` (PostgreSQL), not once per piece."""
    events_params: list[Any] = []
    index = "w.idx"
    if _reads_newest(query.part):
        source = "newest"
        index = "w.idx * 2 + CASE WHEN e.fin THEN 1 ELSE 0 END"  # decoded by usage_rows (UsageRow.final)
    else:
        events_sql, events_params = _raw_events(query, pieces, tail=tail)
        source = f"({events_sql})"
    join = ["w.kind " + ("<> 'R'" if tail else "= 'R'"), "e.time >= w.a", "e.time < w.b"]
    if query.part == "since":
        join.append("e.ingest_tx >= w.since")
    if query.per_subject_pieces:
        join.append("e.subject = w.subj")
    extracted: dict[str, tuple[str, list]] = {
        key: (f"e.{column}", []) for column, key in zip(query.key_columns, query.keys, strict=True)}
    conditions, params = _filter_conditions(query, extracted)
    if query.unique:
        conditions.append("e.v IS NOT NULL")
    selected = [*(f"e.{c} AS {c}" for c in query.key_columns),
                *(f"{m} AS {a}" for m, a in zip(_raw_measures(query), query.measure_aliases, strict=True))]
    branch = _Sql()
    branch.add(
        f"SELECT {index} AS idx, e.subject AS subject, {', '.join(selected)} "
        f"FROM {source} e JOIN w ON {' AND '.join(join)}"
        + (f" WHERE {' AND '.join(conditions)}" if conditions else ""),
        [*events_params, *params],
    )
    return branch


def _reads_newest(part: str) -> bool:
    """Whether a statement of ``part`` reads its events once, as ``newest``, and splits its rows at the snapshot's
    xmin (the "since" part on PostgreSQL)."""
    return part == "since" and is_postgres()


# The oldest transaction still running when the statement's snapshot was taken: every event with an ingest_tx below
# it is committed (or rolled back) for good, so what the statement sees below it is all there will ever be.
SNAPSHOT_XMIN = "(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)"


def _branches(query: _UsageQuery) -> list[_Sql]:
    """The rollup branches (D, H pieces), then the raw ones: R pieces by time, and the tail of D and H."""
    branches = []
    for table, kinds in _rollup_sources(query):
        kind_pieces = [p for p in query.pieces if p.kind in kinds]
        if kind_pieces:
            branches.append(_rollup_branch(query, table, kinds, kind_pieces))
    raw_pieces = [p for p in query.pieces if p.kind == "R"]
    rolled_pieces = [p for p in query.pieces if p.kind != "R" and query.part == "all"]
    for kind_pieces, tail in ((raw_pieces, False), (rolled_pieces, True)):
        if kind_pieces:
            branches.append(_raw_branch(query, kind_pieces, tail=tail))
    return branches


def _union_all(branches: Sequence[_Sql]) -> _Sql:
    union = _Sql()
    for n, branch in enumerate(branches):
        if n:
            union.add(" UNION ALL ")
        union.add("".join(branch.parts), branch.params)
    return union


def _group_columns(query: _UsageQuery) -> list[str]:
    return ["x.idx", *(["x.subject"] if query.group_by_subject else []),
            *(f"x.{c}" for c, key in zip(query.key_columns, query.keys, strict=True) if key in query.group_by)]


def _aggregated(query: _UsageQuery, union_sql: str, group_columns: list[str]) -> tuple[str, str]:
    """The FROM source over the union and the aggregates of each group: distinct values for UNIQUE_COUNT,
    otherwise the rollup columns combined (LATEST: the value of the newest row, ranked in its group)."""
    if query.unique:
        return f"({union_sql}) AS x", "count(DISTINCT x.val)"
    rank = ""
    if query.latest:
        partition = ", ".join(c.replace("x.", "") for c in group_columns)
        rank = (f", ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY "
                "CASE WHEN latest_time IS NULL THEN 1 ELSE 0 END, latest_time DESC, latest_event DESC) AS rn")
    aggregate = ("sum(x.event_count), sum(x.value_count), sum(x.value_sum), min(x.value_min), max(x.value_max), "
                 + ("max(CASE WHEN x.rn = 1 THEN x.latest_value END)" if query.latest else "NULL"))
    return f"(SELECT u.*{rank} FROM ({union_sql}) AS u) AS x", aggregate


def _usage_sql(
    *,
    meter: Meter,
    definition: MeterDefinition,
    pieces: Sequence[Piece],
    group_by: Sequence[str],
    group_by_subject: bool,
    subjects: Sequence[str] | None,
    filters: Sequence[GroupFilter],
    low_hint: int,
    part: str = "all",
    since: tuple[int, ...] = (),
) -> tuple[str, list, list[str]]:
    """The one statement of :func:`usage_rows`: its SQL, parameters and the group-by keys of its rows.

    ``WITH w (the pieces) SELECT low, g.*`` where g groups the ``UNION ALL`` of the branches by window,
    (subject) and group-by values; every row carries the ``rollup_low`` the statement saw (one row of NULLs
    but that when nothing matched)."""
    query = _UsageQuery(meter=meter, definition=definition, pieces=pieces, group_by=group_by,
                        group_by_subject=group_by_subject, subjects=subjects, filters=filters, low_hint=low_hint,
                        part=part, since=since)
    values_sql, values_params = _pieces_values(pieces, since)
    union = _union_all(_branches(query))
    group_columns = _group_columns(query)
    source, aggregate = _aggregated(query, "".join(union.parts), group_columns)
    sql = _Sql()
    sql.add("WITH " + values_sql, values_params)
    if _reads_newest(query.part):  # the newest events of every piece, read once through the ingest_tx index
        events_sql, events_params = _raw_events(query, pieces, tail=False)
        sql.add(f", newest AS MATERIALIZED ({events_sql})", events_params)
    high = f"{SNAPSHOT_XMIN} AS high, " if _reads_newest(query.part) else ""
    sql.add(f" SELECT (SELECT rollup_low FROM metering_meter WHERE id = %s) AS low, {high}g.* "
            "FROM (SELECT 1 AS one) AS one "
            f"LEFT JOIN (SELECT {', '.join(group_columns)}, {aggregate} FROM {source} "
            f"GROUP BY {', '.join(group_columns)}) AS g ON 1 = 1",
            [meter.pk, *union.params])
    return "".join(sql.parts), sql.params, query.grouped_keys


def _since_by_window(part: str, since_tx: int | Sequence[int], windows: int) -> tuple[int, ...]:
    if part != "since":
        return ()
    if isinstance(since_tx, int):
        return (since_tx,) * windows
    if len(since_tx) != windows:
        raise ValueError("since_tx: one per window")
    return tuple(since_tx)


def _rollup_low(meter: Meter) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT rollup_low FROM metering_meter WHERE id = %s", [meter.pk])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


class UsageRows(list[UsageRow]):
    """The rows of :func:`usage_rows`, with the meter's ``rollup_low`` its statement saw and, for the "since" part
    on PostgreSQL, its snapshot's xmin (``high``; 0 otherwise): rows of events below it are ``final``."""

    low: int = 0
    high: int = 0


def usage_rows(
    *,
    meter: Meter,
    pieces: Sequence[Piece],
    window_bounds: Sequence[tuple[dt.datetime, dt.datetime]],
    group_by: Sequence[str] = (),
    group_by_subject: bool = False,
    subjects: Sequence[str] | None = None,
    filters: Sequence[GroupFilter] = (),
    part: str = "all",
    since_tx: int | Sequence[int] = 0,
) -> UsageRows:
    """Aggregate a meter over pieces of windows; one row per window × (subject) × group-by values, of one part of
    the events (``rows.low``: the meter's ``rollup_low`` the statement saw):

    - ``all``: every event (rollups, raw R pieces, and the tail not rolled up yet);
    - ``settled``: the events below that ``rollup_low`` only (rollups, and R pieces' raw events below it): what
      no later ingest can change, since every event stored from then on has a higher ``ingest_tx``;
    - ``since``: the raw events with ``ingest_tx >= since_tx``, by time (every piece must be an R piece);
      ``since_tx`` may be one per window (of ``window_bounds``), so windows read from different marks at once.

    So for additive aggregations ``settled`` (seeing ``low``) plus ``since`` from that ``low`` is ``all``, at any
    later time (:mod:`metering.selectors.live_usage`).

    The tail branch of ``all`` reads raw events at or above the statement's own ``rollup_low`` (a subquery, so the
    answer comes from one snapshot). A subquery's value is unknown to the planner, which would then plan
    for a third of all events; so ``rollup_low`` is read first and passed as well, as a literal lower bound
    the planner can estimate with (the tail is usually tiny). That bound is only redundant while the meter's
    ``rollup_low`` has not gone down in between (a rebuild resets it to 0): the statement returns the value
    it saw, and when it is lower than the hint the query runs again without one.
    """
    if part not in ("all", "settled", "since"):
        raise ValueError(f"unknown usage part {part!r}")
    if part == "since" and any(p.kind != "R" for p in pieces):
        raise ValueError("the 'since' part reads raw events only: R pieces")
    definition = meter_definition(meter)
    for key in [*group_by, *(f.key for f in filters)]:
        if key not in definition.group_by:
            raise UsageQueryError("groupBy", f'"{key}" is not a group-by of meter {meter.slug}; '
                                             f"known: {', '.join(sorted(definition.group_by)) or 'none'}")
    if not pieces:
        empty = UsageRows()
        empty.low = _rollup_low(meter)
        return empty
    if len(pieces) > MAX_PIECES:
        raise UsageQueryError("windowSize", "the query needs too many windows: use a larger windowSize "
                                            "or a shorter range")
    arguments: dict[str, Any] = {"meter": meter, "definition": definition, "pieces": pieces, "group_by": group_by,
                 "group_by_subject": group_by_subject, "subjects": subjects, "filters": filters, "part": part,
                 "since": _since_by_window(part, since_tx, len(window_bounds))}
    low_hint = _rollup_low(meter) if part == "all" and any(p.kind != "R" for p in pieces) else 0
    # The newest events' statement runs on every metered entitlement check: prepared, it is parsed once per
    # connection (0.9 ms of PostgreSQL's CPU unprepared, 0.45 ms prepared, for a busy customer).
    with (prepared_cursor() if _reads_newest(part) else connection.cursor()) as cursor:
        statement, params, grouped_keys = _usage_sql(**arguments, low_hint=low_hint)
        cursor.execute(statement, params)
        fetched = cursor.fetchall()
        seen = fetched[0][0] if fetched else None
        if low_hint and seen is not None and seen < low_hint:  # rollups reset meanwhile: the hint was wrong
            statement, params, grouped_keys = _usage_sql(**arguments, low_hint=0)
            cursor.execute(statement, params)
            fetched = cursor.fetchall()
            seen = fetched[0][0] if fetched else None

    rows = UsageRows()
    rows.low = int(seen or 0)
    split = _reads_newest(part)  # the snapshot's xmin is the second column, each index carries its half
    if split and fetched:
        rows.high = int(fetched[0][1])
    offset = 2 if group_by_subject else 1
    for record in (record[2 if split else 1:] for record in fetched):
        if record[0] is None:  # nothing matched
            continue
        index, final = divmod(record[0], 2) if split else (record[0], 0)
        subject = record[1] if group_by_subject else None
        groups = {key: record[offset + i] for i, key in enumerate(grouped_keys)}
        measures_out = record[offset + len(grouped_keys):]
        value = _final_value(definition.aggregation, measures_out)
        if value is None:
            continue
        start, end = window_bounds[index]
        rows.append(UsageRow(start, end, subject, groups, value, index, bool(final)))
    rows.sort(key=lambda r: (r.window_start, r.subject or "", sorted((k, v or "") for k, v in r.group_by.items())))
    return rows


def _final_value(aggregation: str, measures: Sequence[Any]) -> Decimal | None:
    if aggregation == Aggregation.UNIQUE_COUNT:
        count = int(measures[0] or 0)
        return Decimal(count) if count else None
    event_count, value_count, value_sum, value_min, value_max, latest_value = measures
    event_count, value_count = int(event_count or 0), int(value_count or 0)
    if aggregation == Aggregation.COUNT:
        return Decimal(event_count) if event_count else None
    if aggregation == Aggregation.SUM:
        return from_db_number(value_sum) if event_count else None
    if not value_count:
        return None
    if aggregation == Aggregation.AVG:
        return from_db_number(value_sum) / Decimal(value_count)
    if aggregation == Aggregation.MIN:
        return from_db_number(value_min)
    if aggregation == Aggregation.MAX:
        return from_db_number(value_max)
    return from_db_number(latest_value)


# --- public selectors -------------------------------------------------------------------------------------


def meter_query(
    *,
    meter: Meter,
    start: dt.datetime,
    end: dt.datetime,
    window_size: str | None = None,
    window_time_zone: str | None = None,
    subjects: Sequence[str] | None = None,
    group_by: Sequence[str] = (),
    filters: Sequence[GroupFilter] = (),
    group_by_subject: bool | None = None,
) -> list[UsageRow]:
    """OpenMeter's meter query: usage per window (DST-correct in ``window_time_zone``) and group. ``start`` and
    ``end`` need not be aligned to the window size: the first and last windows are clipped to them (their rows
    carry the clipped bounds), see :func:`metering.windows.windows`."""
    if window_size is not None and window_size not in WINDOW_SIZES:
        raise UsageQueryError("windowSize", f"windowSize must be one of {', '.join(WINDOW_SIZES)}")
    try:
        tz = time_zone(window_time_zone)
        bounds = windows(start, end, window_size, tz)
    except WindowError as exc:
        raise UsageQueryError(exc.field, str(exc)) from None
    group_by = list(dict.fromkeys(group_by))
    if group_by_subject is None:  # OpenMeter: rows carry the subject when grouped or filtered by it
        group_by_subject = "subject" in group_by or bool(subjects)
    group_keys = [key for key in group_by if key != "subject"]
    if window_size == "MINUTE":
        pieces = [Piece(i, a, b, "R") for i, (a, b) in enumerate(bounds)]
    else:
        pieces = [piece for i, (a, b) in enumerate(bounds) for piece in decompose(i, a, b)]
    return usage_rows(meter=meter, pieces=pieces, window_bounds=bounds, group_by=group_keys,
                      group_by_subject=group_by_subject, subjects=subjects, filters=filters)


def usage_total(
    *,
    meter: Meter,
    subjects: Sequence[str],
    start: dt.datetime,
    end: dt.datetime,
    filters: dict[str, str] | None = None,
) -> Decimal:
    """The meter's value for these subjects over ``[start, end)`` with equality filters (0 when no usage)."""
    return usage_total_for_periods(meter=meter, subject_periods=[(s, start, end) for s in subjects], filters=filters)


def usage_total_for_periods(
    *,
    meter: Meter,
    subject_periods: Sequence[tuple[str, dt.datetime, dt.datetime]],
    filters: dict[str, str] | None = None,
) -> Decimal:
    """One value over several subjects, each counted only inside its own ``[start, end)`` (attribution
    windows clipped to a billing period). Exact for every aggregation, not a sum of per-subject values."""
    pieces = [piece for subject, a, b in subject_periods if a < b for piece in decompose(0, a, b, subject)]
    if not pieces:
        return Decimal(0)
    subjects = sorted({s for s, a, b in subject_periods if a < b})
    rows = usage_rows(meter=meter, pieces=pieces, window_bounds=[(min(p.start for p in pieces),
                                                                   max(p.end for p in pieces))],
                      subjects=subjects, filters=equality_filters(filters))
    return rows[0].value if rows else Decimal(0)


def usage_series(
    *,
    meter: Meter,
    subjects: Sequence[str] | None,
    start: dt.datetime,
    end: dt.datetime,
    window_size: str,
    window_time_zone: str | None = None,
    filters: dict[str, str] | None = None,
) -> list[UsageRow]:
    """Per-window totals (for charts); the first and last windows are clipped to ``[start, end)``."""
    return meter_query(meter=meter, start=start, end=end, window_size=window_size,
                       window_time_zone=window_time_zone, subjects=None if subjects is None else list(subjects),
                       filters=equality_filters(filters), group_by_subject=False)
