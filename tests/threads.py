"""Running test code in several threads at once (each with its own database connection)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


def run_in_threads(work: Callable[[], object], count: int) -> list[Exception]:
    """Run ``work`` in ``count`` threads at once and wait for them; each closes its database connection when done.
    Returns what they raised."""
    errors: list[Exception] = []

    def run() -> None:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
