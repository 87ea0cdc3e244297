"""Project-wide pytest setup: hypothesis profiles, database-vendor markers, and what parallel runs (pytest-xdist)
need: one Redis database per worker (each worker also gets its own test database from pytest-django:
test_<name>_gw0, ...), and the slow tests first."""

import fcntl
import gc
import os
import re
import sqlite3
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
# CI: reproducible examples, still enough to find boundary bugs (derandomize also turns the example database off).
settings.register_profile(
    "ci", max_examples=150, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))

def xdist_worker_number() -> int | None:
    """0 for gw0, 1 for gw1, ...; None outside an xdist worker."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker.removeprefix("gw")) if worker.startswith("gw") else None


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than CPUs. A good part of the suite's wall time is spent waiting (subprocesses
    starting, a browser, HTTP fakes holding answers for timeouts), which the extra worker fills."""
    return (os.cpu_count() or 1) + 1


def redis_url_for_worker(url: str, worker: int) -> str:
    """The Redis URL with the database index moved by the worker's number (gw0 keeps it, gw1 takes the next one,
    modulo Redis's 16 databases), so parallel workers never share keys, queues or results."""
    match = re.match(r"^(?P<base>rediss?://[^/?#]*)(?:/(?P<db>\d*))?(?P<rest>[?#].*)?$", url)
    if not match:
        return url
    db = (int(match.group("db") or 0) + worker) % 16
    return f"{match.group('base')}/{db}{match.group('rest') or ''}"


def pytest_configure(config):
    worker = xdist_worker_number()
    url = os.environ.get("REDIS_URL")
    if worker is None or not url:
        return
    from django.conf import settings as django_settings

    from billing_site.celery import app

    isolated = redis_url_for_worker(url, worker)
    os.environ["REDIS_URL"] = isolated  # processes the tests start (a real Celery worker) inherit it
    django_settings.REDIS_URL = isolated
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        if getattr(django_settings, name, None) == url:
            setattr(django_settings, name, isolated)
    cache = django_settings.CACHES["default"]
    if cache.get("LOCATION") == url:
        django_settings.CACHES = {**django_settings.CACHES, "default": {**cache, "LOCATION": isolated}}
    app.conf.update(broker_url=django_settings.CELERY_BROKER_URL, result_backend=django_settings.CELERY_RESULT_BACKEND)


def database_use(item) -> str:
    """"db", "transactional" or "none", as pytest-django tells them apart when it orders the tests."""
    marker = item.get_closest_marker("django_db")
    fixtures = getattr(item, "fixturenames", ())
    transactional = marker is not None and bool(
        marker.kwargs.get("transaction") or marker.kwargs.get("reset_sequences") or marker.args[:1] == (True,))
    if transactional or "transactional_db" in fixtures or "live_server" in fixtures:
        return "transactional"
    return "db" if marker is not None or "db" in fixtures else "none"


# Under xdist (--dist loadgroup hands the tests out one by one, in this order), the slow tests start first within
# each kind. Per worker the kinds keep pytest-django's order: tests in a rolled-back transaction before
# transactional ones, whose flush empties what the migrations seeded (the beat entries). Tests without a database
# may run anywhere, so the slow ones start the run. worksteal would not keep the order (a worker steals earlier
# tests after running later ones).
RUN_ORDER = {("none", True): 0, ("db", True): 1, ("db", False): 2, ("transactional", True): 3,
             ("transactional", False): 4, ("none", False): 5}


def pytest_collection_finish(session):
    """What collection loaded (Django, every test module, hypothesis) lives until the run ends: kept out of the
    garbage collector's full passes, which otherwise walk it again and again (as billing_site.wsgi does for a
    worker)."""
    gc.collect()
    gc.freeze()


def pytest_collection_modifyitems(config, items):
    from django.conf import settings as django_settings

    engine = django_settings.DATABASES["default"]["ENGINE"]
    on_postgres = engine.endswith("postgresql")
    has_redis = bool(os.environ.get("REDIS_URL"))
    for item in items:
        if "postgres" in item.keywords and not on_postgres:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: runs in the CI PostgreSQL pass"))
        if "redis" in item.keywords and not has_redis:
            item.add_marker(pytest.mark.skip(reason="needs Redis: runs in the CI PostgreSQL + Redis pass"))
    if xdist_worker_number() is not None:  # every worker sorts alike: xdist checks they collected the same list
        items.sort(key=lambda item: RUN_ORDER[database_use(item), item.get_closest_marker("slow") is not None])


# Under xdist every worker creates its own test database, and on SQLite (in memory) migrating it is seconds of CPU
# spent alike by each worker (rendering the migrations' model states). The first worker to get there migrates and
# keeps a copy in the run's temporary root; the others copy it (SQLite's backup API) instead of migrating. The
# copy holds all the migrations wrote, post_migrate's rows (content types, permissions, the role groups) included.
@contextmanager
def migrations_shared_between_workers(root: Path):
    from django.core import management
    from django.db import connections

    real_call_command = management.call_command

    def call_command(name, *args, **options):
        database = options.get("database", "default")
        if name != "migrate" or args or connections[database].vendor != "sqlite":
            return real_call_command(name, *args, **options)
        connection = connections[database]
        template = root / f"migrated-test-db-{database}.sqlite3"
        with open(root / f"migrated-test-db-{database}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            connection.ensure_connection()
            if template.exists():
                with closing(sqlite3.connect(template)) as source:
                    source.backup(connection.connection)
                return None
            result = real_call_command(name, *args, **options)
            building = template.with_suffix(".building")
            with closing(sqlite3.connect(building)) as copy:
                connection.connection.backup(copy)
            building.rename(template)
            return result

    management.call_command = call_command  # type: ignore[assignment]  # same call, typed loosely
    try:
        yield
    finally:
        management.call_command = real_call_command


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings, request, tmp_path_factory):
    """pytest-django's (per-worker database names), then, in an xdist worker, migrations shared as above until
    ``django_db_setup`` below has created the test databases."""
    with ExitStack() as sharing:
        if xdist_worker_number() is not None:
            sharing.enter_context(migrations_shared_between_workers(tmp_path_factory.getbasetemp().parent))
        request.config.stash[SHARING_MIGRATIONS] = sharing
        yield


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, request):
    """pytest-django's; the test databases exist: migrate is Django's own again."""
    request.config.stash[SHARING_MIGRATIONS].close()
    yield


SHARING_MIGRATIONS = pytest.StashKey[ExitStack]()
