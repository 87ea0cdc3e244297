"""Readiness checks behind ``/healthz``: the database answers and the Celery broker accepts connections."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import connection


def check_database() -> dict[str, Any]:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means "not ready"; the message says which
        return {"ok": False, "vendor": connection.vendor, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "vendor": connection.vendor, "ms": round((time.monotonic() - started) * 1000, 1)}


def check_broker() -> dict[str, Any]:
    app = current_app
    url = app.conf.broker_url or ""
    transport = url.split("://", 1)[0] or "unknown"
    started = time.monotonic()
    try:
        if transport == "filesystem":
            options = app.conf.broker_transport_options or {}
            for key in ("data_folder_in", "data_folder_out", "control_folder"):
                folder = options.get(key)
                if not folder or not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                    raise OSError(f"broker folder {key}={folder!r} is missing or not writable")
        else:
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=2)
    except Exception as exc:
        return {"ok": False, "transport": transport, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "transport": transport, "ms": round((time.monotonic() - started) * 1000, 1)}


def health_report() -> tuple[bool, dict[str, Any]]:
    database = check_database()
    broker = check_broker()
    healthy = database["ok"] and broker["ok"]
    return healthy, {
        "status": "ok" if healthy else "unavailable",
        "database": database,
        "broker": broker,
        "debug": settings.DEBUG,
    }
