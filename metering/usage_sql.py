"""SQL fragments for extracting meter values and group-by values from event JSON, per database.

PostgreSQL reads ``data #> path`` (jsonb); SQLite reads ``json_extract(data, path)``. Both give the same
answers for the JSON types meters use:

- a *value* is a JSON number, or a string holding a number (``"42"``, ``" 1.5e3 "``), with
  |value| <= 10^18 (:data:`metering.jsonpath.VALUE_BOUND`); anything else (missing, null, boolean, other
  strings, objects, arrays, out-of-range numbers) is NULL, i.e. "not counted";
- a *group-by value* is the text of a string, number or boolean (``"gpt-4o"``, ``"200"``, ``"true"``),
  or NULL when missing or null.

Every fragment returns ``(sql, params)`` with ``%s`` placeholders.
"""

from __future__ import annotations

import datetime as dt
import functools
from decimal import Decimal
from typing import overload

from django.db import connection

from .jsonpath import NUMERIC_TEXT_MAX_LENGTH, NUMERIC_TEXT_SQL, VALUE_BOUND_SQL, JsonPath

Fragment = tuple[str, list]
SQLITE_EXACT_INTEGER = 2**53


@functools.cache
def is_postgres() -> bool:
    """Whether the default database is PostgreSQL (its backend's, fixed for the process; asked ~20 times a check)."""
    return connection.vendor == "postgresql"


def db_datetime(value: dt.datetime):
    """A datetime as the database compares it (SQLite stores UTC text)."""
    if is_postgres():
        return value
    return connection.ops.adapt_datetimefield_value(value)


@overload
def from_db_datetime(value: None) -> None: ...
@overload
def from_db_datetime(value: dt.datetime | str) -> dt.datetime: ...
def from_db_datetime(value: dt.datetime | str | None) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=dt.UTC)
    parsed = dt.datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@overload
def from_db_number(value: None) -> None: ...
@overload
def from_db_number(value: Decimal | int | float | str) -> Decimal: ...
def from_db_number(value: Decimal | int | float | str | None) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def value_expr(path: JsonPath, data: str = "e.data", *, bounded: bool = True, absent_zero: bool = False) -> Fragment:
    """The meter value at ``path`` as a number, or NULL when it is not counted (:mod:`metering.jsonpath`'s
    rule: a number or numeric string with |value| <= VALUE_BOUND). Never raises, whatever the event holds:
    a string is cast only after the shared pattern and length check.

    ``bounded=False`` leaves out the range check on PostgreSQL, for a caller that extracts the value once in
    a subquery and applies :func:`in_range` to that column (the aggregator: extracting twice costs more than
    the rest of its work). SQLite's expression is always bounded.

    ``absent_zero`` (the meter's ``value_absent = zero``): a value that is missing or JSON null is 0 (as
    :func:`metering.jsonpath.numeric_value` says), anything present is read as above.
    """
    sql, params = _value_expr(path, data, bounded=bounded)
    if not absent_zero:
        return sql, params
    absent_params: list = [path.postgres_path if is_postgres() else path.sqlite_path]
    if is_postgres():
        absent = f"COALESCE(jsonb_typeof({data} #> %s::text[]), 'null') = 'null'"
    else:
        absent = f"COALESCE(json_type({data}, %s), 'null') = 'null'"
    return f"(CASE WHEN {absent} THEN 0 ELSE {sql} END)", [*absent_params, *params]


def _value_expr(path: JsonPath, data: str, *, bounded: bool) -> Fragment:
    if is_postgres():
        p = path.postgres_path
        sql = (
            f"(CASE jsonb_typeof({data} #> %s::text[]) WHEN 'number' THEN ({data} #> %s::text[])::numeric "
            f"WHEN 'string' THEN CASE WHEN length({data} #>> %s::text[]) <= {NUMERIC_TEXT_MAX_LENGTH} "
            f"AND ({data} #>> %s::text[]) ~ %s THEN btrim({data} #>> %s::text[])::numeric END END)"
        )
        params = [p, p, p, p, NUMERIC_TEXT_SQL, p]
    else:
        q = path.sqlite_path
        number = (
            f"(CASE json_type({data}, %s) WHEN 'integer' THEN json_extract({data}, %s) "
            f"WHEN 'real' THEN json_extract({data}, %s) "
            f"WHEN 'text' THEN CASE WHEN length(json_extract({data}, %s)) <= {NUMERIC_TEXT_MAX_LENGTH} "
            f"AND json_extract({data}, %s) REGEXP %s "
            f"THEN CAST(trim(json_extract({data}, %s)) AS NUMERIC) END END)"
        )
        number_params = [q, q, q, q, q, NUMERIC_TEXT_SQL, q]
        # Checked against the bound here, while integers are exact; then SQLite's sum(), which raises on a
        # 64-bit overflow (10 values of 10^18 would), gets integers beyond 2^53 as doubles (inexact there:
        # SQLite is for development, PostgreSQL sums exactly).
        sql = (f"(CASE WHEN {number} BETWEEN -{SQLITE_EXACT_INTEGER} AND {SQLITE_EXACT_INTEGER} THEN {number} "
               f"WHEN {in_range(number)} IS NOT NULL THEN CAST({number} AS REAL) END)")
        return sql, number_params * 5  # bounded either way
    if not bounded:
        return sql, params
    return in_range(sql), [*params, *params]


def in_range(value_sql: str) -> str:
    """``value_sql`` (a number, or NULL) when |value| <= VALUE_BOUND, else NULL. ``value_sql`` appears twice:
    pass a column, or repeat its parameters. (SQLite compares in 64-bit integers or doubles.)"""
    return (f"(CASE WHEN {value_sql} BETWEEN -{VALUE_BOUND_SQL} AND {VALUE_BOUND_SQL} "
            f"THEN {value_sql} END)")


def text_expr(path: JsonPath, data: str = "e.data") -> Fragment:
    if is_postgres():
        return f"({data} #>> %s::text[])", [path.postgres_path]
    p = path.sqlite_path
    return (
        f"(CASE json_type({data}, %s) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN NULL "
        f"ELSE CAST(json_extract({data}, %s) AS TEXT) END)",
        [p, p],
    )


def groups_object_expr(group_by: dict[str, JsonPath], data: str = "e.data") -> Fragment:
    """A JSON object of every group-by value, keys sorted, so equal groups compare equal."""
    if not group_by:
        return ("'{}'::jsonb" if is_postgres() else "json_object()"), []
    parts: list[str] = []
    params: list = []
    for name in sorted(group_by):
        sql, p = text_expr(group_by[name], data)
        parts.append(f"%s, {sql}")
        params.extend([name, *p])
    function = "jsonb_build_object" if is_postgres() else "json_object"
    return f"{function}({', '.join(parts)})", params


def groups_object_from_columns(names: list[str], columns: list[str]) -> Fragment:
    """Like :func:`groups_object_expr`, from group-by values already extracted as text into ``columns``
    (``names`` sorted): the aggregator groups by the text values and builds the object once per group."""
    if not names:
        return ("'{}'::jsonb" if is_postgres() else "json_object()"), []
    function = "jsonb_build_object" if is_postgres() else "json_object"
    return f"{function}({', '.join(f'%s, {column}' for column in columns)})", list(names)


def group_key_from_columns(columns: list[str]) -> str:
    """The group-by values (text columns, in sorted-name order) as one text key, for joining chunk partials
    to their usage series by plain text equality: each value as ``<length>:<value>`` or ``-`` for none,
    comma-separated, which no two different value lists share."""
    if not columns:
        return "''"
    parts = [f"(CASE WHEN {column} IS NULL THEN '-' ELSE CAST(length({column}) AS TEXT) || ':' || {column} END)"
             for column in columns]
    return " || ',' || ".join(parts)


def rollup_group_expr(name: str, column: str) -> Fragment:
    """One group-by value out of a usage series' stored group object, as text."""
    if is_postgres():
        return f"({column} ->> %s)", [name]
    return f"json_extract({column}, %s)", [f'$."{name}"']


def hour_bucket(column: str) -> str:
    if is_postgres():
        return f"date_trunc('hour', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    return f"strftime('%%Y-%%m-%%d %%H:00:00', {column})"


def day_bucket(column: str) -> str:
    if is_postgres():
        return f"date_trunc('day', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    return f"strftime('%%Y-%%m-%%d 00:00:00', {column})"


def safe_high(cursor) -> int:
    """Every event with ``ingest_tx`` below this is committed (or rolled back) for good.

    PostgreSQL: the oldest transaction still running (its xid and every later one may yet commit).
    SQLite: the caller holds the write lock, so everything visible is everything there is.
    """
    if is_postgres():
        cursor.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    else:
        cursor.execute("SELECT COALESCE(MAX(ingest_tx), 0) + 1 FROM metering_event")
    return int(cursor.fetchone()[0])
