"""Entitlement check benchmark: ``GET /api/v1/customers/{idOrKey}/entitlements/{featureKey}/value`` at a fixed rate.

Target: p99 ≤ 10 ms at 500 requests/s on PostgreSQL (read-scope token, gunicorn with 2 workers; issue 17 — an
earlier issue asked p99 ≤ 20 ms).

Run from the project root with the project's virtualenv::

    .venv/bin/python bench/entitlements.py --keep                # seed bench_entitlements (~1 min), sync + gthread
    .venv/bin/python bench/entitlements.py --keep --worker-class gthread --rate 300 --seconds 60
    .venv/bin/python bench/entitlements.py --keep --profile      # + py-spy of the workers during the run
    .venv/bin/python bench/entitlements.py --keep --no-load --cprofile        # SQL, EXPLAIN, in-process CPU only

Steps:

1. the database of ``--database-url`` (default ``postgres://postgres@127.0.0.1:5433/bench_entitlements``; only
   names starting with ``bench_entitlements`` are accepted) is dropped, re-created and migrated
   (``manage.py migrate`` with ``DJANGO_SETTINGS_MODULE=billing_site.settings.local DEBUG=false``). With
   ``--keep`` an existing database seeded with the same ``--customers``/``--events`` is reused as it is, and
   the database is kept at the end (dropped otherwise);
2. seeding through the services: the ``llm_tokens`` meter (Kong preset), four features (``openai-tokens`` on
   the meter with the filter ``provider = openai``, ``ai-gateway`` boolean, ``model-access`` static,
   ``anthropic-tokens`` on the meter with ``provider = anthropic``), a published plan ``pro`` (unit price per
   token + metered entitlement limit 500,000 hard, boolean, static, and a ``credit_only`` metered entitlement that
   answers from the customer's live credits), ``--customers`` customers, each with a USD 50 credit grant and two
   subjects (``consumer:<uuid>`` and ``user-<n>``, as a Kong consumer), subscribed since 35-60
   days (half anchored on the calendar month, half on their start instant, so half of the billing periods start
   mid-hour);
3. ``--events`` Kong events over the last 30 days inserted server-side (``INSERT … SELECT generate_series``,
   secondary indexes dropped and rebuilt around it): 70 % ``kong.llm_request`` (5 models, 3 providers), 30 %
   ``kong.api_request``; customers skewed (floor(customers × random()²): customer 0 has ≈ 3 % of
   all events); 10 % of the events name the username instead of the consumer id; ``ingest_tx`` one per 1,000
   rows. Then ``rollups_catch_up`` and ``VACUUM ANALYZE``, then ``--tail-events`` events of the last 10
   minutes above the meter's ``rollup_low`` (not rolled up yet, as between two aggregator runs); then, for a new or
   a kept database, the cycles due now are closed as beat would have (ended periods invoiced, credits burnt);
4. ``manage.py create_api_token bench --scope read``;
5. in this process: the SQL statements of one entitlement check (heavy and median customer, each feature),
   ``EXPLAIN (ANALYZE, BUFFERS)`` of the usage statement of the heavy customer, and the CPU per request of
   ``--inprocess`` requests per feature through ``billing_site.wsgi.application`` — what gunicorn serves, the
   entitlement check's fast route in front of Django (no HTTP; ``--cprofile`` for a profile);
6. for each ``--worker-class`` (default: sync, then gthread): ``gunicorn billing_site.wsgi`` with
   ``--workers`` workers, then an open-loop load: requests scheduled at exactly ``--rate`` per second for
   ``--warmup`` + ``--seconds`` seconds, random customers (skewed like their traffic: the busy ones ask
   more), features (metered / boolean / static / credits, a quarter each) and idOrKey (key, 10 % numeric id), sent by
   ``--concurrency`` threads over keep-alive connections (a GET is retried once on a fresh connection when
   the server closed an idle one, as HTTP client pools do). Latency is measured from the scheduled send
   time, so a slow server cannot slow the client down and hide its queue (coordinated omission); when
   requests fall more than ``--max-lag`` seconds behind, the rest are counted as errors, not sent. Printed:
   achieved rate, p50/p95/p99/max (all, and per feature kind), errors, peak RSS of each worker, CPU split.
   ``--profile`` runs ``py-spy record`` on every worker during the measured part and prints the hottest
   frames.

Client and server share the machine: CPU taken by anything else makes the figures pessimistic (printed as
"other"). Exit status 1 only on errors (non-200 answers, transport failures, a server that does not start).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import hashlib
import math
import os
import queue
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import harness
import psycopg
from harness import CONTROL_PLANE, DAYS, EVENT_TABLE, METER_SLUG, MODELS, ROOT, TX_ROWS, log

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5433/bench_entitlements"
VALUE_PATH = "/api/v1/customers/{}/entitlements/{}/value"
SEED_TABLE = "bench_entitlements_seed"
FEATURES = {"metered": "openai-tokens", "boolean": "ai-gateway", "static": "model-access",
            "credits": "anthropic-tokens"}
CREDIT_GRANT = 5_000  # minor units (USD 50.00) granted to every customer, read by the credit_only entitlement
LIMIT = Decimal(500_000)
INSERT_ROWS = 250_000
TARGET_P99_MS = 10.0
TARGET_RATE = 500.0


def consumer_id(n: int) -> str:
    """Kong consumer id of customer n; SQL builds the same text with md5('consumer-' || n)::uuid."""
    return str(uuid.UUID(hex=hashlib.md5(f"consumer-{n}".encode()).hexdigest()))  # noqa: S324


def skewed_customer(rng: random.Random, customers: int) -> int:
    """The law of the SQL loader: floor(customers × random()²) — a few busy customers, a long quiet tail."""
    return min(customers - 1, int(customers * rng.random() ** 2))


# --------------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------------


def check_database_name(url: str) -> None:
    name = harness.database_name(url)
    if not name.startswith("bench_entitlements"):
        raise SystemExit(f"refusing to use database {name!r}: this benchmark only uses bench_entitlements*")


def seeded_with(url: str) -> dict[str, str]:
    """The seed parameters recorded in a kept database ({} when none)."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            rows = conn.execute(f"SELECT key, value FROM {SEED_TABLE}").fetchall()
    except psycopg.Error:
        return {}
    return dict(rows)


def insert_events_sql() -> str:
    """Rows %(lo)s..%(hi)s of %(total)s, in time order over [%(start)s, %(end)s) with jitter."""
    models = harness.sql_texts([m for m, _ in MODELS])
    providers = harness.sql_texts([p for _, p in MODELS])
    return f"""
    INSERT INTO {EVENT_TABLE} (source, event_id, type, subject, time, data, ingested_at, ingest_tx)
    SELECT 'kong-gateway', gen_random_uuid()::text, r.type,
           CASE WHEN r.by_name THEN 'user-' || r.k ELSE 'consumer:' || md5('consumer-' || r.k)::uuid::text END,
           r.t,
           CASE WHEN r.type = 'kong.llm_request' THEN jsonb_build_object(
               'subject_type', 'consumer_id',
               'type', CASE WHEN mod(r.i, 2) = 1 THEN 'request' ELSE 'response' END,
               'tokens', CASE WHEN mod(r.i, 2) = 1 THEN 1 + floor(random() * 2000)::int
                              ELSE 1 + floor(random() * 800)::int END,
               'model', (ARRAY[{models}])[r.model],
               'provider', (ARRAY[{providers}])[r.model],
               'api_request_id', gen_random_uuid()::text,
               'ai_plugin_name', 'ai-proxy',
               'http_status', 200,
               'control_plane_id', '{CONTROL_PLANE}')
           ELSE jsonb_build_object(
               'subject_type', 'consumer_id',
               'request_method', (ARRAY['POST','POST','GET','GET','PUT','DELETE'])[1 + mod(r.i, 6)],
               'request_uri', '/v1/orders',
               'response_http_status', (ARRAY[200,200,200,200,201,404,429,500])[1 + mod(r.i, 8)],
               'route_name', 'orders', 'service_name', 'orders',
               'latencies_kong', floor(random() * 20)::int,
               'control_plane_id', '{CONTROL_PLANE}')
           END,
           r.t + random() * interval '3 seconds',
           %(tx_base)s + (r.i - 1) / {TX_ROWS}
    FROM (
        SELECT g.i,
               least(%(customers)s - 1, floor(%(customers)s * random() ^ 2)::int) AS k,
               random() < 0.1 AS by_name,
               CASE WHEN random() < 0.7 THEN 'kong.llm_request' ELSE 'kong.api_request' END AS type,
               greatest(%(start)s::timestamptz, %(start)s::timestamptz
                        + (%(end)s::timestamptz - %(start)s::timestamptz) * ((g.i - 1) / %(total)s::float8)
                        - random() * interval '2 minutes') AS t,
               1 + floor(random() * {len(MODELS)})::int AS model
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g(i)
    ) AS r
    """


def load_events(url: str, *, total: int, customers: int, start: dt.datetime, end: dt.datetime,
                tx_base: int, rebuild_indexes: bool) -> None:
    """Insert ``total`` events server-side in 2 sessions (indexes dropped and rebuilt around it when asked)."""
    harness.bulk_insert(url, EVENT_TABLE, ranges=harness.row_ranges(1, total, INSERT_ROWS),
                        statement=insert_events_sql(),
                params=lambda lo, hi: {"lo": lo, "hi": hi, "total": total, "customers": customers, "start": start,
                                       "end": end, "tx_base": tx_base},
                rebuild_indexes=rebuild_indexes)


# --------------------------------------------------------------------------------------------------
# Seeding (Django, in this process)
# --------------------------------------------------------------------------------------------------


def seed(args, now: dt.datetime) -> None:
    from django.db import connection, transaction

    from catalog.services.features import feature_create
    from catalog.services.plans import RateCardSpec, plan_create, plan_publish
    from credits.services.grants import grant_create
    from customers.services.customers import attribution_add, customer_create
    from customers.services.subscriptions import subscription_create
    from metering.meter_rules import KONG_PRESETS
    from metering.models import Meter
    from metering.services.rollups import rollups_catch_up

    rng = random.Random(42)
    started = time.monotonic()
    with transaction.atomic():
        meter = meter_create_preset(KONG_PRESETS[METER_SLUG])
        feature_create(key=FEATURES["metered"], name="OpenAI tokens", meter=meter, filters={"provider": "openai"})
        feature_create(key=FEATURES["boolean"], name="AI gateway")
        feature_create(key=FEATURES["static"], name="Model access")
        feature_create(key=FEATURES["credits"], name="Anthropic tokens", meter=meter,
                       filters={"provider": "anthropic"})
        plan = plan_create(key="pro", name="Pro", currency="USD", billing_cadence="P1M", rate_cards=[
            RateCardSpec(key="openai-tokens", name="OpenAI tokens", feature=FEATURES["metered"], price_type="unit",
                         unit_amount=Decimal("0.00002"), entitlement_type="metered", entitlement_limit=LIMIT,
                         entitlement_soft=False),
            RateCardSpec(key="ai-gateway", name="AI gateway", feature=FEATURES["boolean"], price_type="flat",
                         amount=Decimal("49"), payment_term="in_advance", entitlement_type="boolean"),
            RateCardSpec(key="model-access", name="Model access", feature=FEATURES["static"],
                         entitlement_type="static", entitlement_config={"models": [m for m, _ in MODELS[:2]],
                                                                        "rpm": 600}),
            # Prepaid: access while the live credits (balance − this period's usage not invoiced) stay positive.
            RateCardSpec(key="anthropic-tokens", name="Anthropic tokens", feature=FEATURES["credits"],
                         price_type="unit", unit_amount=Decimal("0.00001"), entitlement_type="metered",
                         entitlement_limit=LIMIT, entitlement_soft=False, entitlement_credits="credit_only"),
        ])
        plan = plan_publish(plan=plan)
        for n in range(args.customers):
            # The subjects are added from the subscription's start (without a start they would count all their
            # usage, which the subscription's start bounds anyway).
            customer = customer_create(key=f"cust-{n:05d}", name=f"Customer {n}", currency="USD")
            start = now - dt.timedelta(days=35 + rng.random() * 25)
            for subject in (f"consumer:{consumer_id(n)}", f"user-{n}"):
                attribution_add(customer=customer, subject=subject, start=start)
            subscription_create(customer=customer, plan=plan, start=start,
                                billing_anchor="calendar" if n % 2 == 0 else None, actor="bench")
            grant_create(customer=customer, amount=CREDIT_GRANT, effective_at=start, description="bench credits",
                         label="bench", now=start)
    log(f"  meter, 4 features, plan pro v{plan.version}, {args.customers:,} customers with subscriptions "
        f"through the services in {time.monotonic() - started:.0f} s")

    started = time.monotonic()
    load_events(args.database_url, total=args.events, customers=args.customers, start=now - dt.timedelta(days=DAYS),
                end=now - dt.timedelta(minutes=10), tx_base=1, rebuild_indexes=True)
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {EVENT_TABLE}")
        cursor.execute("SELECT max(ingest_tx), pg_snapshot_xmin(pg_current_snapshot())::text::bigint, "
                       f"pg_size_pretty(pg_total_relation_size('{EVENT_TABLE}')) FROM {EVENT_TABLE}")
        max_tx, xmin, size = cursor.fetchone()
    if max_tx >= xmin:
        raise RuntimeError(f"ingest_tx up to {max_tx} but the oldest running transaction is {xmin}")
    log(f"  {args.events:,} events over {DAYS} days in {time.monotonic() - started:.0f} s ({size} with indexes)")

    started = time.monotonic()
    folded = rollups_catch_up(meter_id=meter.pk)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE metering_hourlyusage")
        cursor.execute("VACUUM ANALYZE metering_dailyusage")
        cursor.execute("SELECT (SELECT count(*) FROM metering_hourlyusage), (SELECT count(*) FROM metering_dailyusage)")
        hours, days = cursor.fetchone()
    meter = Meter.objects.get(pk=meter.pk)
    log(f"  rollups_catch_up folded {folded:,} events in {time.monotonic() - started:.0f} s: {hours:,} hourly and "
        f"{days:,} daily rows; rollup_low {meter.rollup_low:,}")

    if args.tail_events:
        load_events(args.database_url, total=args.tail_events, customers=args.customers,
                    start=now - dt.timedelta(minutes=10), end=now, tx_base=meter.rollup_low, rebuild_indexes=False)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {EVENT_TABLE}")
        log(f"  {args.tail_events:,} events of the last 10 minutes above rollup_low (not rolled up yet)")

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {SEED_TABLE} (key text PRIMARY KEY, value text)")
        for key, value in (("customers", args.customers), ("events", args.events), ("tail", args.tail_events),
                           ("seeded_at", now.isoformat())):
            cursor.execute(f"INSERT INTO {SEED_TABLE} VALUES (%s, %s)", [key, str(value)])


def close_due_cycles() -> None:
    """Close the cycles due now, as beat would have: the periods that ended are invoiced (their credits burnt), so
    the checks see what a running deployment sees — no ended period waiting for its close (idempotent: a kept
    database closes only what came due since)."""
    from django.utils import timezone

    from invoicing.services.close import close_cycles

    started = time.monotonic()
    report = close_cycles(now=timezone.now())
    log(f"  close_cycles: {report.invoices:,} invoices for {report.cycles:,} cycles due in "
        f"{time.monotonic() - started:.0f} s" + (f", {len(report.errors)} errors" if report.errors else ""))


def meter_create_preset(preset: dict):
    from metering.services.meters import meter_create

    return meter_create(**preset)


# --------------------------------------------------------------------------------------------------
# SQL of one check, EXPLAIN ANALYZE
# --------------------------------------------------------------------------------------------------


class StatementLog:
    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple, float]] = []

    def __call__(self, execute, statement, params, many, context):
        started = time.perf_counter()
        try:
            return execute(statement, params, many, context)
        finally:
            self.statements.append((statement, params, (time.perf_counter() - started) * 1000))


def explain_checks(customers: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from catalog.models import Feature
    from customers.selectors import customer_by_id_or_key, entitlement_value

    now = timezone.now()
    features = {kind: Feature.objects.select_related("meter").get(key=key) for kind, key in FEATURES.items()}
    heavy_key, median_key = "cust-00000", f"cust-{customers // 2:05d}"
    usage_statement = None
    for key in (heavy_key, median_key):
        for kind, feature in features.items():
            for _ in range(3):  # warm caches; keep the last
                statements = StatementLog()
                started = time.perf_counter()
                with connection.execute_wrapper(statements):
                    customer = customer_by_id_or_key(key)
                    if customer is None:
                        raise RuntimeError(f"no customer {key!r} in the seeded database")
                    value = entitlement_value(customer=customer, feature=feature, at=now)
                elapsed = (time.perf_counter() - started) * 1000
            sql_ms = sum(ms for _, _, ms in statements.statements)
            log(f"  {key} {kind:8s}: {elapsed:6.2f} ms in this process, {len(statements.statements)} statements "
                f"({sql_ms:.2f} ms in the database driver); hasAccess={value.has_access}"
                + (f", usage {value.usage:,}" if value.kind == "metered" else ""))
            for statement, _, ms in statements.statements:
                flat = re.sub(r"\s+", " ", statement)
                log(f"      {ms:6.2f} ms  {flat[:110]}")
            if key == heavy_key and kind == "metered":
                usage_statement = max(statements.statements, key=lambda s: ("metering_event" in s[0], s[2]))
    if usage_statement is not None:
        statement, params, _ = usage_statement
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, params)
            plan = [row[0] for row in cursor.fetchall()]
        log(f"  EXPLAIN (ANALYZE, BUFFERS) of the usage statement of {heavy_key} (metered):")
        for line in plan:
            log("    " + line)


def inprocess_cpu(token: str, customers: int, ids: dict[str, int], requests: int, cprofile: bool) -> None:
    """The WSGI application gunicorn serves (``billing_site.wsgi``: the entitlement check's fast route in front of
    Django's stack) called in this process: CPU per request."""
    import cProfile
    import io
    import pstats

    from billing_site.wsgi import application
    targets = make_targets(requests * 3, customers, ids, seed=11)

    def call(target: Target) -> int:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": target.path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
                   "SERVER_PORT": "80", "HTTP_HOST": "127.0.0.1", "HTTP_AUTHORIZATION": f"Bearer {token}",
                   "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
                   "SERVER_PROTOCOL": "HTTP/1.1"}
        status: list[str] = []
        def start_response(status_line: str, headers: list[tuple[str, str]],
                           exc_info: object = None) -> Callable[[bytes], None]:
            status.append(status_line)
            return lambda data: None

        body = b"".join(application(environ, start_response))
        if not status or not status[0].startswith("200") or not body.startswith(b'{"hasAccess"'):
            raise RuntimeError(f"in-process check failed: {status} {body[:200]!r}")
        return len(body)

    for target in targets[:50]:  # warm
        call(target)
    per_kind: dict[str, list[tuple[float, float]]] = {kind: [] for kind in FEATURES}  # (CPU, wall) ms
    profiler = cProfile.Profile() if cprofile else None
    for target in targets:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        call(target)
        if profiler:
            profiler.disable()
        per_kind[target.kind].append(((time.process_time() - cpu0) * 1000, (time.perf_counter() - wall0) * 1000))
    everything = [c for samples in per_kind.values() for c, _ in samples]
    log(f"  {len(targets):,} requests through billing_site.wsgi in this process (no HTTP, no gunicorn): "
        f"CPU per request mean {sum(everything) / len(everything):.2f} ms, p50 {percentile(everything, 0.5):.2f} ms, "
        f"p99 {percentile(everything, 0.99):.2f} ms")
    for kind, samples in per_kind.items():
        cpu = [c for c, _ in samples]
        wall = [w for _, w in samples]
        log(f"    {kind:8s}: CPU mean {sum(cpu) / len(cpu):.2f} ms (p99 {percentile(cpu, 0.99):.2f}), "
            f"wall mean {sum(wall) / len(wall):.2f} ms (p99 {percentile(wall, 0.99):.2f})")
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(45)
        text = out.getvalue().replace(str(ROOT) + "/", "")
        text = re.sub(r"/\S*/site-packages/", "", text)
        log("  cProfile (cumulative; profiling inflates the absolute times):")
        for line in text.splitlines():
            if line.strip() and not line.startswith(("   Ordered by", "         ")):
                log("    " + line[:160])


# --------------------------------------------------------------------------------------------------
# Server, CPU, RSS
# --------------------------------------------------------------------------------------------------


class Server(harness.GunicornServer):
    def __init__(self, *, env: dict[str, str], workers: int, worker_class: str, threads: int) -> None:
        options = ["--worker-class", worker_class, "--timeout", "120", "--graceful-timeout", "10", "--backlog", "2048"]
        if worker_class == "gthread":
            # a gateway keeps its connections to the entitlement service open: don't drop them after 2 s idle
            options += ["--threads", str(threads), "--keep-alive", "30"]
        super().__init__(env=env, workers=workers, options=options, app="billing_site.wsgi:application",
                         tmp_prefix="bench_entitlements_", stop_timeout=20)


class PostgresBackends:
    """The pids of the PostgreSQL backends connected to our database (other databases' work is "other")."""

    def __init__(self, database_url: str) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.name = harness.database_name(database_url)
        self.own_pid = self.conn.info.backend_pid

    def pids(self) -> list[int]:
        rows = self.conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
                                 [self.name, self.own_pid]).fetchall()
        return [pid for (pid,) in rows]

    def close(self) -> None:
        self.conn.close()


class CpuMeter:
    """CPU over a phase in % of one core: gunicorn workers, the PostgreSQL backends of our database, this client,
    and the rest of the machine (other processes, other databases' backends, PostgreSQL's own background work)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, workers: list[int], backends: PostgresBackends) -> None:
        self.workers = workers
        self.backends = backends

    def snapshot(self) -> dict:
        me = os.times()
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        return {"workers": sum(harness.cpu_ticks(p) for p in self.workers) / self.TICK,
                "postgres": {p: harness.cpu_ticks(p) / self.TICK for p in self.backends.pids()},
                "client": me.user + me.system, "idle": (fields[3] + fields[4]) / self.TICK,
                "wall": time.monotonic()}

    @staticmethod
    def diff(before: dict, after: dict) -> dict[str, float]:
        wall = after["wall"] - before["wall"]
        out = {key: (after[key] - before[key]) / wall * 100 for key in ("workers", "client")}
        # backends that started meanwhile count whole; those that ended are lost (an undercount, never < 0)
        pg = sum(ticks - before["postgres"].get(pid, 0.0) for pid, ticks in after["postgres"].items())
        out["postgres"] = max(0.0, pg) / wall * 100
        out["busy"] = (os.cpu_count() or 1) * 100 - (after["idle"] - before["idle"]) / wall * 100
        out["other"] = max(0.0, out["busy"] - out["workers"] - out["postgres"] - out["client"])
        return out


def machine_busy(interval: float = 1.0) -> float:
    def idle() -> float:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        return (fields[3] + fields[4]) / CpuMeter.TICK

    idle0, t0 = idle(), time.monotonic()
    time.sleep(interval)
    return (os.cpu_count() or 1) * 100 - (idle() - idle0) / (time.monotonic() - t0) * 100


def wait_until_quiet(max_wait: float, threshold: float = 30) -> float:
    """Wait (at most max_wait s) until other load stays below threshold % of one core for 4 s; the last reading."""
    deadline = time.monotonic() + max_wait
    busy = machine_busy(2.0)
    if busy > threshold and max_wait > 0:
        log(f"  machine busy ({busy:.0f}% of one core) before the run: waiting up to {max_wait:.0f} s …")
    while max_wait > 0 and time.monotonic() < deadline:
        if busy <= threshold:
            busy = max(busy, machine_busy(2.0))
            if busy <= threshold:
                break
        busy = machine_busy(2.0)
    return busy


class RssSampler(threading.Thread):
    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak: dict[int, float] = {}
        self.stopped = threading.Event()

    def sample(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak[pid] = max(self.peak.get(pid, 0.0), int(line.split()[1]) / 1024)
                        break

    def run(self) -> None:
        while not self.stopped.wait(0.25):
            self.sample()


# --------------------------------------------------------------------------------------------------
# Open-loop load
# --------------------------------------------------------------------------------------------------


@dataclass
class Target:
    path: str
    kind: str


@dataclass
class Result:
    scheduled: float
    sent: float
    done: float
    status: int
    kind: str


@dataclass
class LoadReport:
    rate: float
    seconds: float
    results: list[Result] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    measured_from: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    rss: dict[int, float] = field(default_factory=dict)
    retried: int = 0


def customer_ids(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return dict(conn.execute("SELECT key, id FROM customers_customer").fetchall())


def make_targets(count: int, customers: int, ids: dict[str, int], seed: int,
                 kinds: list[str] | None = None) -> list[Target]:
    rng = random.Random(seed)
    targets = []
    kinds = kinds or list(FEATURES)
    for _ in range(count):
        n = skewed_customer(rng, customers)
        key = f"cust-{n:05d}"
        id_or_key = str(ids[key]) if rng.random() < 0.1 else key
        kind = rng.choice(kinds)
        targets.append(Target(VALUE_PATH.format(id_or_key, FEATURES[kind]), kind))
    return targets


CLIENT_SWITCH_INTERVAL = 0.0002  # seconds


@contextlib.contextmanager
def client_without_pauses():
    """While the load runs: a thread whose answer has arrived waits for the GIL while another thread of this client
    holds it, by default up to 5 ms (the interpreter's switch interval), client time and not the server's, so the GIL
    is handed over sooner; and the client never pauses for a full garbage collection (the results it keeps grow to
    ~60,000 objects: each collection walked them all, and every request in flight was late by that pause)."""
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(CLIENT_SWITCH_INTERVAL)
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        sys.setswitchinterval(switch_interval)


class Disconnected(ConnectionError):
    """The server closed the connection before answering (an idle keep-alive connection it had closed)."""


def get_request(host: str, port: int, path: str, token: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Accept: application/json\r\nConnection: keep-alive\r\n\r\n").encode("latin-1")


class LeanConnection:
    """One HTTP/1.1 connection sending prepared GETs and reading their answers (status, Content-Length, Connection).

    ``http.client`` parses every answer's headers with the ``email`` package: most of this client's CPU, taken
    from the two cores the server under test shares with it."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.address = (host, port)
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def get(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send ``request``; the answer's status, body, and whether the server closes the connection after it."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Disconnected("closed before an answer") if not data else ValueError("truncated headers")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status = lines[0].split(" ", 2)[:2]
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
        will_close = fields.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        if int(status) in (204, 304) or 100 <= int(status) < 200:
            return int(status), b"", will_close  # no body, whatever the headers say
        length = int(fields["content-length"]) if "content-length" in fields else None
        if length is None and "chunked" in fields.get("transfer-encoding", "").lower():
            while not body.endswith(b"0\r\n\r\n"):  # read to the last chunk; the framing stays (errors only)
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ValueError("truncated chunked body")
                body += chunk
            return int(status), body, will_close
        while length is None or len(body) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                if length is None:  # an answer delimited by the end of the connection
                    return int(status), body, True
                raise ValueError("truncated body")
            body += chunk
        return int(status), body, will_close


def run_load(*, url: str, token: str, targets: list[Target], rate: float, warmup: float, seconds: float,
             concurrency: int, workers: list[int], max_lag: float, database_url: str) -> LoadReport:
    """Send targets[i] at t0 + i / rate from a pool of keep-alive connections; latency from the schedule."""
    report = LoadReport(rate=rate, seconds=seconds)
    total = int(rate * (warmup + seconds))
    work: queue.SimpleQueue = queue.SimpleQueue()
    lock = threading.Lock()
    parts = urllib.parse.urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"no host in {url!r}")
    host, port = parts.hostname, parts.port or 80
    requests = [get_request(host, port, target.path, token) for target in targets]
    ready = threading.Barrier(concurrency + 1)
    retried = [0]
    oldest_waiting = [0]  # the highest index a worker took: everything before it has been sent

    def worker() -> None:
        # connected on first use: an idle connection accepted by a sync worker would block that worker
        conn = LeanConnection(host, port, timeout=60)
        ready.wait()
        local: list[Result] = []
        errors: Counter = Counter()
        while True:
            item = work.get()
            if item is None:
                break
            index, scheduled = item
            oldest_waiting[0] = max(oldest_waiting[0], index)
            target = targets[index % len(targets)]
            sent = time.perf_counter()
            try:
                try:
                    status, body, will_close = conn.get(requests[index % len(targets)])
                except (Disconnected, ConnectionResetError, BrokenPipeError):
                    # the server closed this idle keep-alive connection as we reused it: like any HTTP client
                    # pool, retry a GET once on a fresh connection (the time counts in the latency)
                    conn.close()
                    retried[0] += 1
                    status, body, will_close = conn.get(requests[index % len(targets)])
                if status == 200 and not body.startswith(b'{"hasAccess"'):
                    status = -2
                    errors[f"unexpected body: {body[:80]!r}"] += 1
                elif status != 200:
                    errors[f"HTTP {status}: {body[:120]!r}"] += 1
                if will_close:
                    conn.close()
            except (OSError, ValueError) as exc:
                conn.close()
                status = -1
                errors[f"{type(exc).__name__}: {exc}"] += 1
            local.append(Result(scheduled, sent, time.perf_counter(), status, target.kind))
        conn.close()
        with lock:
            report.results.extend(local)
            report.errors.update(errors)

    with client_without_pauses():
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        for thread in threads:
            thread.start()
        ready.wait()
        t0 = time.perf_counter() + 0.2
        report.measured_from = t0 + warmup
        backends = PostgresBackends(database_url)
        cpu = CpuMeter(workers, backends)
        rss = RssSampler(workers)
        rss.start()
        # The CPU counters are read at the start of the measured part by a thread of their own: reading /proc for
        # every process takes tens of ms, which in the sending loop made the requests due meanwhile late.
        before: list = []
        snapshot_timer = threading.Timer(max(0.0, report.measured_from - time.perf_counter()),
                                         lambda: before.append(cpu.snapshot()))
        snapshot_timer.start()
        for index in range(total):
            at = t0 + index / rate
            delay = at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            waiting_since = t0 + oldest_waiting[0] / rate
            if index - oldest_waiting[0] > concurrency and time.perf_counter() - waiting_since > max_lag:
                # hopelessly overloaded: the rest would only measure the queue; count them as not sent
                for late in range(index, total):
                    late_at = t0 + late / rate
                    report.results.append(Result(late_at, late_at, late_at, -3, targets[late % len(targets)].kind))
                report.errors[f"not sent: requests were more than {max_lag:g} s late (overload)"] += total - index
                break
            work.put((index, at))
        for _ in threads:
            work.put(None)
        for thread in threads:
            thread.join(timeout=120)
    rss.stopped.set()
    rss.sample()
    snapshot_timer.cancel()
    snapshot_timer.join()
    report.cpu = CpuMeter.diff(before[0] if before else cpu.snapshot(), cpu.snapshot())
    backends.close()
    report.rss = rss.peak
    report.retried = retried[0]
    return report


SLOW_MS = 10  # the target p99: where the slow requests fall in the run


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def summarize(name: str, report: LoadReport) -> dict[str, float]:
    measured = [r for r in report.results if r.scheduled >= report.measured_from]
    ok = [r for r in measured if r.status == 200]
    latencies = [(r.done - r.scheduled) * 1000 for r in ok]
    service = [(r.done - r.sent) * 1000 for r in ok]
    lag = [(r.sent - r.scheduled) * 1000 for r in measured]
    sent = [r for r in measured if r.status != -3]  # -3: not sent (overload)
    span = (max((r.done for r in sent), default=report.measured_from) - report.measured_from) or 1e-9
    errors = len(measured) - len(ok)
    figures = {"rate": len(ok) / span, "sent": len(measured), "errors": errors,
               "p50": percentile(latencies, 0.50), "p95": percentile(latencies, 0.95),
               "p99": percentile(latencies, 0.99), "max": max(latencies, default=float("nan"))}
    cpu = report.cpu
    log(f"  {name}: {len(measured):,} requests scheduled at {report.rate:g}/s over {report.seconds:g} s "
        f"(after the warm-up)")
    log(f"    achieved {figures['rate']:.1f} req/s, errors {errors}"
        + (f" ({report.retried} GETs retried once on a fresh connection after a keep-alive close)"
           if report.retried else ""))
    log(f"    latency from schedule: p50 {figures['p50']:.1f} ms, p95 {figures['p95']:.1f} ms, "
        f"p99 {figures['p99']:.1f} ms, max {figures['max']:.1f} ms")
    log(f"    service time (send → answer): p50 {percentile(service, 0.5):.1f} ms, "
        f"p99 {percentile(service, 0.99):.1f} ms; waiting for a free connection: p99 {percentile(lag, 0.99):.1f} ms")
    for kind in FEATURES:
        per_kind = [(r.done - r.scheduled) * 1000 for r in ok if r.kind == kind]
        log(f"    {kind:8s}: p50 {percentile(per_kind, 0.5):.1f} ms, p99 {percentile(per_kind, 0.99):.1f} ms "
            f"({len(per_kind):,} requests)")
    slow = Counter(int(r.scheduled - report.measured_from) for r in ok
                   if (r.done - r.scheduled) * 1000 > SLOW_MS)
    if slow:
        log(f"    over {SLOW_MS:g} ms: {sum(slow.values()):,} requests; the seconds with most (second: count): "
            + ", ".join(f"{second}: {count}" for second, count in slow.most_common(8)))
    rss = ", ".join(f"{mib:.0f}" for _, mib in sorted(report.rss.items()))
    log(f"    worker RSS (peak, MiB): {rss}")
    log(f"    CPU (% of one core, {os.cpu_count()} cores): gunicorn workers {cpu.get('workers', 0):.0f}%, "
        f"postgres backends of this database {cpu.get('postgres', 0):.0f}%, bench client {cpu.get('client', 0):.0f}%, "
        f"other processes {cpu.get('other', 0):.0f}%")
    if figures["rate"]:
        per_request = cpu.get("workers", 0) * 10 / figures["rate"]
        pg_per_request = cpu.get("postgres", 0) * 10 / figures["rate"]
        log(f"    CPU per request: {per_request:.2f} ms in the workers, {pg_per_request:.2f} ms in PostgreSQL")
    for message, count in report.errors.most_common(5):
        log(f"    error ×{count}: {message}")
    figures["rss_max"] = max(report.rss.values(), default=0.0)
    figures["other_cpu"] = cpu.get("other", 0.0)
    return figures


# --------------------------------------------------------------------------------------------------
# py-spy
# --------------------------------------------------------------------------------------------------


def py_spy_start(pids: list[int], seconds: float, out_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    binary = Path(sys.executable).parent / "py-spy"
    if not binary.exists():
        log("  (py-spy not installed in the virtualenv: .venv/bin/pip install py-spy)")
        return []
    runs = []
    for pid in pids:
        out = out_dir / f"py-spy-{pid}.txt"
        process = subprocess.Popen([str(binary), "record", "--pid", str(pid), "--duration", str(int(seconds)),
                                    "--rate", "250", "--format", "raw", "--nonblocking", "--output", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        runs.append((process, out))
    return runs


def py_spy_report(runs: list[tuple[subprocess.Popen, Path]], top: int = 30) -> None:
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for process, out in runs:
        try:
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            _, stderr = process.communicate()
        if not out.exists():
            log(f"  py-spy failed: {stderr.strip()[-300:]}")
            continue
        for line in out.read_text().splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [re.sub(r"\s*\((?:/[^)]*/(?:site-packages|lib/python3\.\d+)/)?([^)]*)\)", r" (\1)", f)
                      for f in stack.split(";")]
            frames = [f.replace(str(ROOT) + "/", "") for f in frames]
            total += count
            for frame in set(frames):
                inclusive[frame] += count
            own[frames[-1]] += count
    if not total:
        return
    log(f"  py-spy: {total:,} samples of the workers; inclusive share of the hottest frames:")
    shown = 0
    for frame, count in inclusive.most_common():
        if "<module>" in frame or "run (gunicorn" in frame or frame.startswith(("_bootstrap", "serve_forever")):
            continue
        log(f"    {100 * count / total:5.1f}%  {frame[:140]}")
        shown += 1
        if shown >= top:
            break
    log("  own time (leaf frames):")
    for frame, count in own.most_common(12):
        log(f"    {100 * count / total:5.1f}%  {frame[:140]}")


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "MET " if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="requests per second (open loop)")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds per worker class")
    parser.add_argument("--warmup", type=float, default=5, help="seconds at the same rate before measuring")
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--kind", dest="kinds", action="append", choices=tuple(FEATURES),
                        help="feature kinds the HTTP load asks about (repeat; default: all, in equal shares)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tail-events", type=int, default=2000, help="recent events not rolled up yet")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--keep", action="store_true",
                        help="reuse a database seeded with the same --customers/--events, and keep it at the end")
    parser.add_argument("--worker-class", action="append", choices=("sync", "gthread"),
                        help="gunicorn worker class; repeat for several (default: sync, then gthread)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    parser.add_argument("--concurrency", type=int, default=64, help="client connections (threads)")
    parser.add_argument("--profile", action="store_true", help="py-spy the workers during the measured part")
    parser.add_argument("--no-explain", action="store_true", help="skip the SQL listing and EXPLAIN ANALYZE")
    parser.add_argument("--inprocess", type=int, default=300, metavar="N",
                        help="N requests per feature kind through the WSGI handler in this process (0: skip)")
    parser.add_argument("--cprofile", action="store_true", help="cProfile the in-process requests")
    parser.add_argument("--no-load", action="store_true", help="no gunicorn and no HTTP load (the SQL and "
                                                               "in-process figures only)")
    parser.add_argument("--max-lag", type=float, default=5.0, metavar="SECONDS",
                        help="stop sending when requests are this late (overload: the rest count as errors)")
    parser.add_argument("--quiet-wait", type=float, default=60,
                        help="wait up to this long before each run for other load to settle")
    args = parser.parse_args(argv)
    check_database_name(args.database_url)
    worker_classes = [] if args.no_load else (args.worker_class or ["sync", "gthread"])
    if args.customers < 2 or args.events < 1:
        parser.error("need --customers >= 2 and --events >= 1")

    env = harness.server_env(args.database_url, LOG_LEVEL="WARNING")
    harness.use_project_in_process(args.database_url)
    errors: list[str] = []
    summaries: dict[str, dict[str, float]] = {}
    created = False
    try:
        seed_info = seeded_with(args.database_url) if args.keep and harness.database_exists(args.database_url) else {}
        reuse = (seed_info.get("customers") == str(args.customers) and seed_info.get("events") == str(args.events))
        if reuse:
            log(f"database {harness.database_name(args.database_url)}: reusing the seed of "
                f"{seed_info.get('seeded_at')} "
                f"({args.customers:,} customers, {args.events:,} events); migrating")
            try:
                harness.manage(env, "migrate", "--no-input")  # the code may have new migrations since the seed
            except RuntimeError as exc:
                log(f"  cannot migrate the kept database ({str(exc).strip().splitlines()[-1][:150]}): seeding again")
                reuse = False
        if reuse:
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                refold = harness.one_row(conn, "SELECT count(*) FROM metering_meter WHERE rollup_low = 0")[0]
            if refold:  # a migration reset the rollups: they would be read raw, not as the seed left them
                log("  a migration asked to refold the rollups: seeding again")
                reuse = False
        if not reuse:
            log(f"database {harness.database_name(args.database_url)}: re-creating, migrating and seeding …")
            harness.recreate_database(args.database_url)
            created = True
            harness.manage(env, "migrate", "--no-input")

        import django

        django.setup()
        from django.db import connections

        if not reuse:
            seed(args, dt.datetime.now(dt.UTC).replace(microsecond=0))
        close_due_cycles()
        token = harness.manage(env, "create_api_token", "bench", "--scope", "read").strip().splitlines()[-1]

        ids = customer_ids(args.database_url)
        if not args.no_explain:
            log("SQL of one entitlement check (this process, warm):")
            explain_checks(args.customers)
        if args.inprocess:
            inprocess_cpu(token, args.customers, ids, args.inprocess, args.cprofile)
        connections.close_all()

        targets = make_targets(200_000, args.customers, ids, seed=7, kinds=args.kinds)
        for worker_class in worker_classes:
            name = f"{args.workers} {worker_class} workers" + (
                f" × {args.threads} threads" if worker_class == "gthread" else "")
            log(f"\n{name}: starting gunicorn …")
            server = Server(env=env, workers=args.workers, worker_class=worker_class, threads=args.threads)
            try:
                server.wait_ready()
                pids = server.worker_pids()
                busy = wait_until_quiet(args.quiet_wait)
                log(f"  workers {pids}; machine busy before the run: {busy:.0f}% of one core")
                spy_dir = server.tmp
                spies: list = []
                if args.profile:
                    def start_spies(pids=pids, spy_dir=spy_dir, spies=spies) -> None:
                        spies.extend(py_spy_start(pids, args.seconds, spy_dir))
                    timer = threading.Timer(args.warmup + 0.2, start_spies)
                    timer.start()
                report = run_load(url=server.url, token=token, targets=targets, rate=args.rate, warmup=args.warmup,
                                  seconds=args.seconds, concurrency=args.concurrency, workers=pids,
                                  max_lag=args.max_lag, database_url=args.database_url)
                summaries[name] = summarize(name, report)
                if summaries[name]["errors"]:
                    errors.append(f"{name}: {summaries[name]['errors']:.0f} failed requests")
                if args.profile:
                    timer.join()
                    py_spy_report(spies)
                tail = server.log_tail(5)
                if "Traceback" in tail or "ERROR" in tail:
                    log("  gunicorn log tail:\n" + tail)
            finally:
                server.stop()
    except (RuntimeError, psycopg.Error, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        harness.drop_unless_kept(args.database_url, keep=args.keep, created=created, errors=errors)

    log("")
    log(f"summary: {args.customers:,} customers, {args.events:,} events (+{args.tail_events:,} not rolled up), "
        f"{args.rate:g} req/s for {args.seconds:g} s, {os.cpu_count()} cores shared by client, server and PostgreSQL")
    for name, figures in summaries.items():
        ok = figures["p99"] <= TARGET_P99_MS and figures["rate"] >= 0.98 * args.rate and not figures["errors"]
        log(f"  {mark(ok)} {name}: {figures['rate']:.1f} req/s, p50 {figures['p50']:.1f} / p95 {figures['p95']:.1f} / "
            f"p99 {figures['p99']:.1f} / max {figures['max']:.1f} ms, {figures['errors']:.0f} errors, "
            f"worker RSS ≤ {figures['rss_max']:.0f} MiB; other processes took {figures['other_cpu']:.0f}% of a core  "
            f"(target p99 ≤ {TARGET_P99_MS:g} ms at {TARGET_RATE:g}/s)")
    return harness.exit_status(errors)


if __name__ == "__main__":
    sys.exit(main())
