"""Celery tasks of the metering app: take ids, call one service, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from common.jobs import job_run_progress, tracked_job
from common.models import JOB_MESSAGE_MAX, JobRun

from .models import Meter
from .services.rollups import rollups_catch_up_isolated, usage_process_all, usage_rebuild

PROCESS_RUNS_KEPT = 200


@shared_task(name="metering.process_usage", time_limit=120, soft_time_limit=100, ignore_result=True)
def process_usage() -> int:
    """Beat, every few seconds: fold newly ingested events into rollups and activity counters."""
    report = usage_process_all(time_budget=20.0)
    if report.total or report.activity_events or report.failures:
        message = (f"{report.activity_events:,} new events; rolled up: "
                   + (", ".join(f"{slug} {n:,}" for slug, n in report.events_by_meter.items() if n) or "nothing"))
        if report.failures:
            message += "; FAILED (the other meters went on): " + "; ".join(
                f"{slug}: {error}" for slug, error in report.failures.items())
        JobRun.objects.create(
            kind="process_usage", trigger=JobRun.Trigger.BEAT,
            status=JobRun.Status.FAILED if report.failures else JobRun.Status.SUCCEEDED,
            message=message[:JOB_MESSAGE_MAX],
            result={"by_meter": report.events_by_meter, "activity": report.activity_events,
                    "failures": report.failures},
        )
        stale = list(JobRun.objects.filter(kind="process_usage").values_list("id", flat=True)[PROCESS_RUNS_KEPT:])
        if stale:
            JobRun.objects.filter(id__in=stale).delete()
    return report.total


@shared_task(name="metering.catch_up_meter", time_limit=3600, soft_time_limit=3500, ignore_result=True)
def catch_up_meter(meter_id: int) -> int:
    """After a meter is created or changed: fold its events now rather than at the next beat tick."""
    if not Meter.objects.filter(pk=meter_id).exists():
        return 0
    return rollups_catch_up_isolated(meter_id=meter_id)[0]  # a failure is recorded on the meter


@shared_task(name="metering.rebuild_usage", time_limit=6 * 3600, soft_time_limit=6 * 3600 - 60, ignore_result=True)
def rebuild_usage(meter_id: int, job_run_id: int | None = None) -> int:
    """Rebuild one meter's rollups from raw events, reporting progress on the job run."""
    meter = Meter.objects.get(pk=meter_id)
    with tracked_job(kind="rebuild_usage", job_run_id=job_run_id, params={"meter": meter.slug}) as job_run:
        done = usage_rebuild(meter=meter, progress=lambda n, total: job_run_progress(
            job_run=job_run, done=n, total=total, message=f"{meter.slug}: {n:,} of {total:,} events"))
        job_run.message = f"{meter.slug}: rebuilt from {done:,} events"
    return done
