"""``make run``: migrate, seed, and run web server + Celery worker + beat together in the foreground.

Ctrl-C (SIGINT) or SIGTERM stops all three; if one of them dies, the others are stopped too. The three children get
this command's own settings module explicitly (``manage.py``'s default is the development settings), since
``celery -A billing_site`` and the WSGI/ASGI entry points default to the production settings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from argparse import ArgumentParser
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

STOP_GRACE_SECONDS = 10


class Command(BaseCommand):
    help = "Run web server, Celery worker and beat together (development)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--no-demo", action="store_true", help="Do not load the demo data.")
        parser.add_argument("--no-setup", action="store_true", help="Skip migrate, admin user and demo data.")

    def handle(self, *args: Any, port: int, host: str, no_demo: bool, no_setup: bool, **options: Any) -> None:
        if not no_setup:
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("Database migrated: " + str(settings.DATABASES["default"]["NAME"]))
            call_command("ensure_dev_admin")
            if not no_demo:
                self._load_demo()

        python = sys.executable
        celery = [python, "-m", "celery", "-A", "billing_site"]
        commands = {
            "web": [python, "manage.py", "runserver", f"{host}:{port}", "--noreload"],
            "worker": [*celery, "worker", "--loglevel", "INFO", "--concurrency", "2", "--hostname", "worker@%h"],
            "beat": [
                *celery, "beat", "--loglevel", "INFO",
                "--scheduler", "django_celery_beat.schedulers:DatabaseScheduler",
            ],
        }
        processes: dict[str, subprocess.Popen[bytes]] = {}
        stopping = False
        child_env = {**os.environ, "DJANGO_SETTINGS_MODULE": settings.SETTINGS_MODULE}

        def stop_all(signum: int | None = None, frame: FrameType | None = None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop_all)
        signal.signal(signal.SIGTERM, stop_all)

        for name, command in commands.items():
            processes[name] = subprocess.Popen(command, cwd=settings.BASE_DIR, env=child_env)  # noqa: S603
        shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host  # noqa: S104
        self.stdout.write(self.style.SUCCESS(
            f"\nAdmin:  http://{shown_host}:{port}/admin/\n"
            f"Health: http://{shown_host}:{port}/healthz\n"
            f"API docs: http://{shown_host}:{port}/api/docs/\n"
            "Running web, worker and beat. Press Ctrl-C to stop all of them.\n"
        ))
        exit_code = 0
        while not stopping:
            for name, process in processes.items():
                code = process.poll()
                if code is not None:
                    self.stderr.write(f"{name} exited with code {code}; stopping the others.")
                    exit_code = code or 1
                    stopping = True
                    break
            time.sleep(0.5)

        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for process in processes.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                process.kill()
        self.stdout.write("Stopped web, worker and beat.")
        if exit_code:
            sys.exit(exit_code)

    def _load_demo(self) -> None:
        from django.core.management import get_commands

        if "load_demo" in get_commands():
            call_command("load_demo", stdout=self.stdout)
        else:
            self.stdout.write("No demo data yet.")
