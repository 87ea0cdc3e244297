"""Services for job runs: start, report progress, finish. Every long job records itself through these.

Progress is written with single-row UPDATEs outside the job's own chunk transactions, so the admin sees it
while the job runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from celery import shared_task
from django.utils import timezone

from .models import JOB_MESSAGE_MAX, JobRun
from .queue import enqueue_on_commit

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

# Heartbeats arrive every minute forever; keep only the recent ones.
HEARTBEATS_KEPT = 100


def job_run_create(*, kind: str, trigger: str = JobRun.Trigger.SYSTEM, params: dict[str, Any] | None = None,
                   requested_by: User | None = None) -> JobRun:
    """Record a job that has been asked for but not started (e.g. queued from the admin)."""
    return JobRun.objects.create(kind=kind, trigger=trigger, params=params or {}, requested_by=requested_by)


def job_run_queue(*, kind: str, task_name: str, params: dict[str, Any] | None = None,
                  requested_by: User | None = None, trigger: str = JobRun.Trigger.ADMIN,
                  **task_kwargs: Any) -> JobRun:
    """Ask for a job from the admin: record its run (queued) and start its task after commit, by the task's
    registered name, with ``job_run_id`` and ``task_kwargs``. The job's page then shows its progress."""
    job_run = job_run_create(kind=kind, trigger=trigger, params=params, requested_by=requested_by)
    enqueue_on_commit(task_name, job_run_id=job_run.pk, **task_kwargs)
    return job_run


def job_run_start(*, job_run: JobRun, total: int | None = None) -> JobRun:
    job_run.status = JobRun.Status.RUNNING
    job_run.started_at = timezone.now()
    job_run.progress_total = total
    JobRun.objects.filter(pk=job_run.pk).update(
        status=job_run.status, started_at=job_run.started_at, progress_total=total
    )
    return job_run


def job_run_progress(*, job_run: JobRun, done: int, total: int | None = None, message: str = "") -> None:
    job_run.progress_done = done
    fields: dict = {"progress_done": done}
    if total is not None:
        job_run.progress_total = total
        fields["progress_total"] = total
    if message:
        job_run.message = message
        fields["message"] = message
    JobRun.objects.filter(pk=job_run.pk).update(**fields)


def job_run_finish(*, job_run: JobRun, succeeded: bool, message: str = "", result: dict | None = None) -> JobRun:
    job_run.status = JobRun.Status.SUCCEEDED if succeeded else JobRun.Status.FAILED
    job_run.finished_at = timezone.now()
    job_run.message = message[:JOB_MESSAGE_MAX]
    job_run.result = result or {}
    if job_run.started_at is None:
        job_run.started_at = job_run.finished_at
    JobRun.objects.filter(pk=job_run.pk).update(
        status=job_run.status,
        finished_at=job_run.finished_at,
        started_at=job_run.started_at,
        message=job_run.message,
        result=job_run.result,
    )
    return job_run


@contextlib.contextmanager
def tracked_job(*, kind: str, trigger: str = JobRun.Trigger.SYSTEM, params: dict | None = None,
                job_run_id: int | None = None, total: int | None = None) -> Iterator[JobRun]:
    """Run a block as a recorded job: running → succeeded, or failed with the error, which is re-raised.

    ``job_run_id`` continues a run queued earlier (by the admin); otherwise a new run is created.
    """
    job_run = JobRun.objects.filter(pk=job_run_id).first() if job_run_id else None
    if job_run is None:
        job_run = job_run_create(kind=kind, trigger=trigger, params=params)
    job_run_start(job_run=job_run, total=total)
    try:
        yield job_run
    except BaseException as exc:
        job_run_finish(job_run=job_run, succeeded=False, message=f"{type(exc).__name__}: {exc}")
        raise
    if job_run.status == JobRun.Status.RUNNING:
        job_run_finish(job_run=job_run, succeeded=True, message=job_run.message, result=job_run.result)


def beat_job(name: str, *, kind: str, time_limit: int = 1800) -> Callable[[Callable[[], str]], Any]:
    """A beat task whose body runs as a recorded job of ``kind`` (:func:`tracked_job`): the body calls one service
    and returns a one-line summary, kept as the run's message and returned by the task. Stopped after
    ``time_limit`` seconds (the soft limit a minute earlier)."""

    def decorate(body: Callable[[], str]) -> Any:
        @functools.wraps(body)
        def run() -> str:
            with tracked_job(kind=kind, trigger=JobRun.Trigger.BEAT) as job_run:
                job_run.message = body()
            return job_run.message

        return shared_task(name=name, time_limit=time_limit, soft_time_limit=time_limit - 60, ignore_result=True)(run)

    return decorate


def heartbeat_record() -> JobRun:
    """The beat heartbeat: proves web, broker, worker and beat are all alive. Keeps the last few only."""
    now = timezone.now()
    run = JobRun.objects.create(
        kind="heartbeat",
        trigger=JobRun.Trigger.BEAT,
        status=JobRun.Status.SUCCEEDED,
        started_at=now,
        finished_at=now,
        message="alive",
    )
    stale = JobRun.objects.filter(kind="heartbeat").order_by("-id").values_list("id", flat=True)[HEARTBEATS_KEPT:]
    stale_ids = list(stale[:1000])
    if stale_ids:
        JobRun.objects.filter(id__in=stale_ids).delete()
    logger.info("heartbeat %s at %s", run.pk, now.isoformat())
    return run
