"""Usage benchmark: the rollup aggregator's catch-up rate and meter query latency on PostgreSQL, beside raw SQL.

Run from the project root with the project's virtualenv::

    .venv/bin/python bench/usage.py --events 1000000 --heavy-events 100000 --keep   # shake-out, ~1 min
    .venv/bin/python bench/usage.py --keep                                          # 10M events, ~10 min
    .venv/bin/python bench/usage.py --keep --skip-catch-up                          # queries only, reuse rollups

It (re-)creates the database of ``--database-url`` (default ``postgres://postgres@127.0.0.1:5433/bench_usage``;
``billing``, ``test_*`` and ``bench_ingest*`` are refused), migrates it (``manage.py migrate``) and loads
``--events`` Kong ``kong.llm_request`` events over 30 days server-side (``INSERT … SELECT … FROM
generate_series``, secondary indexes dropped and rebuilt around it, then ``VACUUM ANALYZE``): ``--subjects``
subjects, one of them heavy with ``--heavy-events`` events spread evenly over the month, the rest random;
data shaped like ``metering/data/kong_events.json`` (``type`` request/response, ``tokens``, 5 models with their
providers, ids); ``ingest_tx`` one per 1,000 rows in time order (1, 2, …: all committed, below every running
transaction, so the aggregator may fold them). With ``--keep`` an existing database holding ``--events``
events is reused (no generation) and kept at the end; without it the database is dropped at the end.

Then, in this process (Django, ``DEBUG=false``, Celery on the in-memory broker so nothing is queued for real
workers):

1. the meter ``llm_tokens`` (the Kong preset: SUM ``$.tokens`` by model, provider, type) is created through
   ``metering.services.meters.meter_create`` (or found), its rollups reset (``meter_rollups_reset``), and
   ``rollups_catch_up`` timed over every event from ``rollup_low = 0``: events/s (``--profile``: the time of
   each SQL statement of the chunks); then ``VACUUM ANALYZE`` of the rollup tables, as autovacuum would do;
2. ``meter_query`` latency (p50/p95 over ``--runs`` runs after ``--warmup`` runs): the heavy subject's month
   by DAY grouped by model, and every subject's monthly total grouped by subject;
3. the same two questions as plain SQL ``GROUP BY`` over ``metering_event`` with the JSON extraction (what a
   naive implementation does), ``--raw-runs`` runs each; the answers are compared with the meter's.

Exit status: 1 on errors (including a meter answer that differs from raw SQL), 0 otherwise, whether or not
the targets are met.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import harness
import psycopg
from harness import DAYS, EVENT_TABLE, EVENT_TYPE, METER_SLUG, MODELS, TX_ROWS, log
from psycopg import sql

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5433/bench_usage"
INSERT_ROWS = 500_000  # rows per INSERT … SELECT transaction

TARGETS = {
    "catch_up_rate": 200_000,  # events/s
    "heavy_p95_ms": 50,
    "all_p95_ms": 1000,
}


# --------------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------------

def heavy_subject() -> str:
    return "consumer:" + _md5_uuid("consumer-0")


def _md5_uuid(text: str) -> str:
    import hashlib

    h = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def insert_sql() -> str:
    """Rows %(lo)s..%(hi)s of %(total)s: time in order of row number over DAYS from %(start)s (with a little
    jitter backwards, as late events do), ingest_tx one per TX_ROWS rows, exactly %(heavy)s rows (evenly spread)
    for the heavy subject ``consumer-0``, the others random among %(others)s subjects."""
    return f"""
    INSERT INTO {EVENT_TABLE} (source, event_id, type, subject, time, data, ingested_at, ingest_tx)
    SELECT 'kong-gateway', gen_random_uuid()::text, '{EVENT_TYPE}', r.subject, r.t,
           {harness.llm_data_sql(request="mod(r.i, 2) = 1")},
           r.t + random() * interval '5 seconds',
           (r.i - 1) / {TX_ROWS} + 1
    FROM (
        SELECT g.i,
               'consumer:' || md5('consumer-' || CASE
                   WHEN (g.i * %(heavy)s) / %(total)s <> ((g.i - 1) * %(heavy)s) / %(total)s THEN 0
                   ELSE 1 + floor(random() * %(others)s)::int END)::uuid::text AS subject,
               greatest(%(start)s::timestamptz,
                        %(start)s::timestamptz + interval '{DAYS} days' * ((g.i - 1) / %(total)s::float8)
                        - random() * interval '2 minutes') AS t,
               1 + floor(random() * {len(MODELS)})::int AS model
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g(i)
    ) AS r
    """


def load_events(url: str, *, total: int, heavy: int, subjects: int, start: dt.datetime) -> dict[str, float]:
    """Empty the event table, insert server-side with its indexes dropped and rebuilt, VACUUM ANALYZE."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(EVENT_TABLE)))
    timings = harness.bulk_insert(url, EVENT_TABLE, ranges=harness.row_ranges(1, total, INSERT_ROWS),
                                  statement=insert_sql(),
                          params=lambda lo, hi: {"lo": lo, "hi": hi, "total": total, "heavy": heavy,
                                                 "others": max(subjects - 1, 1), "start": start})
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.monotonic()
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(EVENT_TABLE)))
        timings["vacuum_s"] = time.monotonic() - started
        size = harness.table_size(conn, EVENT_TABLE)
    log(f"  inserted {total:,} rows in {timings['insert_s']:.0f} s, indexes in {timings['index_s']:.0f} s, "
        f"VACUUM ANALYZE in {timings['vacuum_s']:.0f} s; {EVENT_TABLE}: {size} with indexes")
    return timings


# --------------------------------------------------------------------------------------------------
# Load on the machine (another benchmark may run meanwhile)
# --------------------------------------------------------------------------------------------------

class BusyMeter:
    """Share of the whole machine (all cores) busy between start() and stop(), in % of one core."""

    def __enter__(self) -> BusyMeter:
        self.busy0, self.total0 = harness.machine_cpu_times()
        self.busy = 0.0
        return self

    def __exit__(self, *exc) -> None:
        busy, total = harness.machine_cpu_times()
        cores = os.cpu_count() or 1
        self.busy = 100 * cores * (busy - self.busy0) / max(total - self.total0, 1e-9)


def wait_until_quiet(max_wait: float, threshold: float = 25) -> None:
    """Wait (at most max_wait s) until the machine is idle apart from < threshold % of one core."""
    deadline = time.monotonic() + max_wait
    while True:
        with BusyMeter() as meter:
            time.sleep(1)
        if meter.busy < threshold or time.monotonic() >= deadline:
            if meter.busy >= threshold:
                log(f"  (machine still {meter.busy:.0f}% busy after waiting {max_wait:.0f} s: figures may suffer)")
            return


# --------------------------------------------------------------------------------------------------
# Measurements (Django)
# --------------------------------------------------------------------------------------------------

def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def timed_runs(run: Callable[[], Any], runs: int, warmup: int) -> tuple[list[float], Any]:
    result = None
    for _ in range(warmup):
        result = run()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        result = run()
        samples.append((time.perf_counter() - started) * 1000)
    return samples, result


class StatementProfile:
    """Django execute wrapper: total time per kind of SQL statement."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def __call__(self, execute, statement, params, many, context):
        started = time.perf_counter()
        try:
            return execute(statement, params, many, context)
        finally:
            key = re.sub(r"\s+", " ", statement.strip())[:70]
            self.seconds[key] += time.perf_counter() - started
            self.calls[key] += 1

    def report(self) -> None:
        for key, seconds in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            log(f"    {seconds:8.2f} s  {self.calls[key]:5d}×  {key}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--subjects", type=int, default=1000)
    parser.add_argument("--heavy-events", type=int, default=1_000_000, help="events of the one heavy subject")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--keep", action="store_true",
                        help="reuse the database when it holds this bench's data for the same --events, --subjects "
                             "and --heavy-events (skip generation), and keep it at the end")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per meter query (>= 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before them")
    parser.add_argument("--raw-runs", type=int, default=5, help="timed runs per raw SQL query")
    parser.add_argument("--chunk", type=int, default=None, help="max_events per aggregator chunk (default: the app's)")
    parser.add_argument("--skip-catch-up", action="store_true",
                        help="with --keep: query the rollups as they are (the meter must be caught up)")
    parser.add_argument("--profile", action="store_true", help="time each SQL statement of the catch-up")
    parser.add_argument("--quiet-wait", type=float, default=60, metavar="SECONDS",
                        help="before each step wait up to this long for other load to drop below 25%% of a core")
    args = parser.parse_args(argv)
    harness.check_database_name(args.database_url, example="bench_usage", refuse_prefixes=("bench_ingest",))
    if not 0 < args.heavy_events < args.events or args.subjects < 2:
        parser.error("need 0 < --heavy-events < --events and --subjects >= 2")

    harness.use_project_in_process(args.database_url)
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)

    log("bench/usage.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    errors: list[str] = []
    created = False
    results: dict[str, Any] = {}
    try:
        reuse = False
        wanted = json.dumps({"events": args.events, "subjects": args.subjects, "heavy": args.heavy_events})
        if args.keep and harness.database_exists(args.database_url):
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                loaded = harness.one_row(conn, "SELECT obj_description(to_regclass(%s), 'pg_class')", [EVENT_TABLE])[0]
            reuse = loaded == wanted
            log(f"database {harness.database_name(args.database_url)} exists with {loaded or 'no bench data'}: "
                + ("reusing it" if reuse else f"re-creating it for {wanted}"))
        if not reuse:
            log(f"database: re-creating {harness.database_name(args.database_url)} and migrating")
            harness.recreate_database(args.database_url)
            created = True

        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from metering.meter_rules import KONG_PRESETS
        from metering.models import Meter
        from metering.selectors.usage import meter_query
        from metering.services import rollups
        from metering.services.meters import meter_create

        call_command("migrate", "--no-input", verbosity=0)  # a kept database too: the code may have moved on
        if not reuse:
            start = today - dt.timedelta(days=DAYS)
            log(f"loading {args.events:,} {EVENT_TYPE} events from {start:%Y-%m-%d} for {DAYS} days: "
                f"{args.subjects:,} subjects, {args.heavy_events:,} of them for {heavy_subject()} …")
            results["load"] = load_events(args.database_url, total=args.events, heavy=args.heavy_events,
                                          subjects=args.subjects, start=start)
            with psycopg.connect(args.database_url, autocommit=True) as conn:  # what was loaded, for --keep
                conn.execute(sql.SQL("COMMENT ON TABLE {} IS {}").format(sql.Identifier(EVENT_TABLE),
                                                                         sql.Literal(wanted)))
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT min(time), max(ingest_tx), pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
                           f"pg_size_pretty(pg_total_relation_size('{EVENT_TABLE}')) FROM {EVENT_TABLE}")
            first, max_tx, xmin, size = cursor.fetchone()
        start = first.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + dt.timedelta(days=DAYS)
        if max_tx >= xmin:
            raise RuntimeError(f"ingest_tx up to {max_tx} but the oldest running transaction is {xmin}: "
                               "the aggregator could not fold everything")
        heavy = heavy_subject()
        log(f"{args.events:,} events ({size} with indexes), month {start:%Y-%m-%d} .. {end:%Y-%m-%d}, "
            f"heavy subject {heavy}")

        meter = Meter.objects.filter(slug=METER_SLUG).first()
        if meter is None:
            meter = meter_create(**KONG_PRESETS[METER_SLUG])
            log(f"created meter {meter.slug} (id {meter.pk}) with meter_create")

        # 1. catch-up
        if args.skip_catch_up:
            meter.refresh_from_db()
            if meter.rollup_low <= max_tx:
                raise RuntimeError("--skip-catch-up: the meter is not caught up; run without it")
            log("1. catch-up skipped (--skip-catch-up)")
        else:
            with connection.cursor() as cursor:  # a clean slate, as meter_rollups_reset leaves it, without bloat
                cursor.execute("TRUNCATE metering_hourlyusage, metering_dailyusage, metering_hourlydistinctvalue, "
                               "metering_usageseries")
            meter = rollups.meter_rollups_reset(meter=meter)
            wait_until_quiet(args.quiet_wait)
            kwargs = {"max_events": args.chunk} if args.chunk else {}
            log(f"1. rollups_catch_up from rollup_low = 0, chunks of "
                f"{args.chunk or rollups.CHUNK_EVENTS:,} events …")
            profile = StatementProfile()
            with BusyMeter() as busy, (connection.execute_wrapper(profile) if args.profile
                                       else contextlib.nullcontext()):
                started = time.perf_counter()
                folded = rollups.rollups_catch_up(meter_id=meter.pk, **kwargs)
                elapsed = time.perf_counter() - started
            results["catch_up"] = (folded, elapsed, busy.busy)
            if folded != args.events:
                errors.append(f"catch-up folded {folded:,} events, expected {args.events:,}")
            log(f"  folded {folded:,} events in {elapsed:.1f} s: {folded / elapsed:,.0f} events/s "
                f"(machine busy {busy.busy:.0f}% of {(os.cpu_count() or 1) * 100}%)")
            if args.profile:
                profile.report()
            started = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE metering_hourlyusage")
                cursor.execute("VACUUM ANALYZE metering_dailyusage")
                cursor.execute("VACUUM ANALYZE metering_usageseries")
            log(f"  VACUUM ANALYZE of the rollups: {time.perf_counter() - started:.1f} s")
        with connection.cursor() as cursor:
            cursor.execute("SELECT (SELECT count(*) FROM metering_hourlyusage), (SELECT count(*) FROM "
                           "metering_dailyusage), pg_size_pretty(pg_total_relation_size('metering_hourlyusage')), "
                           "pg_size_pretty(pg_total_relation_size('metering_dailyusage'))")
            hours, days, hour_size, day_size = cursor.fetchone()
        log(f"  rollups: {hours:,} hourly rows ({hour_size}), {days:,} daily rows ({day_size})")

        # 2. + 3. queries
        meter.refresh_from_db()

        def heavy_query():
            return meter_query(meter=meter, start=start, end=end, window_size="DAY", subjects=[heavy],
                               group_by=["model"])

        def all_query():
            return meter_query(meter=meter, start=start, end=end, group_by=["subject"])

        def raw(statement: str, params: list):
            def run():
                with connection.cursor() as cursor:
                    cursor.execute(statement, params)
                    return cursor.fetchall()
            return run

        tokens = "(data ->> 'tokens')::numeric"
        raw_heavy = raw(f"SELECT date_trunc('day', time AT TIME ZONE 'UTC'), data ->> 'model', sum({tokens}) "
                        f"FROM {EVENT_TABLE} WHERE type = %s AND subject = %s AND time >= %s AND time < %s "
                        "GROUP BY 1, 2", [EVENT_TYPE, heavy, start, end])
        raw_all = raw(f"SELECT subject, sum({tokens}) FROM {EVENT_TABLE} WHERE type = %s AND time >= %s "
                      "AND time < %s GROUP BY subject", [EVENT_TYPE, start, end])
        for key, title, query, raw_query in (
                ("heavy", "heavy subject, month by DAY, grouped by model", heavy_query, raw_heavy),
                ("all", "all subjects, monthly total, grouped by subject", all_query, raw_all)):
            wait_until_quiet(args.quiet_wait)
            log(f"2. meter_query: {title} ({args.warmup} warm-up + {args.runs} runs) …")
            with BusyMeter() as busy:
                samples, rows = timed_runs(query, args.runs, args.warmup)
            log(f"  p50 {percentile(samples, 0.5):.1f} ms, p95 {percentile(samples, 0.95):.1f} ms, "
                f"max {max(samples):.1f} ms; {len(rows)} rows (machine busy {busy.busy:.0f}%)")
            wait_until_quiet(args.quiet_wait)
            log(f"3. raw SQL: {title} (1 warm-up + {args.raw_runs} runs) …")
            with BusyMeter() as raw_busy:
                raw_samples, raw_rows = timed_runs(raw_query, args.raw_runs, 1)
            log(f"  p50 {percentile(raw_samples, 0.5):.1f} ms, p95 {percentile(raw_samples, 0.95):.1f} ms; "
                f"{len(raw_rows)} rows (machine busy {raw_busy.busy:.0f}%)")
            results[key] = (samples, raw_samples, busy.busy, raw_busy.busy)
            if key == "heavy":
                mine = {(r.window_start, r.group_by["model"]): r.value for r in rows}
                theirs = {(d.replace(tzinfo=dt.UTC), m): Decimal(v) for d, m, v in raw_rows}
            else:
                mine = {r.subject: r.value for r in rows}
                theirs = {s: Decimal(v) for s, v in raw_rows}
            if mine != theirs:
                diff = [k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k)]
                errors.append(f"{title}: meter_query and raw SQL differ on {len(diff)} rows, e.g. "
                              f"{diff[0]}: {mine.get(diff[0])} vs {theirs.get(diff[0])}")
            else:
                log(f"  answers equal ({len(mine)} rows, total {sum(mine.values()):,})")
        connection.close()
    except (RuntimeError, psycopg.Error, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        harness.drop_unless_kept(args.database_url, keep=args.keep, created=created, errors=errors)

    def mark(ok: bool | None) -> str:
        return "n/a " if ok is None else ("MET " if ok else "MISS")

    log("")
    log(f"summary: {args.events:,} events, {args.subjects:,} subjects, heavy subject {args.heavy_events:,} events, "
        f"{os.cpu_count()} cores")
    lines: list[tuple[str, str, str, bool | None]] = []
    if "load" in results:
        load = results["load"]
        log(f"  load: insert {load['insert_s']:.0f} s, indexes {load['index_s']:.0f} s, "
            f"VACUUM ANALYZE {load['vacuum_s']:.0f} s")
    if "catch_up" in results:
        folded, elapsed, busy = results["catch_up"]
        rate = folded / elapsed
        lines.append(("rollup catch-up", f"{rate:,.0f} events/s ({folded:,} in {elapsed:.1f} s)",
                      f">= {TARGETS['catch_up_rate']:,} events/s", rate >= TARGETS["catch_up_rate"]))
    for key, title, target in (("heavy", "heavy subject month by DAY/model", TARGETS["heavy_p95_ms"]),
                               ("all", "all subjects month by subject", TARGETS["all_p95_ms"])):
        if key not in results:
            continue
        samples, raw_samples, _, _ = results[key]
        p95 = percentile(samples, 0.95)
        lines.append((f"{title}, meter_query", f"p50 {percentile(samples, 0.5):.1f} / p95 {p95:.1f} ms",
                      f"p95 <= {target:,} ms", p95 <= target))
        raw50, raw95 = percentile(raw_samples, 0.5), percentile(raw_samples, 0.95)
        lines.append((f"{title}, raw SQL", f"p50 {raw50:.1f} / p95 {raw95:.1f} ms",
                      f"{raw50 / percentile(samples, 0.5):,.0f}x slower (p50)", None))
    width = max((len(line[0]) for line in lines), default=0)
    value_width = max((len(line[1]) for line in lines), default=0)
    for name, value, wanted, ok in lines:
        log(f"  {mark(ok)} {name:<{width}}  {value:<{value_width}}  {wanted}")
    return harness.exit_status(errors)


if __name__ == "__main__":
    sys.exit(main())
