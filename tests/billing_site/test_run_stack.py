"""`make run`'s command: web, worker and beat together; Ctrl-C stops them all."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from billing_site.settings.base import BASE_DIR
from tests.builders import copy_sqlite

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - not up yet
            value = None
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_stack_serves_admin_and_beat_drives_the_worker(tmp_path, migrated_sqlite):
    port = free_port()
    db_file = copy_sqlite(migrated_sqlite, tmp_path / "stack.sqlite3")
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "REDIS_URL", "DATABASE_URL")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "billing_site.settings.local",
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{db_file}",
        "PORT": str(port),
        "ADMIN_USER": "boss",
        "ADMIN_PASSWORD": "pw-for-the-test",
    })
    with sqlite3.connect(db_file) as db:  # a fast heartbeat so the test need not wait a minute
        db.execute(
            "UPDATE django_celery_beat_intervalschedule SET every = 2 WHERE id = "
            "(SELECT interval_id FROM django_celery_beat_periodictask WHERE name = 'Heartbeat')"
        )
    # The stack's output goes to a file: an undrained pipe fills (64 KiB) and the stack blocks writing its logs.
    log_path = tmp_path / "stack.log"
    log = log_path.open("w")
    stack = subprocess.Popen(  # noqa: S603
        [sys.executable, "manage.py", "run_stack", "--no-demo"], cwd=BASE_DIR, env=env,
        stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        health = wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200,  # noqa: S310
            90, "the web server",
        )
        assert health
        login = urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=5)  # noqa: S310
        assert b'name="username"' in login.read()

        def heartbeats():
            with sqlite3.connect(db_file) as db:
                return db.execute("SELECT count(*) FROM common_jobrun WHERE kind='heartbeat'").fetchone()[0]

        try:
            assert wait_for(heartbeats, 120, "a beat-scheduled heartbeat executed by the worker")
        except AssertionError as timed_out:  # show what the stack said
            raise AssertionError(f"{timed_out}; the stack's output ends:\n{log_path.read_text()[-6000:]}") from None
    finally:
        os.killpg(stack.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        stack.wait(timeout=60)
        log.close()
    output = log_path.read_text()
    assert f"http://localhost:{port}/admin/" in output
    assert "admin user: boss / password: pw-for-the-test" in output
    assert "Stopped web, worker and beat." in output
    assert stack.returncode == 0
