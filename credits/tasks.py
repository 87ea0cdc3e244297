"""Celery tasks of the credits app (beat): recurring grants at each period start, expiry of remainders. Each
calls one service and is safe to run twice."""

from __future__ import annotations

from django.utils import timezone

from common.jobs import beat_job

from .services.grants import grants_expire
from .services.recurring import recurring_grants_issue


@beat_job("credits.recurring_grants", kind="credits_recurring")
def grant_recurring_credits() -> str:
    return f"{recurring_grants_issue(now=timezone.now())} recurring grants"


@beat_job("credits.expire_grants", kind="credits_expiry")
def expire_credit_grants() -> str:
    return f"{grants_expire(now=timezone.now())} grants expired"
