"""Celery tasks of the credits app (beat): recurring grants at each period start, expiry of remainders. Each
calls one service and is safe to run twice."""

from __future__ import annotations

from celery import shared_task
from django.utils import timezone

from common.jobs import tracked_job
from common.models import JobRun

from .services.grants import grants_expire
from .services.recurring import recurring_grants_issue


@shared_task(name="credits.recurring_grants", time_limit=1800, soft_time_limit=1740, ignore_result=True)
def grant_recurring_credits() -> str:
    with tracked_job(kind="credits_recurring", trigger=JobRun.Trigger.BEAT) as run:
        made = recurring_grants_issue(now=timezone.now())
        run.message = f"{made} recurring grants"
    return run.message


@shared_task(name="credits.expire_grants", time_limit=1800, soft_time_limit=1740, ignore_result=True)
def expire_credit_grants() -> str:
    with tracked_job(kind="credits_expiry", trigger=JobRun.Trigger.BEAT) as run:
        written = grants_expire(now=timezone.now())
        run.message = f"{written} grants expired"
    return run.message
