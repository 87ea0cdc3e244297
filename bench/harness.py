"""What every benchmark script here needs: its own PostgreSQL database, log lines, and /proc readings.

The scripts run as ``python bench/<name>.py``, so this module is imported as ``harness`` (bench/ is on
``sys.path`` as the script's directory).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

PROTECTED_DATABASES = ("billing", "postgres", "template0", "template1")
ROOT = Path(__file__).resolve().parent.parent

# Synthetic Kong traffic: what the generated events look like in every benchmark.
EVENT_TABLE = "metering_event"
EVENT_TYPE = "kong.llm_request"
METER_SLUG = "llm_tokens"
DAYS = 30  # generated usage spans this many days
TX_ROWS = 1000  # generated rows per ingest_tx (one ingest batch)
CONTROL_PLANE = "a1b2c3d4-0000-4000-8000-000000000001"
MODELS = (("gpt-4o", "openai"), ("gpt-4o-mini", "openai"), ("claude-3-5-sonnet", "anthropic"),
          ("llama-3.1-70b", "meta"), ("mistral-large", "mistral"))


def log(message: str = "") -> None:
    print(message, flush=True)


def exit_status(errors: list[str]) -> int:
    """Print the run's errors; 1 when there were any (a missed target is not an error)."""
    for error in errors:
        log(f"error: {error}")
    return 1 if errors else 0


def report_footer(errors: list[str]) -> int:
    """The end of a report table: the errors under a rule, then the closing rule; 1 when there were any."""
    print("-" * 100)
    print(f"errors: {len(errors)}" + "".join(f"\n  {e}" for e in errors))
    print("=" * 100)
    return 1 if errors else 0


# --- the benchmark's database -----------------------------------------------------------------------------

def database_name(url: str) -> str:
    return urllib.parse.urlsplit(url).path.lstrip("/")


def maintenance_url(url: str) -> str:
    """The same server's ``postgres`` database, to create and drop the benchmark's own from."""
    return urllib.parse.urlsplit(url)._replace(path="/postgres").geturl()


def check_database_name(url: str, *, example: str, refuse_prefixes: tuple[str, ...] = ()) -> None:
    """Refuse a database the benchmark would drop that is not a benchmark's: the application's, the
    server's own, the test suite's (``test_*``) and ``refuse_prefixes`` (other benchmarks' databases)."""
    name = database_name(url)
    if not name or name in PROTECTED_DATABASES or name.startswith(("test_", *refuse_prefixes)):
        raise SystemExit(f"refusing to use database {name!r}: pick your own, e.g. {example}")


def database_exists(url: str) -> bool:
    with psycopg.connect(maintenance_url(url), autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database_name(url)]).fetchone() is not None


def recreate_database(url: str) -> None:
    name = sql.Identifier(database_name(url))
    with psycopg.connect(maintenance_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def drop_database(url: str) -> None:
    with psycopg.connect(maintenance_url(url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database_name(url))))


def drop_unless_kept(url: str, *, keep: bool, created: bool, errors: list[str]) -> None:
    """At the end of a run: drop the benchmark's database (this process's Django connections closed first)
    unless ``--keep``; a failure is added to ``errors``."""
    if keep or not (created or database_exists(url)):
        return
    with contextlib.suppress(Exception):
        from django.db import connections

        connections.close_all()
    try:
        drop_database(url)
    except psycopg.Error as exc:
        errors.append(f"dropping the database: {exc}")


def one_row(conn: psycopg.Connection[Any], query: str | sql.SQL | sql.Composed,
            params: list[Any] | None = None) -> tuple[Any, ...]:
    """The one row of a query that always answers one (an aggregate, a size)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise RuntimeError(f"no row from {query!r}")
    return row


def table_size(conn: psycopg.Connection[Any], table: str) -> str:
    """The table's size with its indexes, as PostgreSQL prints it."""
    return one_row(conn, "SELECT pg_size_pretty(pg_total_relation_size(%s::regclass))", [table])[0]


def sql_texts(values: tuple[str, ...] | list[str]) -> str:
    """Constant strings as a SQL array literal's items: ``'a', 'b'`` (values are this module's constants)."""
    return ", ".join(f"'{value}'" for value in values)


def llm_data_sql(*, request: str, api_request_id: str = "gen_random_uuid()::text") -> str:
    """SQL of a generated ``kong.llm_request`` event's data, over a row ``r`` whose ``model`` is a 1-based index
    into MODELS: prompt tokens where ``request`` (a SQL condition) holds, completion tokens otherwise."""
    models = sql_texts([m for m, _ in MODELS])
    providers = sql_texts([p for _, p in MODELS])
    return f"""jsonb_build_object(
               'subject_type', 'consumer_id',
               'type', CASE WHEN {request} THEN 'request' ELSE 'response' END,
               'tokens', CASE WHEN {request} THEN 1 + floor(random() * 2000)::int
                              ELSE 1 + floor(random() * 800)::int END,
               'model', (ARRAY[{models}])[r.model],
               'provider', (ARRAY[{providers}])[r.model],
               'api_request_id', {api_request_id},
               'ai_plugin_id', '0f1e2d3c-0000-4000-8000-000000000004',
               'ai_plugin_name', 'ai-proxy',
               'cache_status', '',
               'http_status', 200,
               'control_plane_id', '{CONTROL_PLANE}',
               'service_id', '0f1e2d3c-0000-4000-8000-000000000003',
               'route_id', '0f1e2d3c-0000-4000-8000-000000000002')"""


# --- a PostgreSQL cluster the benchmark may restart -----------------------------------------------------

def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's programs: ``$PG_BIN``, /usr/lib/postgresql/<version>/bin, or the
    directory of ``pg_ctl`` on the PATH."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()])
    if versions:
        return versions[-1]
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise RuntimeError("no PostgreSQL programs found (install postgresql, or set PG_BIN to the directory of pg_ctl)")


class PostgresCluster:
    """A PostgreSQL cluster that a benchmark stops and restarts, never the one others use.

    :meth:`throwaway` initialises a cluster in a temporary directory and starts it on a free loopback port
    (as root, the server runs as the ``postgres`` OS user, as ``.ci/run`` does; initdb refuses root);
    :meth:`cleanup` stops it and removes the directory. :meth:`existing` wraps a cluster the operator owns
    (its ``pg_ctl`` and data directory): restarted, never initialised, stopped or removed.
    """

    def __init__(self, *, pg_ctl: Path, pgdata: Path, port: int, log_path: Path, os_user: str | None,
                 tmp: Path | None = None) -> None:
        self.pg_ctl = pg_ctl
        self.pgdata = pgdata
        self.port = port
        self.log_path = log_path
        self.os_user = os_user
        self.tmp = tmp  # set: this object created the cluster and removes it

    @classmethod
    def throwaway(cls, *, settings: dict[str, str] | None = None, tmp_prefix: str = "bench_pg_") -> PostgresCluster:
        """initdb (trust authentication, superuser ``postgres``) and start; ``settings`` are extra postgresql.conf
        lines (values as written there: strings quoted). The server keeps PostgreSQL's durable defaults (fsync,
        synchronous_commit) unless ``settings`` say otherwise."""
        bin_dir = postgres_bin_dir()
        os_user = None
        if os.geteuid() == 0:
            os_user = "postgres"
            if subprocess.run(["id", "-u", os_user], capture_output=True, check=False).returncode != 0:
                raise RuntimeError("running as root, the throwaway cluster runs as the OS user 'postgres', "
                                   "which does not exist (create it, or run as an ordinary user)")
        tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix))
        tmp.chmod(0o755)
        (tmp / "data").mkdir()
        (tmp / "sock").mkdir()
        if os_user:
            shutil.chown(tmp / "data", os_user)
            shutil.chown(tmp / "sock", os_user)
            shutil.chown(tmp, os_user)
        port = free_port()
        cluster = cls(pg_ctl=bin_dir / "pg_ctl", pgdata=tmp / "data", port=port, log_path=tmp / "postgres.log",
                      os_user=os_user, tmp=tmp)
        try:
            cluster._run([str(bin_dir / "initdb"), "-D", str(cluster.pgdata), "-U", "postgres", "-A", "trust",
                          "--no-sync", "-E", "UTF8", "--locale", "C"], timeout=300)
            options = {"listen_addresses": "'127.0.0.1'", "port": str(port),
                       "unix_socket_directories": f"'{tmp / 'sock'}'", "max_connections": "100",
                       **(settings or {})}
            # In postgresql.conf rather than on pg_ctl's command line, so that a plain start after a stop
            # (an outage) brings back the same server.
            with (cluster.pgdata / "postgresql.conf").open("a") as conf:
                conf.write("\n# bench/harness.py PostgresCluster.throwaway\n")
                conf.writelines(f"{key} = {value}\n" for key, value in options.items())
            cluster.start()
        except BaseException:
            cluster.cleanup()
            raise
        return cluster

    @classmethod
    def existing(cls, *, pg_ctl: str, pgdata: str, port: int, os_user: str | None = None,
                 log_path: str | None = None) -> PostgresCluster:
        """The operator's cluster: ``pg_ctl -D pgdata`` (run as ``os_user`` through runuser when given) restarts
        it; its server output after a restart goes to ``log_path`` (default ``<pgdata>/pg_ctl-bench.log``)."""
        data = Path(pgdata)
        if not (data / "postgresql.conf").exists() and not (data / "PG_VERSION").exists():
            raise RuntimeError(f"{pgdata} is not a PostgreSQL data directory")
        return cls(pg_ctl=Path(pg_ctl), pgdata=data, port=port, os_user=os_user,
                   log_path=Path(log_path) if log_path else data / "pg_ctl-bench.log")

    def url(self, database: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, command: list[str], timeout: float = 120) -> str:
        if self.os_user and self.os_user != _current_user():
            command = ["runuser", "-u", self.os_user, "--", *command]
        # stdin/stdout/stderr of the server started by pg_ctl are the log file (-l): nothing of ours is inherited.
        result = subprocess.run(command, cwd=self.tmp or self.pgdata, capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
                               f"\n{self.log_tail()}")
        return result.stdout

    def _pg_ctl(self, action: str, *args: str, timeout: float = 120) -> str:
        return self._run([str(self.pg_ctl), "-D", str(self.pgdata), "-l", str(self.log_path), "-w",
                          "-t", str(int(timeout)), action, *args], timeout=timeout + 10)

    def restart(self, mode: str) -> float:
        """``pg_ctl restart -m mode`` (fast: roll back and disconnect; immediate: no shutdown checkpoint, crash
        recovery at start), waiting until the server accepts connections again; returns the seconds it took."""
        started = time.monotonic()
        self._pg_ctl("restart", "-m", mode)
        return time.monotonic() - started

    def start(self) -> float:
        started = time.monotonic()
        self._pg_ctl("start")
        return time.monotonic() - started

    def stop(self, mode: str = "fast") -> float:
        started = time.monotonic()
        self._pg_ctl("stop", "-m", mode)
        return time.monotonic() - started

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cleanup(self, *, keep: bool = False) -> None:
        """A throwaway cluster: stop it, and remove its directory unless ``keep``. An operator's: nothing."""
        if self.tmp is None:
            return
        if self.postmaster_pid():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("fast")
        if not keep:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


# --- the project's code, in this process or as manage.py ------------------------------------------------

def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """This process's environment with the project's local settings on ``database_url``, DEBUG off."""
    env = dict(os.environ)
    env.update({"DJANGO_SETTINGS_MODULE": "billing_site.settings.local", "DATABASE_URL": database_url,
                "DEBUG": "false", **extra})
    return env


def use_project_in_process(database_url: str) -> None:
    """Before ``django.setup()``: the project's settings on ``database_url``; what services queue (a meter's
    rebuild) stays in this process's in-memory broker."""
    os.environ.update(server_env(database_url, CELERY_BROKER_URL="memory://",
                                 CELERY_RESULT_BACKEND="cache+memory://"))
    sys.path.insert(0, str(ROOT))


def manage(env: dict[str, str], *args: str) -> str:
    """``manage.py args`` in a child process; its output, or RuntimeError with the output."""
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed ({result.returncode}):\n"
                           f"{result.stdout}\n{result.stderr}")
    return result.stdout


# --- processes and the machine --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """User + system CPU of a process so far, in clock ticks (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(c) for c in task.read_text().split())
    return found


def pid_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets a process has open (``socket:[inode]`` in /proc/<pid>/fd)."""
    inodes: set[int] = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def established_inodes(local_port: int) -> set[int]:
    """Inodes of the ESTABLISHED TCP connections whose local port is ``local_port`` (on a server: the
    connections it accepted), from /proc/net/tcp and tcp6."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == local_port:
                    inodes.add(int(fields[9]))
    return inodes


def machine_cpu_times() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [float(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


# --- the server under test ------------------------------------------------------------------------------


def add_load_arguments(parser: argparse.ArgumentParser, *, clients_help: str,
                       worker_class_help: str = "gunicorn worker class (production's: gthread)") -> None:
    """The options of a run against the gunicorn under test: ``--clients`` concurrent clients (4), and the server
    as production runs it unless told otherwise: ``--workers`` (2) of ``--worker-class`` (gthread), each with
    ``--threads`` (4)."""
    parser.add_argument("--clients", type=int, default=4, help=clients_help)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-class", default="gthread", help=worker_class_help)
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker (gthread)")


class GunicornServer:
    """``gunicorn billing_site.wsgi`` on a free loopback port, with ``options`` after the bind address;
    its error log in a temporary directory. ``wait_ready`` waits for ``/healthz`` and every worker."""

    def __init__(self, *, env: dict[str, str], workers: int, options: list[str], app: str = "billing_site.wsgi",
                 tmp_prefix: str = "bench_", stop_timeout: float = 30, port: int | None = None,
                 keep_output: bool = False) -> None:
        """``port``: bind this one (a restart on the same address; pass ``--reuse-port`` in ``options`` when
        workers of a killed master may still hold it); ``keep_output``: the processes' stdout and stderr
        (Django's log, tracebacks) go to ``output.log`` beside the error log instead of /dev/null."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.stop_timeout = stop_timeout
        self.tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix))
        self.log_path = self.tmp / "gunicorn.log"
        self.output_path = self.tmp / "output.log" if keep_output else None
        self.command = [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{self.port}",
                        "--workers", str(workers), *options, "--error-logfile", str(self.log_path)]
        with self.output_path.open("ab") if self.output_path else contextlib.nullcontext() as output:
            # the child keeps its own descriptor of the file
            self.process = subprocess.Popen(self.command, cwd=ROOT, env=env,
                                            stdout=output if output else subprocess.DEVNULL,
                                            stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                last = f"HTTP {response.status}: {response.read()[:300]!r}"
                conn.close()
                if response.status == 200 and len(children_of(self.process.pid)) >= self.workers:
                    return
            except OSError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn not ready after {timeout:.0f} s ({last}):\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        return children_of(self.process.pid)

    def busy_workers(self) -> list[int]:
        """The workers holding an accepted client connection: handling a request right now."""
        return [pid for pid in self.worker_pids() if socket_inodes(pid) & established_inodes(self.port)]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def output_tail(self, lines: int = 30) -> str:
        """The end of the processes' own output (with ``keep_output``)."""
        try:
            return "\n".join(self.output_path.read_text(errors="replace").splitlines()[-lines:]) \
                if self.output_path else ""
        except OSError:
            return ""

    def kill(self) -> list[int]:
        """``kill -9`` of the master (reaped here); returns its workers, now orphans: they serve what they
        accepted and exit once they notice their parent is gone."""
        workers = self.worker_pids()
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        return workers

    def stop_process(self) -> None:
        """Stop gunicorn, keeping its logs (``stop`` removes them)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # graceful: workers finish their request
            try:
                self.process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        self.stop_process()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- loading millions of events server-side -------------------------------------------------------------

def bulk_insert(url: str, table: str, *, ranges: list[tuple[int, int]], statement: str,
                params: Callable[[int, int], dict], rebuild_indexes: bool = True) -> dict[str, float]:
    """Run ``statement`` (an ``INSERT … SELECT … FROM generate_series``) once per ``(lo, hi)`` range with
    ``params(lo, hi)``, alternating ranges between 2 parallel sessions.

    With ``rebuild_indexes`` the table's unique constraints and secondary indexes are dropped first and
    rebuilt afterwards (same names and definitions, 2 sessions), also when the insert fails, so the table
    keeps its definition. Returns the seconds spent: ``insert_s`` and ``index_s``.
    """
    identifier = sql.Identifier(table)
    failures: list[str] = []
    timings: dict[str, float] = {}

    def in_parallel(target: Callable[[Any], None], jobs: list[Any]) -> None:
        for thread in start_threads(target, jobs):
            thread.join()

    def insert(job: list[tuple[int, int]]) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as c:
                c.execute("SET synchronous_commit = off")
                for lo, hi in job:
                    c.execute(statement, params(lo, hi))
        except psycopg.Error as exc:
            failures.append(f"insert: {exc}")

    def build(job: list) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as c:
                c.execute("SET maintenance_work_mem = '512MB'")
                for ddl in job:
                    c.execute(ddl)
        except psycopg.Error as exc:
            failures.append(f"index rebuild: {exc}")

    with psycopg.connect(url, autocommit=True) as conn:
        builds: list = []
        if rebuild_indexes:
            constraints = conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'u'", [table]).fetchall()
            indexes = conn.execute(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = %s AND NOT EXISTS "
                "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.conrelid = %s::regclass)",
                [table, table]).fetchall()
            builds = [sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(identifier, sql.Identifier(name),
                                                                             sql.SQL(ddl))
                      for name, ddl in constraints] + [sql.SQL(ddl) for _, ddl in indexes]
            for name, _ in constraints:
                conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(identifier, sql.Identifier(name)))
            for name, _ in indexes:
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        started = time.monotonic()
        try:
            in_parallel(insert, [ranges[0::2], ranges[1::2]])
            timings["insert_s"] = time.monotonic() - started
        finally:
            started = time.monotonic()
            if builds:
                in_parallel(build, [builds[0::2], builds[1::2]])
            timings["index_s"] = time.monotonic() - started
    if failures:
        raise RuntimeError("loading failed: " + "; ".join(failures))
    return timings


def start_threads(target: Callable[[Any], None], args: list[Any], *, daemon: bool = False) -> list[threading.Thread]:
    """One started thread per item of ``args``, running ``target(item)``."""
    threads = [threading.Thread(target=target, args=(arg,), daemon=daemon) for arg in args]
    for thread in threads:
        thread.start()
    return threads


def row_ranges(first: int, last: int, step: int) -> list[tuple[int, int]]:
    """``[first, last]`` cut into inclusive ranges of at most ``step`` rows."""
    return [(lo, min(last, lo + step - 1)) for lo in range(first, last + 1, step)]
