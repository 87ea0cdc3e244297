"""Ingest benchmark: the HTTP path (CloudEvents batches and single events against gunicorn + PostgreSQL) beside
what the same database takes without it, a raw COPY and the deduplicating floor, in one run.

Run from the project root with the project's virtualenv::

    .venv/bin/python bench/ingest.py                 # fresh database bench_ingest, own gunicorn, ~3 min
    .venv/bin/python bench/ingest.py --big           # + load 10M events, measure again (~+5 min)
    .venv/bin/python bench/ingest.py --profile bench/profiles/after   # + py-spy flame graphs of the workers
    .venv/bin/python bench/ingest.py --url http://127.0.0.1:8000 --token bbo_… \\
        --database-url postgres://postgres@127.0.0.1:5433/billing_copy   # an already running server

Without ``--url`` it drops and re-creates the database of ``--database-url`` (never ``billing`` or a
``test_*`` database), migrates it, creates an ingest token (``--rate-limit``: with a per-token ingest rate
limit, so that the limiter's cost is measured too), starts ``gunicorn billing_site.wsgi`` with ``--workers``
workers of ``--worker-class`` (gthread with ``--threads`` 4 by default, production's; ``DEBUG=false``) and stops
it at the end. Steps:

1. batches of ``--batch`` Kong-shaped events (``application/cloudevents-batch+json``) from ``--clients``
   concurrent keep-alive connections for ``--seconds``: events/s, p50/p99 batch latency;
2. single events (``application/cloudevents+json``) the same way for ``--single-seconds``: POSTs/s, p50/p99;
   all along, the peak RSS of each gunicorn worker (``VmRSS``);
3. raw ``COPY`` of prebuilt rows, ``--batch`` rows per transaction, ``--copy-connections`` (2) connections, into
   a fresh ``(LIKE metering_event INCLUDING ALL)`` table: rows/s, p50/p99 per batch;
4. the dedup floor: the same rows ``COPY``'d to a temporary table, then ``INSERT … SELECT … ORDER BY source,
   event_id ON CONFLICT (source, event_id) DO NOTHING`` into another fresh copy of the table, one transaction
   per batch, ``--copy-connections`` connections;
5. with ``--big``: load ``metering_event`` to ``--big-rows`` rows server-side (generate_series), VACUUM
   ANALYZE, and repeat step 1.

The table gives the HTTP path's ratio to steps 3 and 4, by rate and by CPU per event (what each path costs the
machine: steadier when other processes share it), and the workers' CPU per event and per POST. Each step prints,
besides its rate and latency, the CPU it used per event (gunicorn workers, the PostgreSQL processes of the
benchmark database, this client, everything else) and the cluster's WAL per event. Client and server share
the machine; before each step the script waits (``--quiet-wait``) for other load to settle, and repeats a step
that other processes disturbed (``--noisy-retries``), keeping the quietest attempt.

Exit status: 1 on errors (any non-2xx answer, a transport failure, a server that will not start), 0
otherwise, whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import math
import os
import random
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import harness
import msgspec
import psycopg
from harness import CONTROL_PLANE, DAYS, EVENT_TABLE, MODELS
from psycopg import sql

EVENTS_PATH = "/api/v1/events"
MEDIA_BATCH = "application/cloudevents-batch+json"
MEDIA_SINGLE = "application/cloudevents+json"
COPY_TABLE = "bench_ingest_copy"
DEDUP_TABLE = "bench_ingest_dedup"
COPY_COLUMNS = ("source", "event_id", "type", "subject", "time", "data", "ingested_at", "ingest_tx")
SOURCE = "kong-gateway"
CONSUMERS = 1000
POOL_CALLS = 12_000  # 3 events per call: one kong.api_request, two kong.llm_request (input, output)
WARMUP_REQUESTS = 2  # per client, before the clock starts

TARGETS = {
    "batch_rate": 15_000,  # events/s, empty table
    "big_rate": 10_000,  # events/s, 10M rows
    "copy_ratio": 0.5,  # ingest rate / raw COPY rate
    "dedup_ratio": 0.8,  # ingest rate / the dedup floor's rate
    "p99_ms": 150,  # batch latency
    "single_rate": 2_000,  # single-event POSTs/s
    "rss_mib": 250,  # per web worker
}

# Values shaped like metering/data/kong_events.json (and harness.MODELS); the same lists feed the server-side
# 10M load.
ROUTES = (("chat", "/chat", "ai-chat"), ("embed", "/embeddings", "ai-embed"), ("api", "/v1/orders", "orders"),
          ("api", "/v1/customers", "customers"), ("api", "/v1/search", "search"))
METHODS = ("POST", "POST", "POST", "GET", "GET", "PUT", "DELETE")
STATUSES = (200,) * 18 + (201, 400, 401, 404, 429, 500)
AGENTS = ("curl/8.5.0", "python-requests/2.32.3", "Mozilla/5.0", "okhttp/4.12.0", "Go-http-client/1.1")


def consumer_subject(n: int) -> str:
    """Subject of consumer n; the SQL loader builds the same text: 'consumer:' || md5('consumer-' || n)::uuid."""
    return "consumer:" + str(uuid.UUID(hex=hashlib.md5(f"consumer-{n}".encode()).hexdigest()))  # noqa: S324


def skewed_consumer(rng: random.Random) -> int:
    """A few consumers are busy, most are quiet (the SQL loader uses the same law)."""
    return int(CONSUMERS * rng.random() ** 2)


def fixed_uuid(n: int) -> str:
    return str(uuid.UUID(hex=hashlib.md5(f"object-{n}".encode()).hexdigest()))  # noqa: S324


# --------------------------------------------------------------------------------------------------
# Event generation: a pool of pre-encoded events without their id; a request joins fresh random ids
# with slices of the pool, so the client spends ~1 ms per 1,000 events and leaves the CPU to the server.
# --------------------------------------------------------------------------------------------------


@dataclass
class EventPool:
    http_tails: list[bytes]  # b'"source":…,"data":{…}}' — an event body after '{"id":"<id>",'
    copy_tails: list[bytes]  # b'\t<type>\t<subject>\t<time>\t<data>\t' — a COPY text row after source\tid

    @classmethod
    def build(cls, seed: int = 1) -> EventPool:
        rng = random.Random(seed)
        subjects = [consumer_subject(n) for n in range(CONSUMERS)]
        services = [fixed_uuid(n) for n in range(20)]
        now = dt.datetime.now(dt.UTC)
        http_tails: list[bytes] = []
        copy_tails: list[bytes] = []
        for _ in range(POOL_CALLS):
            subject = subjects[skewed_consumer(rng)]
            when = now - dt.timedelta(seconds=rng.random() * DAYS * 86400)
            when_text = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
            route_kind, uri, route_name = rng.choice(ROUTES)
            service = rng.randrange(len(services))
            status = rng.choice(STATUSES)
            api_request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            api_data = {
                "subject_type": "consumer_id",
                "client_ip": f"203.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                "control_plane_id": CONTROL_PLANE,
                "request_host": "api.example.com",
                "request_method": "POST" if route_kind != "api" else rng.choice(METHODS),
                "request_uri": uri,
                "request_user_agent": rng.choice(AGENTS),
                "request_size_bytes": rng.randrange(80, 20_000),
                "response_size_bytes": rng.randrange(100, 200_000),
                "response_http_status": status,
                "upstream_status": status,
                "route_id": services[service],
                "route_name": route_name,
                "service_id": services[service],
                "service_name": f"{route_name}-service",
                "service_protocol": "http",
                "service_port": 80,
            }
            events = [("kong.api_request", api_data)]
            if route_kind != "api":
                model, provider = rng.choice(MODELS)
                for kind, tokens in (("request", rng.randrange(5, 4000)), ("response", rng.randrange(1, 2000))):
                    events.append(("kong.llm_request", {
                        "subject_type": "consumer_id",
                        "type": kind,
                        "tokens": tokens,
                        "model": model,
                        "provider": provider,
                        "api_request_id": api_request_id,
                        "ai_plugin_id": services[0],
                        "ai_plugin_name": "ai-proxy",
                        "cache_status": rng.choice(("", "", "", "Hit", "Miss")),
                        "http_status": status,
                        "control_plane_id": CONTROL_PLANE,
                        "service_id": services[service],
                        "route_id": services[service],
                    }))
            for event_type, data in events:
                body = msgspec.json.encode({
                    "source": SOURCE, "specversion": "1.0", "type": event_type, "subject": subject,
                    "time": when_text, "datacontenttype": "application/json", "data": data,
                })
                http_tails.append(body[1:])  # without the opening brace
                data_text = msgspec.json.encode(data).replace(b"\\", b"\\\\")  # COPY text escaping
                copy_tails.append(b"\t".join([
                    b"", event_type.encode(), subject.encode(), when_text.encode(), data_text, b"",
                ]))
        return cls(http_tails, copy_tails)

    def _slice(self, items: list[bytes], rng: random.Random, n: int) -> list[bytes]:
        start = rng.randrange(len(items))
        chunk = items[start:start + n]
        while len(chunk) < n:
            chunk += items[: n - len(chunk)]
        return chunk

    def batch_body(self, rng: random.Random, n: int) -> bytes:
        tails = self._slice(self.http_tails, rng, n)
        parts = [b'{"id":"' + id_ + b'",' + tail for id_, tail in zip(new_ids(n), tails, strict=True)]
        return b"[" + b",".join(parts) + b"]"

    def single_body(self, rng: random.Random) -> bytes:
        return b'{"id":"' + new_ids(1)[0] + b'",' + rng.choice(self.http_tails)

    def copy_rows(self, rng: random.Random, n: int, ingested_at: bytes, ingest_tx: int) -> bytes:
        end = ingested_at + b"\t" + str(ingest_tx).encode() + b"\n"
        prefix = SOURCE.encode() + b"\t"
        tails = self._slice(self.copy_tails, rng, n)
        return b"".join(prefix + id_ + tail + end for id_, tail in zip(new_ids(n), tails, strict=True))

    def staging_rows(self, rng: random.Random, n: int) -> bytes:
        """COPY text rows of (source, event_id, type, subject, time, data): what a staging table takes."""
        prefix = SOURCE.encode() + b"\t"
        tails = self._slice(self.copy_tails, rng, n)
        return b"".join(prefix + id_ + tail[:-1] + b"\n" for id_, tail in zip(new_ids(n), tails, strict=True))


def new_ids(n: int) -> list[bytes]:
    """n random version-4 UUIDs as text, like the ids gateways send (random, so index inserts are random too)."""
    h = os.urandom(16 * n).hex().encode()
    return [b"%s-%s-4%s-%c%s-%s" % (h[k:k + 8], h[k + 8:k + 12], h[k + 13:k + 16], b"89ab"[h[k + 16] & 3],
                                     h[k + 17:k + 20], h[k + 20:k + 32]) for k in range(0, 32 * n, 32)]


# --------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    requests: int = 0
    events: int = 0
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    cpu: dict[str, float] = field(default_factory=dict)
    wal: dict[str, float] = field(default_factory=dict)  # pg_stat_wal deltas (whole cluster)

    @property
    def rate(self) -> float:
        return self.events / self.elapsed if self.elapsed else 0.0

    @property
    def request_rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]  # nearest rank

    def add_client(self, *, requests: int, events: int, latencies_ms: list[float]) -> None:
        """What one client thread did (under the phase's lock)."""
        self.requests += requests
        self.events += events
        self.latencies_ms.extend(latencies_ms)

    def add_error(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < 10:
            self.errors.append(message)


PG_SHARED_PROCESSES = ("walwriter", "checkpointer", "background writer")


def postgres_pids(database: str) -> list[int]:
    """PostgreSQL processes working for ``database`` (backends, its autovacuum workers) and the shared WAL
    writer, checkpointer and background writer; backends of other databases count as "other"."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split()
        except OSError:
            continue
        if database in title or any(" ".join(title).startswith(f"postgres: {name}") for name in PG_SHARED_PROCESSES):
            pids.append(int(entry.name))
    return pids


class CpuMeter:
    """CPU used over a phase, in % of one core: the gunicorn workers, PostgreSQL working for the benchmark
    database, this client, and everything else on the machine (other processes and databases, interrupts)."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, server_pid: int | None, database: str) -> None:
        self.server_pid = server_pid
        self.database = database

    def snapshot(self) -> dict:
        workers = {p: harness.cpu_ticks(p) for p in harness.children_of(self.server_pid)} if self.server_pid else {}
        pg = {p: harness.cpu_ticks(p) for p in postgres_pids(self.database)}
        me = os.times()
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        return {"workers": workers, "postgres": pg, "client": me.user + me.system,
                "idle": (fields[3] + fields[4]) / self.TICK, "wall": time.monotonic()}

    @classmethod
    def diff(cls, before: dict, after: dict) -> dict[str, float]:
        wall = after["wall"] - before["wall"]

        def used(key: str) -> float:  # per process, so that a process that exits meanwhile counts as 0, not < 0
            ticks = sum(max(0, t - before[key].get(p, 0)) for p, t in after[key].items())
            return ticks / cls.TICK / wall * 100

        out = {"workers": used("workers"), "postgres": used("postgres"),
               "client": (after["client"] - before["client"]) / wall * 100}
        out["busy"] = (os.cpu_count() or 1) * 100 - (after["idle"] - before["idle"]) / wall * 100
        out["other"] = max(0.0, out["busy"] - out["workers"] - out["postgres"] - out["client"])
        return out


def wal_stats(database_url: str) -> dict[str, float]:
    """The cluster's WAL counters (pg_stat_wal, PostgreSQL 14+); empty when unavailable."""
    try:
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal").fetchone()
    except psycopg.Error:
        return {}
    return {"records": float(row[0]), "fpi": float(row[1]), "bytes": float(row[2])} if row else {}


def machine_busy(interval: float = 1.0) -> float:
    """CPU in use on the whole machine over ``interval`` seconds, in % of one core."""
    def idle() -> tuple[float, float]:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
        return (fields[3] + fields[4]) / CpuMeter.TICK, time.monotonic()

    idle0, t0 = idle()
    time.sleep(interval)
    idle1, t1 = idle()
    return (os.cpu_count() or 1) * 100 - (idle1 - idle0) / (t1 - t0) * 100


def wait_until_quiet(log, *, threshold: float, max_wait: float) -> None:
    """Other work on the machine takes CPU from both server and client: wait (bounded) for a quiet moment."""
    if max_wait <= 0:
        return
    deadline = time.monotonic() + max_wait
    busy = machine_busy()
    if busy <= threshold:
        return
    log(f"  waiting for the machine to quieten (other load {busy:.0f}% of one core) …")
    while busy > threshold and time.monotonic() < deadline:
        busy = machine_busy(2.0)
    if busy > threshold:
        log(f"  still {busy:.0f}% busy after {max_wait:.0f} s: measuring anyway")


class RssSampler(threading.Thread):
    """Peak VmRSS (MiB) of every child of the gunicorn master, sampled every 0.2 s."""

    def __init__(self, master_pid: int) -> None:
        super().__init__(daemon=True)
        self.master_pid = master_pid
        self.peak: dict[int, float] = {}
        self.stopped = threading.Event()

    def sample(self) -> None:
        for pid in harness.children_of(self.master_pid):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        mib = int(line.split()[1]) / 1024
                        self.peak[pid] = max(self.peak.get(pid, 0.0), mib)
                        break
            except OSError:
                pass

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.sample()


# --------------------------------------------------------------------------------------------------
# HTTP load
# --------------------------------------------------------------------------------------------------


class Client:
    """One keep-alive connection (http.client reconnects by itself when the server answers Connection: close)."""

    def __init__(self, url: str, token: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.https = parts.scheme == "https"
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=120)

    def post(self, body: bytes, media_type: str) -> tuple[int, bytes]:
        headers = {"Content-Type": media_type, "Authorization": f"Bearer {self.token}",
                   "Content-Length": str(len(body)), "Connection": "keep-alive"}
        try:
            self.conn.request("POST", self.prefix + EVENTS_PATH, body=body, headers=headers)
            response = self.conn.getresponse()
            return response.status, response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = self._connect()
            raise

    def close(self) -> None:
        self.conn.close()


def run_http_phase(name: str, *, url: str, token: str, pool: EventPool, clients: int, seconds: float,
                   batch: int | None, cpu: CpuMeter) -> Phase:
    """``clients`` threads post in a closed loop until ``seconds`` have passed; batch=None posts single events."""
    phase = Phase(name)
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)
    go = threading.Event()
    start_at: list[float] = []
    deadline: list[float] = []
    ends: list[float] = []

    def worker(index: int) -> None:
        rng = random.Random(index * 7919 + int(time.time() * 1000))
        client = Client(url, token)
        media = MEDIA_BATCH if batch else MEDIA_SINGLE
        per_request = batch or 1

        def body() -> bytes:
            return pool.batch_body(rng, batch) if batch else pool.single_body(rng)

        def record_error(message: str) -> None:
            with lock:
                phase.add_error(message)

        try:
            for _ in range(WARMUP_REQUESTS):
                try:
                    status, answer = client.post(body(), media)
                    if not 200 <= status < 300:
                        record_error(f"warm-up: HTTP {status}: {answer[:300]!r}")
                except (OSError, http.client.HTTPException) as exc:
                    record_error(f"warm-up: {type(exc).__name__}: {exc}")
        finally:
            ready.wait()
        go.wait()
        latencies: list[float] = []
        requests = events = 0
        next_body = body()
        while time.monotonic() < deadline[0]:
            started = time.perf_counter()
            try:
                status, answer = client.post(next_body, media)
            except (OSError, http.client.HTTPException) as exc:
                record_error(f"{type(exc).__name__}: {exc}")
                next_body = body()
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            if 200 <= status < 300:
                requests += 1
                events += per_request
            else:
                record_error(f"HTTP {status}: {answer[:300]!r}")
            next_body = body()  # built outside the timed request
        with lock:
            ends.append(time.monotonic())
            phase.add_client(requests=requests, events=events, latencies_ms=latencies)
        client.close()

    threads = harness.start_threads(worker, list(range(clients)), daemon=True)
    ready.wait()
    before = cpu.snapshot()
    start_at.append(time.monotonic())
    deadline.append(start_at[0] + seconds)
    go.set()
    for thread in threads:
        thread.join()
    phase.cpu = CpuMeter.diff(before, cpu.snapshot())
    phase.elapsed = max(ends, default=time.monotonic()) - start_at[0]
    return phase


# --------------------------------------------------------------------------------------------------
# Raw COPY, for comparison
# --------------------------------------------------------------------------------------------------


def run_copy_phase(*, database_url: str, pool: EventPool, clients: int, seconds: float, batch: int,
                   cpu: CpuMeter, dedup: bool = False, into: str | None = None) -> Phase:
    """Prebuilt COPY text rows, ``batch`` a transaction, from ``clients`` connections, into a fresh
    ``(LIKE metering_event INCLUDING ALL)`` table (its unique ``(source, event_id)`` and ``(type, subject, time)``
    indexes included).

    ``dedup=False``: the raw ``COPY`` straight into it (what the hardware takes). ``dedup=True``: the floor any
    deduplicating ingest pays: ``COPY`` into a temporary table (``ON COMMIT DELETE ROWS``), then
    ``INSERT … SELECT … ORDER BY source, event_id ON CONFLICT (source, event_id) DO NOTHING``, one transaction
    per batch, as the service did before it learnt better.

    ``into``: an existing table instead (``metering_event`` at 10M rows, for ``--big``)."""
    table = into or (DEDUP_TABLE if dedup else COPY_TABLE)
    phase = Phase("dedup floor (COPY to temp + INSERT … ON CONFLICT)" if dedup else "raw COPY")
    if into is None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
                sql.Identifier(table), sql.Identifier(EVENT_TABLE)))
    if dedup:
        copy_sql = sql.SQL("COPY bench_staging ({}) FROM STDIN").format(
            sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS[:6])))
        insert_sql = sql.SQL(
            "INSERT INTO {} ({}) SELECT source, event_id, type, subject, time, data, %s, "
            "pg_current_xact_id()::text::bigint FROM bench_staging ORDER BY source, event_id "
            "ON CONFLICT (source, event_id) DO NOTHING").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS)))
    else:
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, COPY_COLUMNS)))
    lock = threading.Lock()
    ready = threading.Barrier(clients + 1)  # all connected
    done = threading.Barrier(clients + 1)  # all finished, connections still open (their CPU still readable)
    go, release = threading.Event(), threading.Event()
    shared: dict[str, float] = {}
    ends: list[float] = []

    def worker(index: int) -> None:
        rng = random.Random(index)
        conn = None
        try:
            conn = psycopg.connect(database_url)
            if dedup:
                with conn.transaction():
                    conn.execute("CREATE TEMPORARY TABLE bench_staging (source text, event_id text, type text, "
                                 "subject text, time timestamptz, data jsonb) ON COMMIT DELETE ROWS")
        except psycopg.Error as exc:
            with lock:
                phase.add_error(f"connect: {exc}")
            conn = None
        ready.wait()
        go.wait()
        latencies: list[float] = []
        rows = requests = 0
        tx = index * 10_000_000
        while conn is not None and time.monotonic() < shared["deadline"]:
            tx += 1
            now = dt.datetime.now(dt.UTC)
            data = pool.staging_rows(rng, batch) if dedup else pool.copy_rows(rng, batch, now.isoformat().encode(), tx)
            started = time.perf_counter()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    with cur.copy(copy_sql) as copy:
                        copy.write(data)
                    if dedup:
                        cur.execute(insert_sql, [now])
            except psycopg.Error as exc:
                with lock:
                    phase.add_error(f"COPY: {exc}")
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            rows += batch
            requests += 1
        with lock:
            ends.append(time.monotonic())
            phase.add_client(requests=requests, events=rows, latencies_ms=latencies)
        done.wait()
        release.wait()
        if conn is not None:
            conn.close()

    threads = harness.start_threads(worker, list(range(clients)), daemon=True)
    ready.wait()
    before = cpu.snapshot()
    shared["start"] = time.monotonic()
    shared["deadline"] = shared["start"] + seconds
    go.set()
    done.wait()
    phase.cpu = CpuMeter.diff(before, cpu.snapshot())
    release.set()
    for thread in threads:
        thread.join()
    phase.elapsed = max(ends, default=time.monotonic()) - shared["start"]
    return phase


# --------------------------------------------------------------------------------------------------
# Database and server lifecycle
# --------------------------------------------------------------------------------------------------


class Server(harness.GunicornServer):
    def __init__(self, *, env: dict[str, str], workers: int, worker_class: str, threads: int,
                 app: str = "billing_site.wsgi", extra: tuple[str, ...] = ()) -> None:
        super().__init__(env=env, workers=workers, app=app, tmp_prefix="bench_ingest_",
                         options=["--worker-class", worker_class, "--threads", str(threads), "--timeout", "120",
                                  "--graceful-timeout", "20", *extra])


# --------------------------------------------------------------------------------------------------
# --big: server-side load of millions of events
# --------------------------------------------------------------------------------------------------

def big_insert_sql(models: tuple, routes: tuple) -> str:
    model_names = harness.sql_texts([m for m, _ in models])
    providers = harness.sql_texts([p for _, p in models])
    uris = harness.sql_texts([u for _, u, _ in routes])
    route_names = harness.sql_texts([n for _, _, n in routes])
    # %(lo)s .. %(hi)s: row numbers; %(total)s: all rows (times are spread over DAYS ending now, in order of
    # row number with some jitter, as events arrive); one ingest_tx per 1,000 rows.
    return f"""
    INSERT INTO {EVENT_TABLE} ({", ".join(COPY_COLUMNS)})
    SELECT '{SOURCE}', gen_random_uuid()::text, r.type, r.subject, r.t,
           CASE WHEN r.type = 'kong.api_request' THEN jsonb_build_object(
               'subject_type', 'consumer_id',
               'client_ip', '203.0.' || mod(r.i, 256) || '.' || (1 + mod(r.i, 254)),
               'control_plane_id', '{CONTROL_PLANE}',
               'request_host', 'api.example.com',
               'request_method', (ARRAY['POST','POST','POST','GET','GET','PUT','DELETE'])[1 + mod(r.i, 7)],
               'request_uri', (ARRAY[{uris}])[r.route],
               'request_user_agent', 'curl/8.5.0',
               'request_size_bytes', 80 + mod(r.i * 7919, 20000),
               'response_size_bytes', 100 + mod(r.i * 104729, 200000),
               'response_http_status', r.status,
               'upstream_status', r.status,
               'route_id', r.service,
               'route_name', (ARRAY[{route_names}])[r.route],
               'service_id', r.service,
               'service_name', (ARRAY[{route_names}])[r.route] || '-service',
               'service_protocol', 'http',
               'service_port', 80)
           ELSE jsonb_build_object(
               'subject_type', 'consumer_id',
               'type', CASE WHEN mod(r.i, 3) = 1 THEN 'request' ELSE 'response' END,
               'tokens', 1 + mod(r.i * 7919, 4000),
               'model', (ARRAY[{model_names}])[r.model],
               'provider', (ARRAY[{providers}])[r.model],
               'api_request_id', gen_random_uuid()::text,
               'ai_plugin_id', '{fixed_uuid(0)}',
               'ai_plugin_name', 'ai-proxy',
               'cache_status', '',
               'http_status', r.status,
               'control_plane_id', '{CONTROL_PLANE}',
               'service_id', r.service,
               'route_id', r.service)
           END,
           r.t + random() * interval '5 seconds',
           (r.i - 1) / 1000 + 1
    FROM (
        SELECT g.i,
               CASE WHEN mod(g.i, 3) = 0 THEN 'kong.api_request' ELSE 'kong.llm_request' END AS type,
               'consumer:' || md5('consumer-' || floor({CONSUMERS} * power(random(), 2))::int)::uuid::text AS subject,
               now() - interval '{DAYS} days' * (1 - g.i::float8 / %(total)s) - random() * interval '2 minutes' AS t,
               1 + mod(g.i, {len(routes)}) AS route,
               1 + mod(g.i, {len(models)}) AS model,
               md5('object-' || mod(g.i, 20))::uuid::text AS service,
               (ARRAY[{", ".join(map(str, STATUSES))}])[1 + mod(g.i, {len(STATUSES)})] AS status
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g(i)
    ) AS r
    """


def load_big(database_url: str, rows: int, log) -> dict[str, float]:
    """Bring metering_event to ``rows`` rows server-side (indexes dropped and rebuilt around the insert, one
    transaction per 500k rows), then VACUUM ANALYZE."""
    table = sql.Identifier(EVENT_TABLE)
    with psycopg.connect(database_url, autocommit=True) as conn:
        existing = harness.one_row(conn, sql.SQL("SELECT count(*) FROM {}").format(table))[0]
    needed = rows - existing
    log(f"  {EVENT_TABLE} has {existing:,} rows; loading {max(needed, 0):,}")
    if needed <= 0:
        return {}
    timings = harness.bulk_insert(database_url, EVENT_TABLE, ranges=harness.row_ranges(existing + 1, rows, 500_000),
                                  statement=big_insert_sql(MODELS, ROUTES),
                                  params=lambda lo, hi: {"lo": lo, "hi": hi, "total": rows})
    log(f"  inserted in {timings['insert_s']:.0f} s, indexes rebuilt in {timings['index_s']:.0f} s; VACUUM ANALYZE")
    with psycopg.connect(database_url, autocommit=True) as conn:
        started = time.monotonic()
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
        timings["vacuum_s"] = time.monotonic() - started
        size = harness.table_size(conn, EVENT_TABLE)
        count = harness.one_row(conn, sql.SQL("SELECT count(*) FROM {}").format(table))[0]
    log(f"  vacuumed in {timings['vacuum_s']:.0f} s; {count:,} rows, {size} with indexes")
    timings["rows"] = count
    return timings


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def mark(ok: bool | None) -> str:
    return "n/a " if ok is None else ("MET " if ok else "MISS")


def describe(phase: Phase, unit: str) -> str:
    cpu = phase.cpu
    text = (f"{phase.name}: {phase.rate:,.0f} {unit}/s ({phase.requests:,} requests in {phase.elapsed:.1f} s), "
            f"p50 {phase.percentile(0.50):.1f} ms, p99 {phase.percentile(0.99):.1f} ms, errors {phase.error_count}")
    if cpu:
        text += (f"\n    CPU (% of one core): gunicorn workers {cpu['workers']:.0f}%, postgres {cpu['postgres']:.0f}%, "
                 f"bench client {cpu['client']:.0f}%, other {cpu['other']:.0f}% (machine busy {cpu['busy']:.0f}% "
                 f"of {(os.cpu_count() or 1) * 100}%)")
        if phase.rate:
            # CPU time per unit is steadier than the rate when other work shares the machine
            per = 1e4 / phase.rate  # % of a core → µs per unit
            text += (f"\n    CPU per {unit[:-1]}: gunicorn {cpu['workers'] * per:.1f} µs, "
                     f"postgres {cpu['postgres'] * per:.1f} µs, client {cpu['client'] * per:.1f} µs")
    if phase.wal and phase.events:
        wal = phase.wal
        what = "row" if unit == "rows" else "event"
        text += (f"\n    WAL (whole cluster) per {what}: {wal['bytes'] / phase.events:,.0f} bytes, "
                 f"{wal['fpi'] / phase.events * 1000:,.0f} full-page images per 1,000 {what}s")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="target an already running server (needs --token)")
    parser.add_argument("--token", help="an API token with the ingest scope (with --url)")
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5433/bench_ingest",
                        help="the server's database (re-created unless --url; COPY and --big use it)")
    parser.add_argument("--seconds", type=float, default=30, help="length of the batch and COPY phases")
    parser.add_argument("--single-seconds", type=float, default=10, help="length of the single-event phase")
    parser.add_argument("--batch", type=int, default=1000, help="events per batch (and rows per COPY transaction)")
    parser.add_argument("--copy-connections", type=int, default=2,
                        help="connections of the raw COPY and the dedup floor")
    harness.add_load_arguments(parser, clients_help="concurrent connections",
                               worker_class_help="gunicorn worker class: gthread (production's, the default), sync, "
                                                 "uvicorn.workers.UvicornWorker (with --app billing_site.asgi)")
    parser.add_argument("--app", default="billing_site.wsgi", help="WSGI app for gunicorn (experiments)")
    parser.add_argument("--gunicorn-arg", action="append", default=[], metavar="ARG",
                        help="extra gunicorn argument, e.g. --gunicorn-arg=--pythonpath=/tmp/exp (repeatable)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for manage.py and the server (repeatable)")
    parser.add_argument("--server-pid", type=int, help="with --url: the gunicorn master pid, to read worker RSS")
    parser.add_argument("--big", action="store_true", help="also load the events table to --big-rows and measure")
    parser.add_argument("--big-rows", type=int, default=10_000_000)
    parser.add_argument("--skip", action="append", default=[], choices=["batch", "single", "copy", "dedup"],
                        help="skip a step (for experiments); repeatable")
    parser.add_argument("--quiet-wait", type=float, default=120, metavar="SECONDS",
                        help="before each step, wait up to this long for other load to drop below 25%% of a core "
                             "(0: never wait)")
    parser.add_argument("--noisy-retries", type=int, default=1,
                        help="repeat a step this many times at most when other load disturbed it")
    parser.add_argument("--keep", action="store_true", help="keep the database (it is dropped otherwise)")
    parser.add_argument("--rate-limit", type=int, default=0,
                        help="create the ingest token with this rate limit (events/s; 0: none), so that the "
                             "per-token limiter's cost is measured too")
    parser.add_argument("--profile-format", default="flamegraph", choices=["flamegraph", "raw"],
                        help="py-spy's output: an SVG flame graph, or collapsed stacks (raw, .txt)")
    parser.add_argument("--profile", metavar="PREFIX",
                        help="record py-spy flame graphs of the workers during steps 1 and 2: PREFIX-batch.svg, "
                             "PREFIX-single.svg (needs py-spy; figures of a profiled run are lower)")
    args = parser.parse_args(argv)
    if args.url and not args.token:
        parser.error("--url needs --token")

    def log(message: str) -> None:
        print(message, flush=True)

    errors: list[str] = []
    server: Server | None = None
    sampler: RssSampler | None = None
    phases: dict[str, Phase] = {}
    attempts: list[Phase] = []  # every run of every step, for the error count
    big_timings: dict[str, float] = {}
    created_database = False
    server_desc = args.url or ""
    if args.env:
        server_desc = " ".join(args.env) + " "
    try:
        if args.url:
            url, token = args.url.rstrip("/"), args.token
            master_pid = args.server_pid
        else:
            env = harness.server_env(args.database_url)
            env.update(item.split("=", 1) for item in args.env)
            log(f"database: re-creating {harness.database_name(args.database_url)} and migrating")
            harness.check_database_name(args.database_url, example="bench_ingest")
            harness.recreate_database(args.database_url)
            created_database = True
            harness.manage(env, "migrate", "--no-input", "-v", "0")
            token_args = ["--rate-limit", str(args.rate_limit)] if args.rate_limit else []
            token = harness.manage(env, "create_api_token", "bench", "--scope", "ingest",
                                   *token_args).strip().splitlines()[-1]
            server = Server(env=env, workers=args.workers, worker_class=args.worker_class, threads=args.threads,
                            app=args.app, extra=tuple(args.gunicorn_arg))
            server.wait_ready()
            url, master_pid = server.url, server.process.pid
            server_desc += " ".join(a for a in server.command[1:] if a != "--error-logfile"
                                    and a != str(server.log_path))
            log(f"server: {server_desc} (pid {master_pid})")
        cpu = CpuMeter(master_pid, harness.database_name(args.database_url))
        if master_pid:
            sampler = RssSampler(master_pid)
            sampler.sample()
            sampler.start()
        log("building the event pool")
        pool = EventPool.build()

        def quiet() -> None:
            wait_until_quiet(log, threshold=25, max_wait=args.quiet_wait)

        def measured(run, unit: str) -> Phase:
            """Run a step; when other processes took > 25% of a core meanwhile, repeat it (--noisy-retries)
            and keep the quietest attempt. Errors of every attempt count."""
            best: Phase | None = None
            for attempt in range(1 + args.noisy_retries):
                quiet()
                wal_before = wal_stats(args.database_url)
                phase = run()
                wal_after = wal_stats(args.database_url)
                if wal_before and wal_after:
                    phase.wal = {key: wal_after[key] - wal_before[key] for key in wal_after}
                attempts.append(phase)
                log("  " + describe(phase, unit))
                for message in phase.errors:
                    log(f"  error: {message}")
                if best is None or phase.cpu.get("other", 0) < best.cpu.get("other", 0):
                    best = phase
                if phase.cpu.get("other", 0) <= 25 or attempt == args.noisy_retries:
                    break
                log(f"  other processes took {phase.cpu['other']:.0f}% of a core during the step: repeating it")
            assert best is not None
            return best

        def http_phase(name: str, batch: int | None, seconds: float) -> Phase:
            log(f"{name}: {args.clients} clients, {seconds:.0f} s …")
            raw = args.profile_format == "raw"
            out = f"{args.profile}-{'batch' if batch else 'single'}.{'txt' if raw else 'svg'}"

            def run() -> Phase:
                # The profiler starts with the load (after the wait for a quiet machine) and records as long as it.
                profiler = None
                if args.profile and master_pid:
                    if os.path.exists(out):
                        os.remove(out)  # a repeated step records afresh
                    profiler = subprocess.Popen(  # noqa: S603 - our own arguments
                        [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking", "--subprocesses",
                         "--rate", "200", "--duration", str(int(seconds)), "--pid", str(master_pid), "-o", out,
                         "--format", args.profile_format],
                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
                try:
                    return run_http_phase(name, url=url, token=token, pool=pool, clients=args.clients,
                                          seconds=seconds, batch=batch, cpu=cpu)
                finally:
                    if profiler:
                        profiler.wait(timeout=60)
                        log(f"  flame graph: {out}")

            return measured(run, "events" if batch else "POSTs")

        if "batch" not in args.skip:
            phases["batch"] = http_phase(f"1. batches of {args.batch}", args.batch, args.seconds)
        if "single" not in args.skip:
            phases["single"] = http_phase("2. single events", None, args.single_seconds)
        for key, dedup in (("copy", False), ("dedup", True)):
            if key in args.skip:
                continue
            log(f"{'4. dedup floor (COPY to a temporary table + INSERT … ON CONFLICT)' if dedup else '3. raw COPY'}: "
                f"{args.copy_connections} connections, {args.batch} rows per transaction, {args.seconds:.0f} s …")
            phases[key] = measured(lambda dedup=dedup: run_copy_phase(
                database_url=args.database_url, pool=pool, clients=args.copy_connections, seconds=args.seconds,
                batch=args.batch, cpu=cpu, dedup=dedup), "rows")
            if not args.keep:
                with psycopg.connect(args.database_url, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(
                        sql.Identifier(DEDUP_TABLE if dedup else COPY_TABLE)))
        if args.big:
            log(f"5. loading {EVENT_TABLE} to {args.big_rows:,} rows (server-side generate_series) …")
            big_timings = load_big(args.database_url, args.big_rows, log)
            phases["big"] = http_phase(f"5. batches of {args.batch} at {args.big_rows / 1e6:g}M rows",
                                       args.batch, args.seconds)
            for key, dedup in (("big_copy", False), ("big_dedup", True)):
                if key.removeprefix("big_") in args.skip:
                    continue
                log(f"5. {'dedup floor' if dedup else 'raw COPY'} into {EVENT_TABLE} at that size: "
                    f"{args.copy_connections} connections …")
                phases[key] = measured(lambda dedup=dedup: run_copy_phase(
                    database_url=args.database_url, pool=pool, clients=args.copy_connections,
                    seconds=args.seconds, batch=args.batch, cpu=cpu, dedup=dedup, into=EVENT_TABLE), "rows")
    except (RuntimeError, psycopg.Error, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        if sampler:
            sampler.stopped.set()
            sampler.join()
            sampler.sample()
        if server:
            server_log = server.log_tail()
            server.stop()
            if any(p.error_count for p in attempts) and server_log:
                log("gunicorn log (tail):\n" + server_log)
        if created_database and not args.keep:
            try:
                harness.drop_database(args.database_url)
            except psycopg.Error as exc:
                errors.append(f"dropping the database: {exc}")

    for phase in attempts:
        if phase.error_count:
            errors.append(f"{phase.name}: {phase.error_count} errors, first: {phase.errors[0]}")

    batch, single, copy, dedup_phase, big = (phases.get(k) for k in ("batch", "single", "copy", "dedup", "big"))
    peaks = dict(sampler.peak) if sampler else {}
    rss = max(peaks.values()) if peaks else None
    ratio = batch.rate / copy.rate if batch and copy and copy.rate else None
    dedup_ratio = batch.rate / dedup_phase.rate if batch and dedup_phase and dedup_phase.rate else None

    def cpu_ratios(http: Phase | None, *references: Phase | None) -> str:
        """The ratios the rates would have if each path had the machine to itself: CPU per event of the
        reference (PostgreSQL + client) over the HTTP path's (workers + PostgreSQL + client). Steadier than the
        rates when other processes take a varying share of the CPU."""
        def per_event(phase: Phase | None) -> float | None:
            if not phase or not phase.cpu or not phase.rate:
                return None
            return (phase.cpu["workers"] + phase.cpu["postgres"] + phase.cpu["client"]) / phase.rate
        mine = per_event(http)
        theirs = [per_event(ref) for ref in references]
        if mine is None or None in theirs:
            return "-"
        return " / ".join(f"{ref / mine:.2f}" for ref in theirs if ref is not None)

    def worker_cpu(phase: Phase | None, unit: str) -> str:
        if not phase or not phase.cpu or not phase.rate:
            return "-"
        per = 1e4 / phase.rate  # % of a core → µs per unit
        return f"{phase.cpu['workers'] * per:.1f} µs per {unit} (postgres {phase.cpu['postgres'] * per:.1f} µs)"
    lines = [
        ("batch ingest, empty table", f"{batch.rate:,.0f} events/s" if batch else "-",
         f">= {TARGETS['batch_rate']:,} events/s", batch.rate >= TARGETS["batch_rate"] if batch else None),
        ("batch latency p50 / p99",
         f"{batch.percentile(0.5):.0f} / {batch.percentile(0.99):.0f} ms" if batch else "-",
         f"p99 <= {TARGETS['p99_ms']} ms", batch.percentile(0.99) <= TARGETS["p99_ms"] if batch else None),
        ("batch worker CPU", worker_cpu(batch, "event"), "", None),
        (f"raw COPY, {args.copy_connections} connections", f"{copy.rate:,.0f} rows/s" if copy else "-",
         "(reference)", None),
        ("  COPY p50 / p99 per batch", f"{copy.percentile(0.5):.0f} / {copy.percentile(0.99):.0f} ms" if copy else "-",
         "", None),
        (f"dedup floor, {args.copy_connections} connections", f"{dedup_phase.rate:,.0f} rows/s" if dedup_phase else "-",
         "(reference)", None),
        ("  floor p50 / p99 per batch",
         f"{dedup_phase.percentile(0.5):.0f} / {dedup_phase.percentile(0.99):.0f} ms" if dedup_phase else "-",
         "", None),
        ("ingest / raw COPY", f"{ratio:.2f}" if ratio is not None else "-", f">= {TARGETS['copy_ratio']}",
         ratio >= TARGETS["copy_ratio"] if ratio is not None else None),
        ("ingest / dedup floor", f"{dedup_ratio:.2f}" if dedup_ratio is not None else "-",
         f">= {TARGETS['dedup_ratio']}", dedup_ratio >= TARGETS["dedup_ratio"] if dedup_ratio is not None else None),
        ("  by CPU per event (shared machine)", cpu_ratios(batch, copy, dedup_phase), "", None),
        ("single-event POSTs", f"{single.request_rate:,.0f} POSTs/s" if single else "-",
         f">= {TARGETS['single_rate']:,} POSTs/s", single.request_rate >= TARGETS["single_rate"] if single else None),
        ("single-event p50 / p99",
         f"{single.percentile(0.5):.1f} / {single.percentile(0.99):.1f} ms" if single else "-", "", None),
        ("single-event worker CPU", worker_cpu(single, "POST"), "", None),
        ("peak RSS per web worker",
         (f"{rss:.0f} MiB (" + ", ".join(f"{v:.0f}" for v in peaks.values()) + ")") if rss else "-",
         f"<= {TARGETS['rss_mib']} MiB", rss <= TARGETS["rss_mib"] if rss else None),
        (f"batch ingest at {args.big_rows / 1e6:g}M rows", f"{big.rate:,.0f} events/s" if big else "not run (--big)",
         f">= {TARGETS['big_rate']:,} events/s", big.rate >= TARGETS["big_rate"] if big else None),
    ]
    if big:
        lines.append((f"  latency p50 / p99 at {args.big_rows / 1e6:g}M",
                      f"{big.percentile(0.5):.0f} / {big.percentile(0.99):.0f} ms", "", None))
        big_copy, big_dedup = phases.get("big_copy"), phases.get("big_dedup")
        for label, ref, target in (("raw COPY", big_copy, "copy_ratio"), ("dedup floor", big_dedup, "dedup_ratio")):
            if ref and ref.rate:
                value = big.rate / ref.rate
                lines.append((f"  ingest / {label} at {args.big_rows / 1e6:g}M",
                              f"{value:.2f} ({ref.rate:,.0f} rows/s; by CPU {cpu_ratios(big, ref)})",
                              f">= {TARGETS[target]}", value >= TARGETS[target]))
    print()
    print("=" * 100)
    print(f"INGEST BENCHMARK  {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  clients={args.clients} "
          f"batch={args.batch} seconds={args.seconds:g} cpus={os.cpu_count()}")
    print(f"server: {server_desc or '-'}")
    print("-" * 100)
    for label, shown, target, ok in lines:
        print(f"{mark(ok) if target else '    '}  {label:<34} {shown:<34} {target}")
    if big_timings:
        print(f"      {args.big_rows / 1e6:g}M load: insert {big_timings.get('insert_s', 0):.0f} s, "
              f"indexes {big_timings.get('index_s', 0):.0f} s, vacuum analyze {big_timings.get('vacuum_s', 0):.0f} s")
    others = {phase.name: phase.cpu["other"] for phase in phases.values() if phase.cpu}
    if others and max(others.values()) > 15:
        print("      NOTE: other processes on this machine used CPU during the run (% of one core): "
              + ", ".join(f"{name.split(':')[0]} {value:.0f}%" for name, value in others.items())
              + "; figures are lower than on a quiet machine")
    return harness.report_footer(errors)


if __name__ == "__main__":
    sys.exit(main())
