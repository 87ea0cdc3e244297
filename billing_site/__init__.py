"""The project package: settings, URLs, the Celery app and the operations app (job runs, health)."""

from .celery import app as celery_app

__all__ = ("celery_app",)
