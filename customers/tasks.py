"""Celery tasks of the customers app."""

from __future__ import annotations

from celery import shared_task

from common.jobs import job_run_finish, tracked_job

from .kong_admin import KongAdminError
from .services.kong import kong_consumers_import


@shared_task(name="customers.import_kong_consumers", time_limit=600, soft_time_limit=570, ignore_result=True)
def import_kong_consumers(admin_url: str, token: str | None = None, job_run_id: int | None = None) -> int:
    """Import every consumer of a Kong Admin API; the job run shows the counts or the error."""
    with tracked_job(kind="import_kong_consumers", job_run_id=job_run_id, params={"admin_url": admin_url}) as run:
        try:
            result = kong_consumers_import(admin_url=admin_url, token=token)
        except KongAdminError as exc:
            job_run_finish(job_run=run, succeeded=False, message=f"Nothing imported: {exc}")
            return 0
        run.message = (
            f"{result.total} consumers: {result.created} new, {result.updated} updated, {result.unchanged} unchanged"
        )
        run.result = {"created": result.created, "updated": result.updated, "unchanged": result.unchanged}
    return result.total
