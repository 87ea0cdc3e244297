"""Celery retry options shared by tasks that call outside services, and the last-attempt fallback.

Tasks declare ``autoretry_for`` with :data:`BACKOFF` (exponential from 30 s, at most an hour, full jitter), so
Celery schedules the retries; :func:`give_up_on_last_attempt` lets a task record a failure instead of raising
once its retries are spent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from celery import Task

class RetryOptions(TypedDict, total=False):
    """Celery task options for automatic retries (``@shared_task(**options)``)."""

    autoretry_for: tuple[type[BaseException], ...]
    max_retries: int
    retry_backoff: int
    retry_backoff_max: int
    retry_jitter: bool


BACKOFF: RetryOptions = {"retry_backoff": 30, "retry_backoff_max": 3600, "retry_jitter": True}


@contextlib.contextmanager
def give_up_on_last_attempt(task: Task[Any, Any], errors: tuple[type[BaseException], ...],
                            give_up: Callable[[BaseException], None]) -> Iterator[None]:
    """Around a task's body: on its last attempt, an error of ``errors`` calls ``give_up`` instead of raising
    (earlier attempts raise it, and ``autoretry_for`` schedules the next one)."""
    try:
        yield
    except errors as exc:
        if task.max_retries is not None and task.request.retries >= task.max_retries:
            give_up(exc)
            return
        raise
