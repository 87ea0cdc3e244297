"""Project-level Celery tasks."""

from celery import shared_task

from .jobs import heartbeat_record


@shared_task(name="billing_site.heartbeat", time_limit=60, soft_time_limit=50)
def heartbeat() -> int:
    """Scheduled by beat every minute; its runs show in the admin under Operations → Job runs."""
    return heartbeat_record().pk


@shared_task(name="billing_site.ping", time_limit=30, soft_time_limit=25)
def ping(payload: str = "pong") -> str:
    """Round-trip check used by tests and operators: ``celery -A billing_site call billing_site.ping``."""
    return payload
