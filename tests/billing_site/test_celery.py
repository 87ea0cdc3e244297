"""Celery end to end: a real worker process, on the embedded filesystem broker (or Redis in the CI pass)."""

import os
import subprocess
import sys
import uuid

import pytest
from celery import Celery
from celery.result import allow_join_result
from django_celery_beat.models import PeriodicTask

from billing_site.settings.base import BASE_DIR, filesystem_broker_options
from common.jobs import HEARTBEATS_KEPT
from common.models import JobRun
from common.tasks import heartbeat


@pytest.fixture
def worker_env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update({
        "DJANGO_SETTINGS_MODULE": "billing_site.settings.local",
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'worker.sqlite3'}",
    })
    return env


def client_app(tmp_path) -> Celery:
    """A Celery client wired to the same broker and result store as the worker under test. Not the current app:
    shared tasks of the tests that run after this one in the same process must still find the project's app."""
    redis_url = os.environ.get("REDIS_URL")
    if redis_url:
        return Celery("client", broker=redis_url, backend=redis_url, set_as_current=False)
    celery_dir = tmp_path / "var" / "celery"
    results = celery_dir / "results"
    results.mkdir(parents=True, exist_ok=True)
    return Celery(
        "client", broker="filesystem://", backend=f"file://{results}",
        broker_transport_options=filesystem_broker_options(celery_dir), set_as_current=False,
    )


@pytest.mark.slow
def test_task_runs_through_a_real_worker(tmp_path, worker_env):
    queue = f"test-{uuid.uuid4().hex[:8]}"
    app = client_app(tmp_path)  # creates the broker folders before the worker starts
    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "celery", "-A", "billing_site", "worker", "--pool", "solo", "-Q", queue,
         "--loglevel", "INFO", "--without-heartbeat", "--without-mingle", "--without-gossip"],
        cwd=BASE_DIR, env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        result = app.send_task("billing_site.ping", args=["hello from the test"], queue=queue)
        # Celery's guard against a task waiting for another may be left set in this process by an earlier test of
        # this xdist worker (it then refused the wait, order-dependent); this process is no task: waiting is the test.
        with allow_join_result():
            assert result.get(timeout=90) == "hello from the test"
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0]
    assert "billing_site.ping" in output


@pytest.mark.django_db
def test_heartbeat_is_seeded_as_an_editable_beat_entry():
    entry = PeriodicTask.objects.get(name="Heartbeat")
    assert entry.task == "billing_site.heartbeat"
    assert entry.enabled
    assert (entry.interval.every, entry.interval.period) == (60, "seconds")


@pytest.mark.django_db
def test_heartbeat_task_records_a_job_run_and_keeps_only_recent_ones():
    for _ in range(HEARTBEATS_KEPT + 5):
        heartbeat.delay()
    runs = JobRun.objects.filter(kind="heartbeat")
    assert runs.count() == HEARTBEATS_KEPT
    assert runs.values_list("status", flat=True).first() == JobRun.Status.SUCCEEDED
