"""Cycle-close benchmark: a month-end ``close_cycles`` over many customers on PostgreSQL.

Run from the project root with the project's virtualenv::

    .venv/bin/python bench/close.py --customers 1000 --keep      # shake-out, ~1 min
    .venv/bin/python bench/close.py --keep                       # 10,000 customers, 1M events: ~6 min seeding
    .venv/bin/python bench/close.py --keep --runs 3              # again: reuses the seeded database
    .venv/bin/python bench/close.py --customers 1000 --rate-cards 6 --database-url …/bench_close_rc6 --keep

It (re-)creates the database of ``--database-url`` (default ``postgres://postgres@127.0.0.1:5433/bench_close``;
``billing``, ``test_*`` and other benchmarks' ``bench_ingest*``/``bench_usage*``/``bench_entitlements*`` are
refused), migrates it and seeds it through the services, in this process (Django, ``DEBUG=false``, Celery on the
in-memory broker, no Stripe key so invoices stay local):

- the meter ``llm_tokens`` (SUM ``$.tokens`` by model, provider, type) with ``meter_create``; the features
  ``ai-token`` (provider=openai, type=request) and ``ai-token-out`` (type=response) with ``feature_create``,
  plus, for ``--rate-cards`` above 2, features on the same meter filtered by model and type;
- the plan ``token`` (monthly, USD): a unit rate card for ai-token, a graduated one with free quantity and a
  minimum spend for ai-token-out, one unit rate card per extra feature, a flat in-advance platform fee and a
  metered entitlement (``plan_create`` + ``plan_publish``);
- ``--customers`` customers (``customer_create``), each including one Kong subject ``consumer:<uuid>``
  (``attribution_add``) and subscribed from the 1st of last month with the calendar anchor (with ``--credits``,
  two prepaid credit grants each, $60 at priority 10 expiring and $40 without expiry, which the closes apply)
  (``subscription_create``); their opening cycle (cycle 0, the in-advance fee) is closed right away with
  ``close_cycles(now=<the 1st>)``, as the beat does when a subscription starts;
- ``--events-per-customer`` ``kong.llm_request`` events per subject over that month, server-side
  (``INSERT … SELECT … FROM generate_series``; half requests, half responses, 5 models, ``ingest_tx`` one per
  1,000 rows: all below every running transaction), folded with ``rollups_catch_up``; then ``VACUUM ANALYZE``.

With ``--keep`` the database is kept, and an existing one seeded with the same ``--customers``,
``--events-per-customer`` and ``--rate-cards`` is reused: the invoices of the month-end cycle (and their close
rows, log and numbers) are deleted with SQL so the close can run again.

The measurement: ``invoicing.services.close.close_cycles(now=<1st of this month + 2 h>)`` — one invoice per
subscription (cycle 1: last month's usage, the minimum-spend top-up, this month's platform fee) — in ``--shards``
child processes started together (default: one per CPU, as ``INVOICE_CLOSE_SHARDS`` workers share a close; each a
fresh interpreter: its peak RSS is Django's ~87 MiB plus the close's; ``--shards 1`` is one process), with every
SQL statement counted (``connection.execute_wrapper``: statements sent through Django cursors; BEGIN and COMMIT
are not among them). Printed: invoices created, total seconds, invoices/s, peak RSS of the child (``VmHWM``),
queries per invoice (total and per kind of statement, with its share of the time spent in SQL), the CPU split, and
a digest of the stored month-end invoices and lines (numbers, quantities, amounts, descriptions, tiers) — equal digests
mean equal invoices, so a change to the close can be checked against an earlier run. ``--runs N`` closes N times (the
month-end close is reset in between) and details the median run.

``--dimensional-rows 20`` replaces the usage rate cards by ONE dimensional rate card (feature ``llm-tokens``, the
whole meter) priced by a table of 20 rows keyed by model and type (a row per model × type of the events, one of
them graduated, the rest for models without traffic; free quantity and a minimum spend over the table): every
invoice then has a line per row with usage.

To check that queries per invoice are constant, run it at two plan sizes (``--rate-cards 3`` and ``6``) and two
customer counts (``--customers 1000`` and ``10000``) and compare the ``queries per invoice`` lines.
``--py-spy FILE`` records the child with py-spy (speedscope JSON).

Exit status: 1 on errors (a failed close, a wrong invoice count), 0 otherwise, whether or not targets are met.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import re
import resource
import subprocess
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import harness
import psycopg
from harness import EVENT_TYPE, MODELS, ROOT, TX_ROWS, log

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5433/bench_close"
INSERT_ROWS = 500_000  # rows per INSERT … SELECT statement
SEED_BATCH = 500  # customers per seeding transaction
MAX_RATE_CARDS = 2 + 2 * len(MODELS)
META_TABLE = "bench_close_meta"
TARGETS = {"seconds_10k": 60.0, "rss_mib": 300.0}


# --------------------------------------------------------------------------------------------------
# Database
# --------------------------------------------------------------------------------------------------

def seeded_meta(url: str) -> dict | None:
    """What an existing database was seeded with (None when it was not, or not completely)."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            row = conn.execute(f"SELECT meta FROM {META_TABLE}").fetchone()  # noqa: S608
        except psycopg.errors.UndefinedTable:
            return None
    return row[0] if row else None


def save_meta(url: str, meta: dict) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (meta jsonb NOT NULL)")
        conn.execute(f"DELETE FROM {META_TABLE}")  # noqa: S608
        conn.execute(f"INSERT INTO {META_TABLE} (meta) VALUES (%s)", [json.dumps(meta)])  # noqa: S608


def vacuum_analyze(url: str) -> float:
    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.monotonic() - started


def reset_month_end_close(url: str) -> int:
    """Forget the month-end close (cycles ≥ 1) so it can run again: its invoices with their lines and log, its
    close rows, and the numbers it took (numbers are gapless, so the sequence goes back to the count left)."""
    with psycopg.connect(url) as conn, conn.transaction():
        doomed = "SELECT id FROM invoicing_invoice WHERE cycle >= 1"
        conn.execute(f"DELETE FROM invoicing_invoiceevent WHERE invoice_id IN ({doomed})")  # noqa: S608
        conn.execute(f"DELETE FROM credits_ledgerentry WHERE invoice_id IN ({doomed})")  # noqa: S608
        conn.execute(f"DELETE FROM invoicing_invoiceline WHERE invoice_id IN ({doomed})")  # noqa: S608
        conn.execute("DELETE FROM invoicing_cycleclose WHERE cycle >= 1")
        deleted = conn.execute("DELETE FROM invoicing_invoice WHERE cycle >= 1").rowcount
        conn.execute(
            "UPDATE invoicing_invoicenumbersequence s SET last_number = (SELECT count(*) FROM invoicing_invoice i "
            "WHERE i.number LIKE s.prefix || '-' || s.year || '-%%')")
    return deleted


# --------------------------------------------------------------------------------------------------
# Seeding
# --------------------------------------------------------------------------------------------------

def subject_of(index: int) -> str:
    """The Kong subject of customer ``index`` (the same as the SQL of :func:`insert_events_sql`)."""
    h = hashlib.md5(f"bench-consumer-{index}".encode(), usedforsecurity=False).hexdigest()
    return f"consumer:{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def insert_events_sql() -> str:
    """Rows %(lo)s..%(hi)s: row i belongs to customer (i - 1) mod %(customers)s (event k = (i - 1) div customers
    of it: requests for even k, responses for odd k), at a random time of [%(start)s, %(end)s)."""
    return f"""
    INSERT INTO metering_event (source, event_id, type, subject, time, data, ingested_at, ingest_tx)
    SELECT 'kong-gateway', 'bench-' || r.i, '{EVENT_TYPE}', r.subject, r.t,
           {harness.llm_data_sql(request="r.request", api_request_id="md5(r.i::text)::uuid::text")},
           r.t + random() * interval '5 seconds',
           (r.i - 1) / {TX_ROWS} + 1
    FROM (
        SELECT g.i,
               'consumer:' || md5('bench-consumer-' || ((g.i - 1) %% %(customers)s))::uuid::text AS subject,
               mod((g.i - 1) / %(customers)s, 2) = 0 AS request,
               %(start)s::timestamptz + random() * (%(end)s::timestamptz - %(start)s::timestamptz) AS t,
               1 + floor(random() * {len(MODELS)})::int AS model
        FROM generate_series(%(lo)s::bigint, %(hi)s::bigint) AS g(i)
    ) AS r
    """


def load_events(url: str, *, customers: int, per_customer: int, start: dt.datetime, end: dt.datetime) -> int:
    total = customers * per_customer
    harness.bulk_insert(url, "metering_event", ranges=harness.row_ranges(1, total, INSERT_ROWS),
                        statement=insert_events_sql(),
                params=lambda lo, hi: {"lo": lo, "hi": hi, "customers": customers, "start": start, "end": end},
                rebuild_indexes=False)
    return total


def dimensional_card(rows: int):
    """One rate card on the whole meter priced by a table of ``rows`` rows keyed by model and type: a row per
    model × type of the events (one graduated), the rest for models without traffic; free quantity and a minimum
    spend over the whole table."""
    from catalog.services.plans import PriceRowSpec, RateCardSpec, TierSpec

    specs = []
    for i, (model, kind) in enumerate((model, kind) for model, _ in MODELS for kind in ("request", "response")):
        if i == 1:
            specs.append(PriceRowSpec(match={"model": model, "type": kind}, price_type="graduated",
                                      tiers=[TierSpec(Decimal(1_000_000), Decimal("0.00001")),
                                             TierSpec(None, Decimal("0.000008"), Decimal("2.00"))]))
        else:
            specs.append(PriceRowSpec(match={"model": model, "type": kind}, price_type="unit",
                                      unit_amount=Decimal("0.000001") * (i + 1)))
    for i in range(rows - len(specs)):
        specs.append(PriceRowSpec(match={"model": f"idle-model-{i}"}, price_type="unit",
                                  unit_amount=Decimal("0.000003")))
    return RateCardSpec(key="llm", name="LLM tokens", feature="llm-tokens", price_type="dimensional",
                        dimensions=["model", "type"], rows=specs[:rows], free_quantity=Decimal(1000),
                        minimum_spend=Decimal("5.00"))


def seed_catalog(rate_cards: int, dimensional_rows: int = 0):
    """The meter, the features and the published plan ``token``."""
    from catalog.services.features import feature_create
    from catalog.services.plans import RateCardSpec, TierSpec, plan_create, plan_publish
    from metering.services.meters import meter_create

    meter = meter_create(slug="llm_tokens", name="AI Gateway Tokens", event_type=EVENT_TYPE, aggregation="SUM",
                         value_property="$.tokens",
                         group_by={"model": "$.model", "provider": "$.provider", "type": "$.type"})
    feature_create(key="ai-token", name="ai-token", meter=meter, filters={"provider": "openai", "type": "request"})
    feature_create(key="ai-token-out", name="ai-token-out", meter=meter, filters={"type": "response"})
    specs = [
        RateCardSpec(key="ai-token", feature="ai-token", price_type="unit", unit_amount=Decimal("0.00002")),
        RateCardSpec(key="ai-token-out", feature="ai-token-out", price_type="graduated", free_quantity=Decimal(1000),
                     minimum_spend=Decimal("5.00"),
                     tiers=[TierSpec(Decimal(1_000_000), Decimal("0.00001")),
                            TierSpec(None, Decimal("0.000008"), Decimal("2.00"))]),
    ]
    extras = [(model, kind) for kind in ("request", "response") for model, _ in MODELS]
    for model, kind in extras[: rate_cards - 2]:
        key = f"ai-{re.sub(r'[^a-z0-9]+', '-', model)}-{kind[:3]}"
        feature_create(key=key, name=key, meter=meter, filters={"model": model, "type": kind})
        specs.append(RateCardSpec(key=key, feature=key, price_type="unit", unit_amount=Decimal("0.000001")))
    if dimensional_rows:  # the table instead of the usage rate cards
        feature_create(key="llm-tokens", name="LLM tokens", meter=meter)
        specs = [dimensional_card(dimensional_rows)]
    specs += [
        RateCardSpec(key="platform", name="Platform fee", price_type="flat", amount=Decimal("49.00"),
                     payment_term="in_advance"),
        RateCardSpec(key="ai-quota", feature="ai-token", entitlement_type="metered",
                     entitlement_limit=Decimal(500_000)),
    ]
    plan = plan_publish(plan=plan_create(key="token", name="Token", currency="USD", billing_cadence="P1M",
                                         rate_cards=specs))
    return meter, plan


def seed_customers(plan, customers: int, start: dt.datetime, credits: bool = False) -> None:
    from django.db import transaction

    from credits.services.grants import grant_create
    from customers.services.customers import attribution_add, customer_create
    from customers.services.subscriptions import subscription_create

    started = time.monotonic()
    for lo in range(0, customers, SEED_BATCH):
        with transaction.atomic():
            for i in range(lo, min(customers, lo + SEED_BATCH)):
                customer = customer_create(key=f"bench-{i:06d}", name=f"Bench customer {i}", currency="USD")
                attribution_add(customer=customer, subject=subject_of(i), start=start)
                subscription_create(customer=customer, plan=plan, start=start, billing_anchor="calendar")
                if credits:  # two grants each: $60 (priority 10, expiring), $40 (no expiry)
                    grant_create(customer=customer, amount=6000, priority=10, effective_at=start, now=start,
                                 expires_at=start + dt.timedelta(days=120), source="promotional")
                    grant_create(customer=customer, amount=4000, effective_at=start, now=start)
        done = min(customers, lo + SEED_BATCH)
        if done % 5000 == 0 or done == customers:
            log(f"  {done:,} customers ({time.monotonic() - started:.0f} s)")


def seed(args, url: str, month_start: dt.datetime, month_end: dt.datetime) -> None:
    from django.db import connections

    from invoicing.services.close import close_cycles
    from metering.services.rollups import rollups_catch_up

    started = time.monotonic()
    meter, plan = seed_catalog(args.rate_cards, args.dimensional_rows)
    usage_cards = (f"1 dimensional rate card of {args.dimensional_rows} rows" if args.dimensional_rows
                   else f"{args.rate_cards} usage rate cards")
    log(f"  plan {plan.key} v{plan.version}: {plan.rate_cards.count()} rate cards ({usage_cards} on meter "
        f"{meter.slug})")
    seed_customers(plan, args.customers, month_start, credits=args.credits)
    log(f"  customers, subjects and subscriptions in {time.monotonic() - started:.0f} s")

    step = time.monotonic()
    report = close_cycles(now=month_start)
    log(f"  opening close (cycle 0) at {month_start:%Y-%m-%d}: {report.summary()} "
        f"in {time.monotonic() - step:.0f} s")
    if report.errors:
        raise RuntimeError(f"opening close failed: {report.errors[:3]}")

    step = time.monotonic()
    connections.close_all()
    total = load_events(url, customers=args.customers, per_customer=args.events_per_customer, start=month_start,
                        end=month_end)
    log(f"  {total:,} events in {time.monotonic() - step:.0f} s")
    step = time.monotonic()
    folded = rollups_catch_up(meter_id=meter.pk)
    meter.refresh_from_db()
    log(f"  rollups_catch_up folded {folded:,} events in {time.monotonic() - step:.0f} s "
        f"(rollup_low {meter.rollup_low})")
    if folded != total:
        raise RuntimeError(f"the aggregator folded {folded:,} of {total:,} events (a long transaction running?)")
    connections.close_all()
    log(f"  VACUUM ANALYZE in {vacuum_analyze(url):.0f} s; seeded in {time.monotonic() - started:.0f} s")


# --------------------------------------------------------------------------------------------------
# The child: one close_cycles run
# --------------------------------------------------------------------------------------------------

def statement_kind(statement: str) -> str:
    """A short name for a kind of statement: verb and tables (params and literals dropped)."""
    text = re.sub(r"\s+", " ", statement.strip())
    verb = text.split(" ", 1)[0].upper()
    if verb == "WITH" and ("metering_dailyusage" in text or "metering_hourlyusage" in text):
        return "usage query (usage_rows)"
    tables = list(dict.fromkeys(re.findall(r'"?((?:invoicing|customers|catalog|metering|billing_site|'
                                           r'django_celery_beat)_[a-z_]+)"?', text)))
    if verb == "SELECT" and " FOR UPDATE" in text:
        verb = "SELECT … FOR UPDATE"
    if verb in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
        return verb
    return f"{verb} {', '.join(tables[:3])}".strip()


class StatementCounter:
    """``connection.execute_wrapper``: statements and seconds per kind."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self._kinds: dict[str, str] = {}

    def __call__(self, execute, statement, params, many, context):
        started = time.perf_counter()
        try:
            return execute(statement, params, many, context)
        finally:
            kind = self._kinds.get(statement)
            if kind is None:
                kind = self._kinds[statement] = statement_kind(statement)
                if len(self._kinds) > 10_000:
                    self._kinds.clear()
            self.calls[kind] += 1
            self.seconds[kind] += time.perf_counter() - started


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_SOURCES: dict[str, str] = {}  # the source of functions already patched (inspect cannot read it back)


def child_main(args) -> int:
    import django

    django.setup()
    from django.db import connection

    from invoicing.services import close

    now = dt.datetime.fromisoformat(args.now)
    index, count = (int(part) for part in args.shard.split("/"))
    counter = StatementCounter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started_at = time.time()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        report = close.close_cycles(now=now, chunk_size=args.chunk_size, shard=close.Shard(index, count))
    elapsed = time.perf_counter() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "seconds": elapsed,
        "started_at": started_at,
        "ended_at": started_at + elapsed,
        "invoices": report.invoices,
        "cycles": report.cycles,
        "subscriptions": report.subscriptions,
        "empty": report.empty,
        "skipped": report.skipped,
        "errors": report.errors[:5],
        "error_count": len(report.errors),
        "summary": report.summary(),
        "rss_mib": peak_rss_mib(),
        "cpu_s": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "calls": dict(counter.calls),
        "statement_seconds": dict(counter.seconds),
    }
    connection.close()
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# Load on the machine (another benchmark may run meanwhile)
# --------------------------------------------------------------------------------------------------

def busy_percent(busy0: float, total0: float) -> float:
    busy, total = harness.machine_cpu_times()
    return 100 * (os.cpu_count() or 1) * (busy - busy0) / max(total - total0, 1e-9)


def wait_until_quiet(max_wait: float, threshold: float = 25) -> None:
    deadline = time.monotonic() + max_wait
    while True:
        busy0, total0 = harness.machine_cpu_times()
        time.sleep(1)
        busy = busy_percent(busy0, total0)
        if busy < threshold or time.monotonic() >= deadline:
            if busy >= threshold:
                log(f"  (machine still {busy:.0f}% busy after waiting {max_wait:.0f} s: figures may suffer)")
            return


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------

def run_children(args, now: dt.datetime) -> dict:
    """``--shards`` children, started together, each closing its shard; their figures summed (peak RSS: the
    largest child's; seconds: from the first child's start of ``close_cycles`` to the last one's end)."""
    processes = []
    for index in range(args.shards):
        command = [sys.executable, str(Path(__file__).resolve()), "--child", "--now", now.isoformat(),
                   "--database-url", args.database_url, "--shard", f"{index}/{args.shards}"]
        if args.chunk_size:
            command += ["--chunk-size", str(args.chunk_size)]
        if args.py_spy and index == 0:
            py_spy = Path(sys.executable).with_name("py-spy")
            command = [str(py_spy), "record", "--format", "speedscope", "--rate", "100", "-o", args.py_spy, "--",
                       *command]
        processes.append(subprocess.Popen(command, env=os.environ.copy(), cwd=ROOT, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        stdout, stderr = process.communicate()
        result = next((json.loads(line[len("RESULT "):]) for line in stdout.splitlines()
                       if line.startswith("RESULT ")), None)
        if result is None:
            raise RuntimeError(f"a close child failed (exit {process.returncode}): {stderr[-3000:]}")
        results.append(result)
    merged = dict(results[0])
    merged["seconds"] = max(r["ended_at"] for r in results) - min(r["started_at"] for r in results)
    for key in ("invoices", "cycles", "subscriptions", "empty", "skipped", "error_count", "cpu_s"):
        merged[key] = sum(r[key] for r in results)
    merged["errors"] = [error for r in results for error in r["errors"]][:5]
    merged["rss_mib"] = max(r["rss_mib"] for r in results)
    merged["summary"] = " | ".join(r["summary"] for r in results)
    for key in ("calls", "statement_seconds"):
        merged[key] = {}
        for r in results:
            for kind, value in r[key].items():
                merged[key][kind] = merged[key].get(kind, 0) + value
    merged["children_maxrss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--events-per-customer", type=int, default=100)
    parser.add_argument("--rate-cards", type=int, default=2,
                        help=f"usage rate cards on the llm_tokens meter (2..{MAX_RATE_CARDS}); the plan also has a "
                             "platform fee and a metered entitlement")
    parser.add_argument("--dimensional-rows", type=int, default=0,
                        help="instead of the usage rate cards, one dimensional rate card (model × type) with this "
                             f"many rows ({2 * len(MODELS)}..200; e.g. 20)")
    parser.add_argument("--credits", action="store_true",
                        help="give every customer two prepaid credit grants (the close applies them)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--keep", action="store_true",
                        help="keep the database, and reuse one seeded with the same sizes (the month-end close is "
                             "reset with SQL)")
    parser.add_argument("--chunk-size", type=int, default=None, help="close_cycles chunk_size (default: settings)")
    parser.add_argument("--py-spy", metavar="FILE", help="record the close child with py-spy (speedscope JSON)")
    parser.add_argument("--runs", type=int, default=1, help="closes (the month-end close is reset between them)")
    parser.add_argument("--top", type=int, default=14, help="kinds of statements listed")
    parser.add_argument("--quiet-wait", type=float, default=60, metavar="SECONDS",
                        help="before the close wait up to this long for other load to drop below 25%% of a core")
    parser.add_argument("--shards", type=int, default=os.cpu_count() or 1,
                        help="close processes sharing the close, as INVOICE_CLOSE_SHARDS workers do (default: CPUs)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    parser.add_argument("--now", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    harness.check_database_name(args.database_url, example="bench_close",
                                refuse_prefixes=("bench_ingest", "bench_usage", "bench_entitlements"))

    harness.use_project_in_process(args.database_url)
    os.environ.pop("STRIPE_API_KEY", None)  # sandbox: issued invoices are not pushed anywhere
    if args.child:
        return child_main(args)
    if not 2 <= args.rate_cards <= MAX_RATE_CARDS or args.customers < 1 or args.events_per_customer < 1:
        parser.error(f"need 2 <= --rate-cards <= {MAX_RATE_CARDS}, --customers >= 1, --events-per-customer >= 1")
    if not 1 <= args.shards <= 64:
        parser.error("need 1 <= --shards <= 64")
    if args.dimensional_rows and not 2 * len(MODELS) <= args.dimensional_rows <= 200:
        parser.error(f"need {2 * len(MODELS)} <= --dimensional-rows <= 200")

    today = dt.datetime.now(dt.UTC)
    this_month = today.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    month_start = (this_month - dt.timedelta(days=1)).replace(day=1)
    close_at = this_month + dt.timedelta(hours=2)
    meta = {"customers": args.customers, "events_per_customer": args.events_per_customer,
            "rate_cards": args.rate_cards, "month": month_start.isoformat(), "credits": args.credits}
    if args.dimensional_rows:
        meta["dimensional_rows"] = args.dimensional_rows

    errors: list[str] = []
    results: list[dict] = []
    created = False
    try:
        reuse = False
        if args.keep and harness.database_exists(args.database_url):
            reuse = seeded_meta(args.database_url) == meta
            log(f"database {harness.database_name(args.database_url)} exists: "
                + ("seeded with the same sizes, reusing it" if reuse else "re-creating it"))
        if not reuse:
            log(f"database: re-creating {harness.database_name(args.database_url)} and migrating")
            harness.recreate_database(args.database_url)
            created = True

        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connections

        if reuse:
            deleted = reset_month_end_close(args.database_url)
            log(f"  reset the month-end close: {deleted:,} invoices deleted; VACUUM ANALYZE in "
                f"{vacuum_analyze(args.database_url):.0f} s")
        else:
            call_command("migrate", "--no-input", verbosity=0)
            log(f"seeding {args.customers:,} customers, {args.events_per_customer} events each over "
                f"{month_start:%Y-%m-%d} .. {this_month:%Y-%m-%d}, {args.rate_cards} usage rate cards …")
            seed(args, args.database_url, month_start, this_month)
            save_meta(args.database_url, meta)
        connections.close_all()

        for run in range(args.runs):
            if run:
                deleted = reset_month_end_close(args.database_url)
                log(f"  reset the month-end close: {deleted:,} invoices deleted; VACUUM ANALYZE in "
                    f"{vacuum_analyze(args.database_url):.0f} s")
            wait_until_quiet(args.quiet_wait)
            log(f"closing{f' (run {run + 1} of {args.runs})' if args.runs > 1 else ''}: "
                f"close_cycles(now={close_at.isoformat()}) in {args.shards} child process(es), a shard each …")
            busy0, total0 = harness.machine_cpu_times()
            result = run_children(args, close_at)
            result["busy"] = busy_percent(busy0, total0)
            log(f"  {result['summary']}")
            log(f"  {result['seconds']:.1f} s, {result['invoices'] / result['seconds']:,.1f} invoices/s, peak RSS "
                f"{result['rss_mib']:.0f} MiB, {sum(result['calls'].values()) / max(result['invoices'], 1):.2f} "
                f"queries per invoice (machine busy {result['busy']:.0f}%)")
            if result["error_count"]:
                errors.append(f"{result['error_count']} cycles failed, e.g. {result['errors'][:2]}")
            if result["invoices"] != args.customers:
                errors.append(f"{result['invoices']:,} invoices for {args.customers:,} subscriptions")
            with psycopg.connect(args.database_url) as conn:
                issued, lines, total, digest = harness.one_row(
                    conn,
                    "SELECT count(DISTINCT i.id), count(*), COALESCE(sum(l.amount), 0), md5(string_agg(concat_ws("
                    "':', i.subscription_id, i.number, i.total, l.position, l.kind, l.rate_card_key, l.quantity, "
                    "l.unit_price, l.amount, l.description, l.tiers::text), ',' ORDER BY i.subscription_id, "
                    "l.position)) FROM invoicing_invoice i JOIN invoicing_invoiceline l ON l.invoice_id = i.id "
                    "WHERE i.cycle = 1 AND i.status = 'issued'")
            log(f"  stored: {issued:,} issued month-end invoices, {lines:,} lines, total ${total / 100:,.2f}, "
                f"digest {digest}")
            results.append(result)
    except (RuntimeError, psycopg.Error, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        harness.drop_unless_kept(args.database_url, keep=args.keep, created=created, errors=errors)

    log("")
    log(f"summary: {args.customers:,} customers, {args.events_per_customer} events each, {args.rate_cards} usage "
        f"rate cards (+ platform fee, metered entitlement), {os.cpu_count()} cores, closed by {args.shards} "
        f"shard process(es)")
    if results:
        result = sorted(results, key=lambda r: r["seconds"])[(len(results) - 1) // 2]
        if len(results) > 1:
            times = ", ".join(f"{r['seconds']:.1f}" for r in results)
            log(f"  runs                  {times} s: the median run below")
        invoices, seconds = result["invoices"], result["seconds"]
        queries = sum(result["calls"].values())
        per_invoice = queries / max(invoices, 1)
        scaled = seconds * 10_000 / max(invoices, 1)
        mark = "MET " if scaled <= TARGETS["seconds_10k"] else "MISS"
        rss_mark = "MET " if result["rss_mib"] <= TARGETS["rss_mib"] else "MISS"
        log(f"  invoices created      {invoices:,}")
        log(f"  total                 {seconds:.1f} s   {mark} (≤ {TARGETS['seconds_10k']:.0f} s for 10,000; "
            f"{scaled:.1f} s per 10,000 at this rate)")
        log(f"  rate                  {invoices / seconds:,.1f} invoices/s")
        log(f"  peak RSS (child)      {result['rss_mib']:.1f} MiB   {rss_mark} (≤ {TARGETS['rss_mib']:.0f} MiB; "
            f"getrusage children {result['children_maxrss_mib']:.1f} MiB, which counts the parent's image "
            "forked before exec)")
        log(f"  queries per invoice   {per_invoice:.2f}   ({queries:,} statements)")
        db_seconds = sum(result["statement_seconds"].values())
        log(f"  time split            Python CPU {result['cpu_s']:.1f} s, waiting on SQL {db_seconds:.1f} s, summed "
            f"over the shards (machine busy {result['busy']:.0f}% of {(os.cpu_count() or 1) * 100}% during the close)")
        if args.top:
            log("  statements (per invoice, count, share of SQL time, kind):")
        for kind, calls in sorted(result["calls"].items(), key=lambda kv: -kv[1])[: args.top]:
            share = 100 * result["statement_seconds"][kind] / max(db_seconds, 1e-9)
            log(f"    {calls / max(invoices, 1):6.2f} {calls:8,}  {share:4.1f}%  {kind}")
    return harness.exit_status(errors)


if __name__ == "__main__":
    sys.exit(main())
