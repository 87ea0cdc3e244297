"""The WSGI/ASGI entry points and the Celery app default to the production settings; development goes through
manage.py, and run_stack hands its own settings to the processes it starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.conf import settings

from billing_site.settings.base import BASE_DIR
from common.management.commands import run_stack

pytestmark = pytest.mark.slow  # Python subprocesses, gunicorn

SECRETS = ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "DEBUG")
SAFE_KEY = "x7Qk2-very-long-random-production-secret-key-9fJ3mZ0pL5vB8nC1rT6yU4eW2qA"


def bare_env(**extra: str) -> dict[str, str]:
    """This environment without any settings module or production secret."""
    return {**{k: v for k, v in os.environ.items() if k not in SECRETS}, **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("module", ["billing_site.wsgi", "billing_site.asgi"])
def test_the_entry_points_default_to_production_and_refuse_without_secrets(module):
    result = python(f"import {module}", bare_env())
    assert result.returncode != 0
    assert "Production settings need these environment variables: SECRET_KEY, ALLOWED_HOSTS, DATABASE_URL" in (
        result.stderr)


def test_the_celery_app_defaults_to_production():
    result = python("import os, billing_site; print(os.environ['DJANGO_SETTINGS_MODULE'])", bare_env())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "billing_site.settings.production"


def test_manage_py_keeps_the_development_settings(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", "from django.conf import settings as s; print(s.SETTINGS_MODULE)"],
        cwd=BASE_DIR, env=bare_env(VAR_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path}/d.sqlite3"),
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "billing_site.settings.local"


def run_gunicorn(env: dict[str, str], port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "billing_site.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        process.terminate()
    try:
        return process.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]


def test_plain_gunicorn_without_secrets_refuses_to_start(tmp_path):
    port = free_port()
    gunicorn = run_gunicorn(bare_env(VAR_DIR=str(tmp_path), DEBUG="true"), port)
    try:
        gunicorn.wait(timeout=60)
    finally:
        output = stop(gunicorn)
    assert gunicorn.returncode != 0
    assert "Production settings need these environment variables" in output
    with pytest.raises(OSError):  # nothing listens: no page at all, let alone a DEBUG page
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)  # noqa: S310


def test_plain_gunicorn_with_secrets_serves_without_debug_pages(tmp_path):
    port = free_port()
    env = bare_env(VAR_DIR=str(tmp_path / "var"), DEBUG="true", SECRET_KEY=SAFE_KEY, ALLOWED_HOSTS="127.0.0.1",
                   DATABASE_URL=f"sqlite:///{tmp_path}/g.sqlite3")
    gunicorn = run_gunicorn(env, port)
    try:
        deadline, answer = time.monotonic() + 60, None
        while answer is None and time.monotonic() < deadline and gunicorn.poll() is None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}/api/no-such-thing",
                                             headers={"X-Forwarded-Proto": "https"})
            try:
                urllib.request.urlopen(request, timeout=2)  # noqa: S310
            except urllib.error.HTTPError as error:
                answer = (error.code, error.headers, error.read().decode())
            except OSError:
                time.sleep(0.3)
    finally:
        output = stop(gunicorn)
    assert answer is not None, output
    status, headers, body = answer
    assert status == 404
    assert headers["Content-Type"] == "application/problem+json"
    assert "Strict-Transport-Security" in headers and "Content-Security-Policy" in headers
    for debug_marker in ("Traceback", "DEBUG = True", "Using the URLconf", "technical"):
        assert debug_marker not in body


def test_run_stack_hands_its_settings_module_to_its_children(monkeypatch):
    started: list[tuple[list[str], dict[str, str]]] = []

    class Exited:
        def __init__(self, command, cwd=None, env=None):
            started.append((command, env))

        def poll(self):
            return 0

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(run_stack.subprocess, "Popen", Exited)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "something.else")  # what the children would otherwise inherit
    monkeypatch.setattr(run_stack.signal, "signal", lambda *args: None)
    with pytest.raises(SystemExit):  # the fake children "exit" at once, so the command stops with an error
        run_stack.Command().handle(port=0, host="127.0.0.1", no_demo=True, no_setup=True)
    assert [command[1:4] for command, _ in started] == [
        ["manage.py", "runserver", "127.0.0.1:0"], ["-m", "celery", "-A"], ["-m", "celery", "-A"]]
    assert {env["DJANGO_SETTINGS_MODULE"] for _, env in started} == {settings.SETTINGS_MODULE}
