"""Seeding periodic jobs as django-celery-beat rows, from data migrations.

Rows are created once with defaults and never overwritten, so schedules edited in the admin
(Settings → Periodic tasks) survive upgrades.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.apps.registry import Apps


def seed_interval_task(apps: Apps, *, name: str, task: str, every_seconds: int, description: str = "",
                       queue: str | None = None) -> None:
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    interval, _ = interval_model.objects.get_or_create(every=every_seconds, period="seconds")
    if not task_model.objects.filter(name=name).exists():
        task_model.objects.create(
            name=name, task=task, interval=interval, enabled=True, description=description, queue=queue
        )
    _bump_change_marker(apps)


def unseed_task(apps: Apps, *, name: str) -> None:
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=name).delete()
    _bump_change_marker(apps)


def _bump_change_marker(apps: Apps) -> None:
    # Beat reloads its schedule when this marker changes; bulk writes from migrations skip the model's
    # own signal, so set it here.
    from django.utils import timezone

    changed_model = apps.get_model("django_celery_beat", "PeriodicTasks")
    changed_model.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})
