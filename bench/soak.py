"""Fault soak: events posted by gateway-like clients while workers, the gunicorn master and PostgreSQL are
killed and restarted, then reconciled against what the database holds.

Run from the project root with the project's virtualenv::

    .venv/bin/python bench/soak.py                          # 300,000 events over ~2 min, own PostgreSQL (~4 min)
    .venv/bin/python bench/soak.py --events 50000 --duration 40 --seed 7        # a quick one
    .venv/bin/python bench/soak.py --pg-ctl /usr/lib/postgresql/15/bin/pg_ctl --pgdata /srv/pg/soak \\
        --database-url postgres://postgres@127.0.0.1:5499/bench_soak   # a cluster you own (it is restarted)

PostgreSQL: by default the script initialises its own throwaway cluster in a temporary directory and starts
it on a free loopback port (as root the server runs as the ``postgres`` OS user), with PostgreSQL's durable
defaults (``fsync`` and ``synchronous_commit`` on: a 2xx must survive an immediate shutdown); it is stopped
and removed at the end (``--keep``: stopped and kept). The cluster others use (port 5432) is never touched.
With ``--pg-ctl``/``--pgdata`` it restarts a cluster you own instead, creating and dropping the database of
``--database-url`` in it.

The run:

1. the database is created and migrated, the Kong preset meters ``llm_tokens`` (SUM ``$.tokens``) and
   ``api_requests`` (COUNT) are created and an ingest token issued, through the services;
   ``gunicorn billing_site.wsgi`` starts (``--workers`` workers of ``--worker-class``, gthread by default as in
   production, ``--reuse-port``);
2. ``--clients`` threads post ``--events`` unique Kong-shaped events (``metering/data/kong_events.json``'s
   templates: per AI call one ``kong.api_request`` and two ``kong.llm_request``, ids unique per run), paced
   to take about ``--duration`` seconds, in batches of 1 to ``--batch`` events (a quarter of them at most 32
   events, the ingest's one-statement path), to ``/api/v1/events`` and ``/api/v3/openmeter/events``. Like a
   gateway, a client retries a batch with exponential backoff (honouring ``Retry-After``) on a connection
   error, a timeout, 429 and 5xx, and drops it on another 4xx (counted as refused). A share
   (``--duplicate-share``) of batches are deliberate duplicates: an acknowledged batch sent again, a batch
   whose answer is lost (the connection closed once the request is sent) and then retried, or a new batch
   carrying acknowledged events again. Every event of a batch answered 2xx is acknowledged;
3. meanwhile the faults of ``--faults`` are injected at even intervals: ``worker`` (``kill -9`` of a gunicorn
   worker, one handling a request when there is one; the master replaces it), ``master`` (``kill -9`` of the
   master; the script starts gunicorn again on the same port while the orphaned workers finish), ``pg-fast``
   and ``pg-immediate`` (``pg_ctl restart -m fast|immediate``), ``pg-outage`` (``pg_ctl stop -m immediate``,
   ``--outage`` seconds down, start); and every ``--aggregate-every`` seconds the rollup aggregator
   (``usage_process_all``, what beat runs) folds new events, failing and retrying across the restarts;
4. reconciliation: the aggregator is run to completion, then every stored event is read back: acknowledged,
   stored, lost (acknowledged, not stored), doubled (stored more than once by (source, id)), content differs
   (stored type, subject, time or data other than sent), unacknowledged but stored (an answer lost: fine);
   for each meter, the rollups (hourly and daily, per subject and bucket) and ``meter_query`` per subject
   against the same sums over the raw events: ``rollups = raw``.

Exit status 1 when an event is lost or doubled, a stored event differs from what was sent, a meter's rollups
differ from its raw events, a batch was refused or never delivered, or the run itself failed; 0 otherwise.
"""

from __future__ import annotations

import argparse
import array
import collections
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import logging
import os
import random
import re
import signal
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import harness
import msgspec
import psycopg
from harness import MODELS, log

KONG_EVENTS = harness.ROOT / "metering" / "data" / "kong_events.json"
DOORS = (("/api/v1/events", 0.7), ("/api/v3/openmeter/events", 0.3))  # OpenMeter (204) and Kong (202) layouts
MEDIA_BATCH = "application/cloudevents-batch+json"
MEDIA_SINGLE = "application/cloudevents+json"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
SMALL_BATCH = 32  # metering.services.ingest.SMALL_BATCH: up to this many events, one INSERT in autocommit
SMALL_SHARE = 0.25  # of batches
MAX_BATCH = 4000  # × 1.5 for a batch carrying old events, ~750 bytes each: under the 5 MiB and 10,000-event limits
DUPLICATE_KINDS = ("resend", "lost answer", "mixed")
FAULT_KINDS = ("worker", "master", "pg-fast", "pg-immediate", "pg-outage")
DEFAULT_FAULTS = "worker,pg-fast,master,pg-immediate,worker,pg-outage,master,pg-immediate"
METERS = ("llm_tokens", "api_requests")  # the Kong presets (metering.meter_rules.KONG_PRESETS)
SUBJECTS = 200
DAYS = 2  # event times spread over the last DAYS days
DATABASE = "bench_soak"
SENT, ACKED = 1, 2  # Ledger.state flags
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit)): ?(.*)")  # a traceback's last line
BACKOFF_START, BACKOFF_MAX, RETRY_AFTER_MAX = 0.05, 2.0, 5.0  # seconds


# --------------------------------------------------------------------------------------------------
# Events: ids that carry their number, Kong-shaped content, a digest of what was sent
# --------------------------------------------------------------------------------------------------


class EventIds:
    """Event n's id: a version-4 UUID carrying the run's 32-bit tag, n scrambled (an odd multiplier, so
    invertible modulo 2**62) and a 16-bit check of n: random-looking ids (random index inserts, as gateways
    cause) that reconciliation maps back to n without a table of 300,000 strings."""

    BITS = 62
    MASK = (1 << BITS) - 1
    MULTIPLIER = 0x2545F4914F6CDD1D & MASK | 1

    def __init__(self, tag: int) -> None:
        self.tag = tag & 0xFFFFFFFF
        self.inverse = pow(self.MULTIPLIER, -1, 1 << self.BITS)

    @staticmethod
    def _check(n: int) -> int:
        return (n * 0x9E3779B1 >> 11) & 0xFFFF

    def of(self, n: int) -> str:
        low = (n * self.MULTIPLIER + self.tag) & self.MASK
        return str(uuid.UUID(int=(self.tag << 96) | (self._check(n) << 80) | low, version=4))

    def number(self, text: str) -> int | None:
        """n for an id of this run, None for any other text."""
        try:
            value = uuid.UUID(text).int
        except ValueError:
            return None
        if value >> 96 != self.tag:
            return None
        n = (((value & self.MASK) - self.tag) * self.inverse) & self.MASK
        if self._check(n) != (value >> 80) & 0xFFFF or self.of(n) != text:
            return None
        return n


def content_digest(event_type: str, subject: str, when: dt.datetime, data: Any) -> int:
    """What must be stored as sent, as 8 bytes: type, subject, the instant, the data (keys sorted)."""
    text = "\x1f".join((event_type, subject, when.astimezone(dt.UTC).isoformat(timespec="microseconds"),
                        json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


@dataclass
class Event:
    n: int
    body: bytes  # one CloudEvent, JSON


class KongTraffic:
    """AI calls through Kong as its metering plugin reports them (the templates of
    ``metering/data/kong_events.json``): call c is events 3c (``kong.api_request``), 3c+1 and 3c+2
    (``kong.llm_request`` with ``type`` request and response), sharing subject, time and api_request_id."""

    def __init__(self, *, seed: int, ids: EventIds, digests: array.array) -> None:
        templates = json.loads(KONG_EVENTS.read_text())["events"]
        self.api = next(t for t in templates if t["type"] == "kong.api_request")
        self.llm = {t["data"]["type"]: t for t in templates if t["type"] == "kong.llm_request"}
        self.ids = ids
        self.digests = digests
        names = random.Random(f"subjects:{seed}")
        self.subjects = [f"consumer:{uuid.UUID(int=names.getrandbits(128), version=4)}" for _ in range(SUBJECTS)]
        self.now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.routes = (("/chat", "ai-chat"), ("/embeddings", "ai-embed"), ("/v1/assist", "ai-assist"))

    def _event(self, n: int, template: dict, subject: str, when: dt.datetime, when_text: str,
               data: dict) -> Event:
        self.digests[n] = content_digest(template["type"], subject, when, data)
        return Event(n, msgspec.json.encode({
            "specversion": "1.0", "id": self.ids.of(n), "source": template["source"], "type": template["type"],
            "subject": subject, "time": when_text, "datacontenttype": "application/json", "data": data,
        }))

    def call(self, rng: random.Random, c: int) -> list[Event]:
        subject = self.subjects[int(SUBJECTS * rng.random() ** 2)]  # a few busy consumers, many quiet ones
        when = self.now - dt.timedelta(milliseconds=rng.randrange(DAYS * 86_400_000))
        when_text = when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        model, provider = rng.choice(MODELS)
        uri, route = rng.choice(self.routes)
        status = rng.choice((200,) * 9 + (429,))
        request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        api = {**self.api["data"], "client_ip": f"203.0.113.{rng.randrange(1, 255)}", "request_uri": uri,
               "route_name": route, "request_size_bytes": rng.randrange(80, 20_000),
               "response_size_bytes": rng.randrange(100, 200_000), "response_http_status": status,
               "upstream_status": status}
        events = [self._event(3 * c, self.api, subject, when, when_text, api)]
        for slot, kind, tokens in ((1, "request", rng.randrange(5, 4000)), (2, "response", rng.randrange(1, 2000))):
            data = {**self.llm[kind]["data"], "tokens": tokens, "model": model, "provider": provider,
                    "api_request_id": request_id, "http_status": status}
            events.append(self._event(3 * c + slot, self.llm[kind], subject, when, when_text, data))
        return events


# --------------------------------------------------------------------------------------------------
# What the clients did
# --------------------------------------------------------------------------------------------------


class Ledger:
    """Per event: sent / acknowledged flags and the digest of what was sent; counters of the run."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.state = bytearray(total)
        self.digests = array.array("Q", bytes(8 * total))
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.answers: Counter[str] = Counter()  # "204", "503", "ConnectionRefusedError", …
        self.samples: dict[str, str] = {}  # first answer body per non-2xx status
        self.refused: list[str] = []

    def count(self, **amounts: int) -> None:
        with self.lock:
            self.counts.update(amounts)

    def mark(self, events: list[Event], flag: int) -> None:
        with self.lock:  # |= reads and writes: two threads flagging one event must not lose a flag
            for event in events:
                self.state[event.n] |= flag

    def answer(self, outcome: str, body: bytes = b"") -> None:
        with self.lock:
            self.answers[outcome] += 1
            if body and outcome not in self.samples:
                self.samples[outcome] = body[:300].decode(errors="replace")


@dataclass
class Batch:
    events: list[Event]
    path: str
    media: str

    def body(self) -> bytes:
        if self.media == MEDIA_SINGLE:
            return self.events[0].body
        return b"[" + b",".join(e.body for e in self.events) + b"]"


class Gateway(threading.Thread):
    """One client: its share of the calls, posted paced to the run's rate, retried like a gateway retries."""

    def __init__(self, index: int, *, run: Run, calls: range) -> None:
        super().__init__(name=f"gateway-{index}", daemon=True)
        self.index = index
        self.run_ = run
        self.calls = calls
        self.rng = random.Random(f"gateway:{run.args.seed}:{index}")

    def run(self) -> None:
        try:
            self._post_all()
        except Exception as exc:  # a bug here must not pass for a clean run
            self.run_.error(f"{self.name}: {type(exc).__name__}: {exc}")

    def _post_all(self) -> None:
        run, args, rng = self.run_, self.run_.args, self.rng
        rate = run.events_per_second / args.clients
        pending: collections.deque[Event] = collections.deque()
        next_call = self.calls.start
        done = 0  # new events handed to batches
        while not run.stopping.is_set():
            size = rng.randint(1, SMALL_BATCH) if rng.random() < SMALL_SHARE else rng.randint(args.batch // 2,
                                                                                                args.batch)
            while len(pending) < size and next_call < self.calls.stop:
                pending.extend(run.traffic.call(rng, next_call))
                next_call += 1
            if not pending:
                return
            fresh = [pending.popleft() for _ in range(min(size, len(pending)))]
            due = run.started + done / rate
            if run.stopping.wait(max(0.0, due - time.monotonic())):
                return
            done += len(fresh)
            kind = "new"
            if rng.random() < args.duplicate_share and run.recent:
                kind = rng.choice(DUPLICATE_KINDS)
            if kind == "resend":  # an acknowledged batch again, whole (its answer was lost at the gateway)
                with run.recent_lock:
                    old = rng.choice(run.recent)
                run.ledger.count(resent_batches=1)
                self.deliver(old)
            events = fresh
            if kind == "mixed":  # a new batch carrying acknowledged events again (the gateway re-queued them)
                with run.recent_lock:
                    pool = [e for batch in rng.sample(run.recent, min(3, len(run.recent))) for e in batch.events]
                old_events = rng.sample(pool, min(len(pool), max(1, len(fresh) // 2)))
                run.ledger.count(mixed_batches=1)
                events = old_events + fresh
            batch = self.make_batch(events)
            if kind == "lost answer":  # sent, the connection closed before the answer: a retry follows
                run.ledger.count(lost_answers=1)
                run.ledger.mark(batch.events, SENT)
                with contextlib.suppress(OSError, http.client.HTTPException):
                    self.post(batch, drop_answer=True)
                run.ledger.count(requests=1, events_posted=len(batch.events))
            if self.deliver(batch):
                with run.recent_lock:
                    run.recent.append(batch)

    def make_batch(self, events: list[Event]) -> Batch:
        r, path = self.rng.random(), DOORS[-1][0]
        for door, share in DOORS:
            if r < share:
                path = door
                break
            r -= share
        single = len(events) == 1 and self.rng.random() < 0.5
        return Batch(events, path, MEDIA_SINGLE if single else MEDIA_BATCH)

    def post(self, batch: Batch, *, drop_answer: bool = False) -> tuple[int, str | None, bytes]:
        run = self.run_
        conn = http.client.HTTPConnection("127.0.0.1", run.port, timeout=run.args.timeout)
        try:
            body = batch.body()
            conn.request("POST", batch.path, body=body, headers={
                "Content-Type": batch.media, "Authorization": f"Bearer {run.token}",
                "Content-Length": str(len(body))})
            if drop_answer:
                return 0, None, b""
            response = conn.getresponse()
            return response.status, response.getheader("Retry-After"), response.read()
        finally:
            conn.close()

    def deliver(self, batch: Batch) -> bool:
        """Post until 2xx (acknowledged), another 4xx (refused) or the run's deadline."""
        run, ledger = self.run_, self.run_.ledger
        ledger.mark(batch.events, SENT)
        attempt = 0
        while True:
            if time.monotonic() > run.deadline or run.aborted.is_set():
                ledger.count(undelivered_batches=1, undelivered_events=len(batch.events))
                return False
            if attempt:
                ledger.count(retries=1, retried_events=len(batch.events))
            ledger.count(requests=1, events_posted=len(batch.events))
            wait = min(BACKOFF_MAX, BACKOFF_START * 2 ** min(attempt, 10)) * (0.5 + self.rng.random())
            attempt += 1
            try:
                status, retry_after, answer = self.post(batch)
            except (OSError, http.client.HTTPException) as exc:
                ledger.answer(type(exc).__name__)
                time.sleep(wait)
                continue
            ledger.answer(str(status), b"" if 200 <= status < 300 else answer)
            if 200 <= status < 300:
                ledger.mark(batch.events, ACKED)
                return True
            if status in RETRY_STATUSES:
                if retry_after and retry_after.strip().isdigit():
                    wait = max(wait, min(RETRY_AFTER_MAX, float(retry_after)))
                time.sleep(wait)
                continue
            with ledger.lock:  # a gateway drops a batch refused with another 4xx: the events are gone
                ledger.counts["refused_events"] += len(batch.events)
                if len(ledger.refused) < 5:
                    ledger.refused.append(f"HTTP {status} on {batch.path}: {answer[:300]!r}")
            return False


# --------------------------------------------------------------------------------------------------
# The run: server, faults, aggregator
# --------------------------------------------------------------------------------------------------

GUNICORN_OPTIONS = ["--timeout", "30", "--graceful-timeout", "10", "--reuse-port"]


@dataclass
class Fault:
    kind: str
    at: float  # seconds since the clients started
    detail: str = ""
    seconds: float = 0.0  # until the killed part was back


@dataclass
class Run:
    args: argparse.Namespace
    cluster: harness.PostgresCluster
    env: dict[str, str]
    token: str
    traffic: KongTraffic
    ledger: Ledger
    port: int = 0
    server: harness.GunicornServer | None = None
    dead_servers: list[harness.GunicornServer] = field(default_factory=list)
    orphans: dict[int, float] = field(default_factory=dict)  # pid → when its master was killed
    orphan_lifetimes: list[float] = field(default_factory=list)  # seconds each orphan outlived its master
    server_lock: threading.Lock = field(default_factory=threading.Lock)
    recent: collections.deque = field(default_factory=lambda: collections.deque(maxlen=256))
    recent_lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    aborted: threading.Event = field(default_factory=threading.Event)
    faults: list[Fault] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    started: float = 0.0
    deadline: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.args.events / self.args.duration

    def error(self, message: str) -> None:
        with self.ledger.lock:
            self.errors.append(message)
        log(f"  error: {message}")

    def start_server(self) -> None:
        options = ["--worker-class", self.args.worker_class, "--threads", str(self.args.threads), *GUNICORN_OPTIONS]
        server = harness.GunicornServer(env=self.env, workers=self.args.workers, options=options,
                                        tmp_prefix="bench_soak_", port=self.port or None, keep_output=True)
        self.server = server
        self.port = server.port
        server.wait_ready(timeout=120)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def server_exceptions(self) -> Counter[str]:
        """The exceptions in the output of every gunicorn of the run (Django's log of a 500, a worker's
        traceback): ``Type: first words`` → count."""
        lines: list[tuple[str, str]] = []
        for server in [*self.dead_servers, *([self.server] if self.server else [])]:
            if server.output_path is None:
                continue
            with contextlib.suppress(OSError):
                for text in server.output_path.read_text(errors="replace").splitlines():
                    match = EXCEPTION_LINE.match(text)
                    if match:
                        lines.append((match[1], match[2]))
        # A driver error Django wrapped appears twice (psycopg's, then Django's with the same message): once here.
        wrapped = {message for kind, message in lines if kind.startswith("django.db.")}
        return Counter(f"{kind}: {message[:110]}" for kind, message in lines
                       if not (kind.startswith("psycopg.") and message in wrapped))


class FaultInjector(threading.Thread):
    """The faults of --faults at even intervals over --duration, one at a time."""

    def __init__(self, run: Run, schedule: list[str]) -> None:
        super().__init__(name="faults", daemon=True)
        self.run_ = run
        self.schedule = schedule

    def run(self) -> None:
        run = self.run_
        for i, kind in enumerate(self.schedule):
            at = run.started + run.args.duration * (i + 1) / (len(self.schedule) + 1)
            if run.stopping.wait(max(0.0, at - time.monotonic())):
                return
            fault = Fault(kind, run.elapsed())
            try:
                with run.server_lock:
                    getattr(self, kind.replace("-", "_"))(fault)
            except Exception as exc:
                fault.detail += f" FAILED: {type(exc).__name__}: {exc}"
                run.error(f"fault {kind}: {type(exc).__name__}: {exc}")
            run.faults.append(fault)
            log(f"  +{fault.at:6.1f} s  {kind:<12} {fault.detail}")

    def _busy_worker(self, server: harness.GunicornServer, wait: float = 5.0) -> tuple[int | None, bool]:
        """A worker handling a request (waiting up to ``wait`` s for one), else any worker."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            busy = server.busy_workers()
            if busy:
                return random.choice(busy), True
            time.sleep(0.002)
        workers = server.worker_pids()
        return (random.choice(workers) if workers else None), False

    def worker(self, fault: Fault) -> None:
        server = self.run_.server
        assert server is not None
        pid, busy = self._busy_worker(server)
        if pid is None:
            raise RuntimeError("gunicorn has no worker")
        started = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        while time.monotonic() - started < 60:
            workers = server.worker_pids()
            if pid not in workers and len(workers) >= server.workers:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"worker {pid} not replaced after 60 s")
        fault.seconds = time.monotonic() - started
        fault.detail = (f"kill -9 worker {pid} ({'handling a request' if busy else 'idle'}); "
                        f"the master replaced it in {fault.seconds:.1f} s")

    def master(self, fault: Fault) -> None:
        run = self.run_
        server = run.server
        assert server is not None
        _, busy = self._busy_worker(server)
        started = time.monotonic()
        pid = server.process.pid
        orphans = server.kill()
        for orphan in orphans:
            run.orphans[orphan] = started
        run.dead_servers.append(server)
        run.start_server()
        fault.seconds = time.monotonic() - started
        fault.detail = (f"kill -9 master {pid} ({len(orphans)} workers orphaned, "
                        f"{'one' if busy else 'none'} handling a request); a new gunicorn on the same port "
                        f"ready in {fault.seconds:.1f} s")

    def pg_fast(self, fault: Fault) -> None:
        fault.seconds = self.run_.cluster.restart("fast")
        fault.detail = f"pg_ctl restart -m fast: accepting connections again after {fault.seconds:.1f} s"

    def pg_immediate(self, fault: Fault) -> None:
        fault.seconds = self.run_.cluster.restart("immediate")
        fault.detail = (f"pg_ctl restart -m immediate (crash recovery): accepting connections again after "
                        f"{fault.seconds:.1f} s")

    def pg_outage(self, fault: Fault) -> None:
        started = time.monotonic()
        self.run_.cluster.stop("immediate")
        time.sleep(self.run_.args.outage)
        self.run_.cluster.start()
        fault.seconds = time.monotonic() - started
        fault.detail = (f"pg_ctl stop -m immediate, {self.run_.args.outage:g} s down, start: back after "
                        f"{fault.seconds:.1f} s")


class Aggregator(threading.Thread):
    """What beat does every few seconds: ``usage_process_all``, here every --aggregate-every seconds."""

    def __init__(self, run: Run) -> None:
        super().__init__(name="aggregator", daemon=True)
        self.run_ = run
        self.stopped = threading.Event()
        self.rounds = self.failed_rounds = self.folded = self.meter_failures = 0
        self.last_error = ""

    def run(self) -> None:
        from django.db import close_old_connections, connection

        from metering.services.rollups import usage_process_all

        while not self.stopped.wait(self.run_.args.aggregate_every):
            close_old_connections()
            try:
                report = usage_process_all(time_budget=10.0)
                self.rounds += 1
                self.folded += report.total
                self.meter_failures += len(report.failures)
            except Exception as exc:  # the database restarting under it: the next round retries
                self.failed_rounds += 1
                self.last_error = first_line(exc)
                with contextlib.suppress(Exception):
                    connection.close()
        with contextlib.suppress(Exception):
            connection.close()


# --------------------------------------------------------------------------------------------------
# Reconciliation
# --------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What the reconciliation found. ``counts``: events acknowledged, stored, lost, doubled (``doubled_sql``: by
    SQL's GROUP BY), differs, unacknowledged_stored, sent_unanswered (sent, never acknowledged, not stored: its
    batch was still failing; fine), never_sent, and foreign rows (not from this run); a finding not met counts 0.
    The samples: the first few lost and differing events."""
    counts: Counter[str] = field(default_factory=Counter)
    lost_samples: list[str] = field(default_factory=list)
    differs_samples: list[str] = field(default_factory=list)


def reconcile_events(url: str, ids: EventIds, ledger: Ledger) -> Tally:
    """Read every stored event back and set it against the ledger."""
    tally = Tally()
    counts = tally.counts
    copies = bytearray(ledger.total)  # stored rows per event, saturating at 255
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        with conn.cursor(name="soak_reconcile") as cur:
            cur.itersize = 20_000
            cur.execute("SELECT source, event_id, type, subject, time, data FROM metering_event")
            for source, event_id, event_type, subject, when, data in cur:
                n = ids.number(event_id) if source == "kong-gateway" else None
                if n is None or n >= ledger.total:
                    counts["foreign"] += 1
                    continue
                copies[n] = min(255, copies[n] + 1)
                if content_digest(event_type, subject, when, data) != ledger.digests[n]:
                    counts["differs"] += 1
                    if len(tally.differs_samples) < 3:
                        tally.differs_samples.append(f"{event_id}: {event_type} {subject} {when} {data}")
        counts["doubled_sql"] = harness.one_row(conn, "SELECT count(*) FROM (SELECT 1 FROM metering_event "
                                                      "GROUP BY source, event_id HAVING count(*) > 1) AS d")[0]
    state = ledger.state
    for n in range(ledger.total):
        acked, stored = state[n] & ACKED, copies[n]
        counts["acknowledged"] += bool(acked)
        counts["stored"] += bool(stored)
        counts["doubled"] += stored > 1
        if acked and not stored:
            counts["lost"] += 1
            if len(tally.lost_samples) < 5:
                tally.lost_samples.append(ids.of(n))
        elif stored and not acked:
            counts["unacknowledged_stored"] += 1
        elif not stored and state[n] & SENT and not acked:
            counts["sent_unanswered"] += 1
        if not state[n] & SENT:
            counts["never_sent"] += 1
    return tally


@dataclass
class MeterCheck:
    slug: str
    definition: str
    subjects: int = 0
    hours: int = 0
    days: int = 0
    events: int = 0
    total: Decimal = Decimal(0)
    mismatches: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.mismatches


def _as_decimal(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _compare(check: MeterCheck, what: str, mine: dict, raw: dict) -> None:
    keys = set(mine) | set(raw)
    wrong = sorted((k for k in keys if mine.get(k) != raw.get(k)), key=str)
    if wrong:
        k = wrong[0]
        check.mismatches.append(f"{what}: {len(wrong)} of {len(keys)} differ, e.g. {k}: rollups {mine.get(k)} "
                                f"vs raw {raw.get(k)}")


def check_rollups(url: str) -> list[MeterCheck]:
    """Per meter: hourly and daily rollups per (subject, bucket) and meter_query per subject, against the raw
    events; events counted and (for SUM) values summed."""
    from metering.models import Meter
    from metering.selectors.usage import meter_query

    checks = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for meter in Meter.objects.order_by("slug"):
            check = MeterCheck(meter.slug, f"{meter.aggregation} {meter.value_property or '*'} of {meter.event_type}")
            checks.append(check)
            if meter.aggregation == "SUM":
                field_name = meter.value_property.removeprefix("$.")  # the presets' value: a top-level key
                if not field_name.isidentifier():
                    check.mismatches.append(f"cannot check value property {meter.value_property}")
                    continue
                value = f"(data ->> '{field_name}')::numeric"
            elif meter.aggregation == "COUNT":
                value = "0"
            else:
                check.mismatches.append(f"{meter.aggregation} is not checked by the soak")
                continue
            for unit, table in (("hour", "metering_hourlyusage"), ("day", "metering_dailyusage")):
                raw = {(s, b): (int(c), _as_decimal(v)) for s, b, c, v in conn.execute(
                    f"SELECT subject, date_trunc('{unit}', time), count(*), COALESCE(sum({value}), 0) "  # noqa: S608
                    "FROM metering_event WHERE type = %s GROUP BY 1, 2", [meter.event_type])}
                mine = {(s, b): (int(c), _as_decimal(v)) for s, b, c, v in conn.execute(
                    f"SELECT s.subject, r.bucket_start, sum(r.event_count), sum(r.value_sum) FROM {table} r "  # noqa: S608
                    "JOIN metering_usageseries s ON s.id = r.series_id WHERE s.meter_id = %s GROUP BY 1, 2",
                    [meter.pk])}
                _compare(check, f"{unit}ly rollups per subject", mine, raw)
                if unit == "hour":
                    check.hours = len(raw)
                else:
                    check.days = len(raw)
            first, last, events = harness.one_row(conn, "SELECT min(time), max(time), count(*) FROM metering_event "
                                                        "WHERE type = %s", [meter.event_type])
            check.events = events
            if not events:
                continue
            start = first.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            end = last.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) + dt.timedelta(days=1)
            per_subject = "count(*)" if meter.aggregation == "COUNT" else f"sum({value})"
            raw_totals = {s: _as_decimal(v) for s, v in conn.execute(
                f"SELECT subject, {per_subject} FROM metering_event WHERE type = %s GROUP BY 1",  # noqa: S608
                [meter.event_type])}
            answered = {row.subject: _as_decimal(row.value)
                        for row in meter_query(meter=meter, start=start, end=end, group_by=["subject"])}
            _compare(check, "meter_query per subject", answered, raw_totals)
            check.subjects = len(raw_totals)
            check.total = sum(raw_totals.values(), Decimal(0))
    return checks


def catch_up(run: Run) -> tuple[int, float]:
    """The aggregator to completion: every meter's high-water mark above its newest event's transaction."""
    from django.db import close_old_connections, connection

    from metering.models import Meter
    from metering.services.rollups import rollups_catch_up

    started = time.monotonic()
    folded = 0
    for attempt in range(1, 6):
        close_old_connections()
        try:
            pending = []
            for meter in Meter.objects.order_by("pk"):
                folded += rollups_catch_up(meter_id=meter.pk)
                meter.refresh_from_db()
                with connection.cursor() as cursor:
                    cursor.execute("SELECT max(ingest_tx) FROM metering_event WHERE type = %s", [meter.event_type])
                    newest = cursor.fetchone()[0]
                if newest is not None and meter.rollup_low <= newest:
                    pending.append(f"{meter.slug} at {meter.rollup_low}, newest event tx {newest}")
            if not pending:
                return folded, time.monotonic() - started
            log(f"  not caught up yet ({'; '.join(pending)}): again")
        except Exception as exc:
            log(f"  catch-up attempt {attempt} failed: {type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                connection.close()
        time.sleep(1)
    raise RuntimeError("the aggregator did not catch up after 5 attempts")


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def watch_orphans(run: Run, *, patience: float = 120) -> None:
    """Forget the orphaned workers that exited; kill (and report) one still running after ``patience`` s."""
    for pid, since in list(run.orphans.items()):
        if not harness.pid_alive(pid):
            run.orphan_lifetimes.append(time.monotonic() - since)
            del run.orphans[pid]
        elif time.monotonic() - since > patience:
            run.error(f"orphaned worker {pid} still running {patience:.0f} s after its master was killed: killing it")
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            del run.orphans[pid]


def progress(run: Run, aggregator: Aggregator, gateways: list[Gateway]) -> None:
    """Until the clients are done: a line every 10 s; a gunicorn that died by itself is restarted (and
    counted as an error); orphaned workers that do not exit are reported."""
    next_line = time.monotonic() + 10
    while any(g.is_alive() for g in gateways):
        time.sleep(0.2)
        if run.server_lock.acquire(blocking=False):  # not while a fault restarts it
            try:
                server = run.server
                if server is not None and server.process.poll() is not None:
                    run.error(f"gunicorn exited by itself ({server.process.returncode}):\n{server.log_tail()}")
                    run.dead_servers.append(server)
                    run.start_server()
            finally:
                run.server_lock.release()
        watch_orphans(run)
        if time.monotonic() >= next_line:
            next_line += 10
            ledger = run.ledger
            with ledger.lock:
                answers = ", ".join(f"{k} {v:,}" for k, v in sorted(ledger.answers.items()))
            acked = len(ledger.state) - ledger.state.count(0) - ledger.state.count(SENT)
            log(f"  +{run.elapsed():6.1f} s  acknowledged {acked:,} of {ledger.total:,}; answers: {answers}; "
                f"aggregator rounds {aggregator.rounds} (failed {aggregator.failed_rounds})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="unique events to post")
    parser.add_argument("--duration", type=float, default=120, help="seconds the posting is paced over")
    parser.add_argument("--batch", type=int, default=500, help="largest batch (events)")
    parser.add_argument("--duplicate-share", type=float, default=0.1,
                        help="share of batches that are deliberate duplicates (resend, lost answer, mixed)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the events, batches and duplicates")
    parser.add_argument("--faults", default=DEFAULT_FAULTS,
                        help=f"comma-separated, injected at even intervals; kinds: {', '.join(FAULT_KINDS)}")
    parser.add_argument("--outage", type=float, default=5, help="seconds PostgreSQL stays down in a pg-outage")
    harness.add_load_arguments(parser, clients_help="concurrent gateway clients (threads)")
    parser.add_argument("--aggregate-every", type=float, default=2, help="seconds between aggregator rounds")
    parser.add_argument("--timeout", type=float, default=60, help="client timeout per request, seconds")
    parser.add_argument("--database-url", help="with --pg-ctl/--pgdata: the database to (re-)create in that cluster")
    parser.add_argument("--pg-ctl", help="pg_ctl of a cluster you own (restarted by the faults)")
    parser.add_argument("--pgdata", help="that cluster's data directory")
    parser.add_argument("--pg-os-user", help="run pg_ctl as this OS user (runuser), e.g. postgres")
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a postgresql.conf setting of the throwaway cluster (repeatable), e.g. "
                             "synchronous_commit=off to see the soak catch acknowledged events lost")
    parser.add_argument("--keep", action="store_true",
                        help="keep the database (own cluster: stopped, its directory kept) and gunicorn's logs")
    args = parser.parse_args(argv)
    schedule = [kind.strip() for kind in args.faults.split(",") if kind.strip()]
    bad = [kind for kind in schedule if kind not in FAULT_KINDS]
    if bad:
        parser.error(f"unknown fault kinds: {', '.join(bad)} (known: {', '.join(FAULT_KINDS)})")
    if bool(args.pg_ctl) != bool(args.pgdata) or bool(args.pg_ctl) != bool(args.database_url):
        parser.error("--pg-ctl, --pgdata and --database-url go together (without them: an own throwaway cluster)")
    if args.events < 3 or args.clients < 1 or not 1 <= args.batch <= MAX_BATCH or args.duration <= 0:
        parser.error(f"need --events >= 3, --clients >= 1, 1 <= --batch <= {MAX_BATCH}, --duration > 0")
    if args.pg_setting and args.pg_ctl:
        parser.error("--pg-setting is for the throwaway cluster; configure your own cluster yourself")
    if any("=" not in item for item in args.pg_setting):
        parser.error("--pg-setting takes NAME=VALUE")
    if not 0 <= args.duplicate_share <= 1:
        parser.error("--duplicate-share is a share: 0 to 1")
    args.events -= args.events % 3  # whole calls

    began = time.monotonic()
    log("bench/soak.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    errors: list[str] = []
    cluster: harness.PostgresCluster | None = None
    run: Run | None = None
    aggregator: Aggregator | None = None
    created = False
    database_url = ""
    tally: Tally | None = None
    checks: list[MeterCheck] = []
    timings: dict[str, float] = {}
    pg_desc = ""
    server_exceptions: Counter[str] = Counter()
    try:
        if args.pg_ctl:
            port = urllib.parse.urlsplit(args.database_url).port or 5432
            cluster = harness.PostgresCluster.existing(pg_ctl=args.pg_ctl, pgdata=args.pgdata, port=int(port),
                                                       os_user=args.pg_os_user)
            database_url = args.database_url
            harness.check_database_name(database_url, example=f"{DATABASE}")
            pg_desc = f"your cluster {args.pgdata} (port {port})"
        else:
            log("PostgreSQL: initdb and start a throwaway cluster …")
            cluster = harness.PostgresCluster.throwaway(
                tmp_prefix="bench_soak_pg_", settings=dict(item.split("=", 1) for item in args.pg_setting))
            database_url = cluster.url(DATABASE)
            pg_desc = f"throwaway cluster {cluster.pgdata} (port {cluster.port})"
        with psycopg.connect(harness.maintenance_url(database_url), autocommit=True) as conn:
            version, fsync, sync_commit = harness.one_row(
                conn, "SELECT current_setting('server_version'), current_setting('fsync'), "
                      "current_setting('synchronous_commit')")
        pg_desc += f", PostgreSQL {version}, fsync {fsync}, synchronous_commit {sync_commit}"
        log(f"database: {database_url} on {pg_desc}")
        harness.recreate_database(database_url)
        created = True
        harness.use_project_in_process(database_url)

        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        from metering.services.meters import meter_create_from_preset
        from metering.services.tokens import api_token_create

        # The aggregator's failures while PostgreSQL restarts are counted (Aggregator); their tracebacks would
        # bury the run's output.
        logging.getLogger("metering.services.rollups").setLevel(logging.CRITICAL)
        call_command("migrate", "--no-input", verbosity=0)
        for slug in METERS:
            meter_create_from_preset(preset=slug)
        _, token = api_token_create(name="soak", scopes=["ingest"])
        connection.close()

        ledger = Ledger(args.events)
        ids = EventIds(random.Random(f"tag:{args.seed}").getrandbits(32))
        traffic = KongTraffic(seed=args.seed, ids=ids, digests=ledger.digests)
        run = Run(args=args, cluster=cluster, env=harness.server_env(database_url), token=token, traffic=traffic,
                  ledger=ledger)
        run.start_server()
        assert run.server is not None
        log(f"gunicorn: {args.workers} {args.worker_class} workers (threads {args.threads}) on {run.server.url} "
            f"(pid {run.server.process.pid})")
        log(f"posting {args.events:,} events from {args.clients} clients over ~{args.duration:g} s "
            f"({run.events_per_second:,.0f} events/s), batches up to {args.batch}, duplicate share "
            f"{args.duplicate_share:g}; faults: {', '.join(schedule)}")

        calls = args.events // 3
        bounds = [calls * i // args.clients for i in range(args.clients + 1)]
        gateways = [Gateway(i, run=run, calls=range(bounds[i], bounds[i + 1])) for i in range(args.clients)]
        aggregator = Aggregator(run)
        injector = FaultInjector(run, schedule)
        run.started = time.monotonic()
        run.deadline = run.started + args.duration * 3 + 120
        for thread in (*gateways, aggregator, injector):
            thread.start()
        try:
            progress(run, aggregator, gateways)
        finally:
            posting = run.elapsed()
            run.stopping.set()
            injector.join()
            aggregator.stopped.set()
            aggregator.join()
        timings["posting"] = posting
        log(f"clients done after {posting:.1f} s; faults injected: {len(run.faults)} of {len(schedule)}")
        with run.server_lock:
            while run.orphans:  # processes this run started: none may outlive it
                watch_orphans(run, patience=60)
                time.sleep(0.2)
            if run.server is not None:
                run.server.stop_process()
            server_exceptions = run.server_exceptions()
        errors.extend(run.errors)

        log("reconciliation: the aggregator to completion …")
        folded, timings["catch_up"] = catch_up(run)
        log(f"  folded {folded:,} more events in {timings['catch_up']:.1f} s")
        log("reconciliation: every stored event against what was acknowledged …")
        started = time.monotonic()
        tally = reconcile_events(database_url, ids, ledger)
        log("reconciliation: rollups against raw events, per meter …")
        checks = check_rollups(database_url)
        timings["reconcile"] = time.monotonic() - started
        connection.close()
    except Exception as exc:  # the report still prints, and the cleanup below runs
        errors.append(f"{type(exc).__name__}: {exc}")
        log(traceback.format_exc())
    finally:
        if run is not None:
            run.stopping.set()
            run.aborted.set()
            if aggregator is not None:
                aggregator.stopped.set()
            for server in [*run.dead_servers, *([run.server] if run.server else [])]:
                if args.keep:
                    server.stop_process()
                    log(f"kept gunicorn's logs: {server.tmp}")
                else:
                    server.stop()  # reaped already or stopped: removes its temporary directory
        if cluster is not None:
            if cluster.tmp is None and created and not args.keep:
                harness.drop_unless_kept(database_url, keep=False, created=True, errors=errors)
            cluster.cleanup(keep=args.keep)
            if args.keep and cluster.tmp is not None:
                log(f"kept (stopped): {cluster.tmp}; start it with: {cluster.pg_ctl} -D {cluster.pgdata} "
                    f"-l {cluster.log_path} start" + (f"  (as {cluster.os_user})" if cluster.os_user else ""))

    return report(args, schedule, pg_desc, run, aggregator, tally, checks, timings, server_exceptions,
                  time.monotonic() - began, errors)


def report(args: argparse.Namespace, schedule: list[str], pg_desc: str, run: Run | None,
           aggregator: Aggregator | None, tally: Tally | None, checks: list[MeterCheck], timings: dict[str, float],
           server_exceptions: Counter[str], duration: float, errors: list[str]) -> int:
    ledger = run.ledger if run else None
    counts = ledger.counts if ledger else Counter()
    failures = list(errors)
    print()
    print("=" * 100)
    print(f"FAULT SOAK  {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC  events={args.events:,} clients={args.clients} "
          f"batch={args.batch} duplicate-share={args.duplicate_share:g} seed={args.seed} cpus={os.cpu_count()}")
    print(f"postgres: {pg_desc or '-'}; gunicorn: {args.workers} {args.worker_class} workers (threads {args.threads})")
    print("-" * 100)

    def line(label: str, value: object) -> None:
        print(f"{label:<28} {value}")

    if run:
        kinds = Counter(f.kind for f in run.faults)
        line("faults injected", f"{len(run.faults)} of {len(schedule)}: "
             + ", ".join(f"{kind} ×{n}" for kind, n in kinds.items()))
        for fault in run.faults:
            print(f"  +{fault.at:6.1f} s  {fault.kind:<12} {fault.detail}")
        if run.orphan_lifetimes:
            print(f"  orphaned workers: {len(run.orphan_lifetimes)}, exited {min(run.orphan_lifetimes):.1f}–"
                  f"{max(run.orphan_lifetimes):.1f} s after their master was killed")
    if ledger:
        answers = ledger.answers
        ok = sum(v for k, v in answers.items() if k.isdigit() and 200 <= int(k) < 300)
        line("requests", f"{counts['requests']:,}: " + ", ".join(f"{k} ×{v:,}" for k, v in sorted(answers.items()))
             + f" ({ok:,} acknowledged)")
        for outcome, sample in sorted(ledger.samples.items()):
            print(f"  first {outcome} answer: {sample}")
        for text, n in server_exceptions.most_common(6):
            print(f"  server log: {n:,} × {text}")
        if answers.get("500"):
            print("  note: 500 answers: a database outage should be answered 503 with Retry-After "
                  "(a gateway retries both)")
        line("duplicates sent", f"{counts['events_posted'] - (ledger.total - ledger.state.count(0)):,} events "
             f"again: {counts['resent_batches']:,} acknowledged batches resent, {counts['lost_answers']:,} answers "
             f"lost, {counts['mixed_batches']:,} new batches carrying acknowledged events, "
             f"{counts['retries']:,} retries ({counts['retried_events']:,} events)")
    if tally:
        found = tally.counts
        line("acknowledged", f"{found['acknowledged']:,}")
        line("stored", f"{found['stored']:,}"
             + (f" (+{found['foreign']:,} rows not from this run)" if found["foreign"] else ""))
        line("lost", f"{found['lost']:,}" + (f" e.g. {', '.join(tally.lost_samples)}" if found["lost"] else ""))
        line("doubled", f"{found['doubled']:,} (by (source, id); SQL GROUP BY: {found['doubled_sql']:,})")
        line("content differs", f"{found['differs']:,}"
             + (f" e.g. {tally.differs_samples[0]}" if found["differs"] else ""))
        line("unacknowledged but stored", f"{found['unacknowledged_stored']:,} (an answer lost: fine)")
        if found["sent_unanswered"]:
            line("sent, not acknowledged, not stored", f"{found['sent_unanswered']:,}")
        if found["lost"] or found["doubled"] or found["doubled_sql"]:
            failures.append(f"{found['lost']:,} lost, {found['doubled']:,} doubled")
        if found["differs"]:
            failures.append(f"{found['differs']:,} stored events differ from what was sent")
        if found["never_sent"]:
            failures.append(f"{found['never_sent']:,} events never sent (the clients stopped early)")
    if counts["refused_events"]:
        failures.append(f"{counts['refused_events']:,} events refused with a 4xx: "
                        + "; ".join(ledger.refused if ledger else []))
    if counts["undelivered_events"]:
        failures.append(f"{counts['undelivered_events']:,} events not delivered by the deadline "
                        f"({counts['undelivered_batches']:,} batches)")
    if checks:
        line("rollups = raw", ", ".join(f"{c.slug} {'yes' if c.equal else 'NO'}" for c in checks))
        for c in checks:
            print(f"  {c.slug} ({c.definition}): {c.events:,} events, {c.subjects:,} subjects, {c.hours:,} "
                  f"subject-hours, {c.days:,} subject-days, total {c.total:,}")
            for mismatch in c.mismatches:
                print(f"    {mismatch}")
            if not c.equal:
                failures.append(f"{c.slug}: rollups differ from raw events")
    elif tally:
        failures.append("rollups were not checked")
    if aggregator:
        line("aggregator during the soak", f"{aggregator.rounds} rounds folded {aggregator.folded:,} events; "
             f"{aggregator.failed_rounds} rounds failed"
             + (f" (last: {aggregator.last_error})" if aggregator.last_error else "")
             + (f"; {aggregator.meter_failures} meter failures recorded" if aggregator.meter_failures else ""))
    line("duration", f"{duration:.0f} s (posting {timings.get('posting', 0):.0f} s, final catch-up "
         f"{timings.get('catch_up', 0):.1f} s, reconciliation {timings.get('reconcile', 0):.1f} s)")
    return harness.report_footer(failures)


if __name__ == "__main__":
    sys.exit(main())
