"""Starting Celery tasks from services: by the task's registered name, after the transaction commits.

Services never import task modules (tasks import services), so there is no import cycle, even at function
level; a task queued inside a transaction that rolls back is never sent.

A long job that commits many small transactions (the cycle close: one per invoice) wraps a stretch of them in
:func:`enqueues_coalesced`: the same task with the same arguments is then sent once, when the stretch ends, rather
than once per commit (e.g. one ``notifications.dispatch`` per chunk of invoices instead of one per invoice).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

from celery import current_app
from django.db import transaction

_held = threading.local()


def _send(task_name: str, kwargs: dict[str, Any]) -> None:
    task = current_app.tasks.get(task_name)
    if task is not None:
        task.apply_async(kwargs=kwargs)
    else:  # registered in another process only (e.g. a worker-only module)
        current_app.send_task(task_name, kwargs=kwargs)


def enqueue(task_name: str, **kwargs: Any) -> None:
    """Send now (outside any transaction), or at the end of the enclosing :func:`enqueues_coalesced`. Eager in
    tests, like ``task.delay``."""
    held: dict[tuple[str, str], dict[str, Any]] | None = getattr(_held, "tasks", None)
    if held is None:
        _send(task_name, kwargs)
    else:
        held.setdefault((task_name, json.dumps(kwargs, sort_keys=True, default=str)), kwargs)


def enqueue_on_commit(task_name: str, **kwargs: Any) -> None:
    transaction.on_commit(lambda: enqueue(task_name, **kwargs))


@contextlib.contextmanager
def enqueues_coalesced() -> Iterator[None]:
    """Hold the tasks enqueued in this block (by this thread) and send each distinct one once when it ends, in the
    order first asked for — also when the block raises, since what was committed in it must not lose its tasks.
    Nested blocks belong to the outermost."""
    if getattr(_held, "tasks", None) is not None:
        yield
        return
    _held.tasks = {}
    try:
        yield
    finally:
        held, _held.tasks = _held.tasks, None
        for (task_name, _), kwargs in held.items():
            _send(task_name, kwargs)
