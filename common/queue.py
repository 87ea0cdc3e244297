"""Starting Celery tasks from services: by the task's registered name, after the transaction commits.

Services never import task modules (tasks import services), so there is no import cycle, even at function
level; a task queued inside a transaction that rolls back is never sent.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction


def enqueue(task_name: str, **kwargs: Any) -> None:
    """Send now (outside any transaction). Eager in tests, like ``task.delay``."""
    task = current_app.tasks.get(task_name)
    if task is not None:
        task.apply_async(kwargs=kwargs)
    else:  # registered in another process only (e.g. a worker-only module)
        current_app.send_task(task_name, kwargs=kwargs)


def enqueue_on_commit(task_name: str, **kwargs: Any) -> None:
    transaction.on_commit(lambda: enqueue(task_name, **kwargs))
