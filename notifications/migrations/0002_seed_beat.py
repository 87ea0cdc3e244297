from django.db import migrations

from common.beat import seed_interval_task, unseed_task

TASKS = [
    ("Send webhooks and emails", "notifications.sweep", 60,
     "Dispatches outbox events not yet fanned out and sends every delivery that is due (retries, lost messages, "
     "killed workers); disables endpoints failing for days. Safe to run twice."),
    ("Evaluate usage and spend alerts", "notifications.evaluate_alerts", 60,
     "Usage thresholds and spend alerts of customers whose subjects sent usage lately; usage nobody bills. "
     "Each alert fires once per threshold per period."),
]


def seed(apps, schema_editor):
    for name, task, seconds, description in TASKS:
        seed_interval_task(apps, name=name, task=task, every_seconds=seconds, description=description)


def unseed(apps, schema_editor):
    for name, *_ in TASKS:
        unseed_task(apps, name=name)


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0001_notifications"),
        ("billing_site", "0002_seed_heartbeat"),
    ]
    operations = [migrations.RunPython(seed, unseed)]
