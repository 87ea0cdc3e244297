from django.db import migrations

from common.beat import seed_interval_task, unseed_task


def seed(apps, schema_editor):
    seed_interval_task(
        apps,
        name="Roll up usage",
        task="metering.process_usage",
        every_seconds=5,
        description="Folds newly ingested events into hourly and daily rollups and subject activity.",
    )


def unseed(apps, schema_editor):
    unseed_task(apps, name="Roll up usage")


class Migration(migrations.Migration):
    dependencies = [
        ("metering", "0002_meters_and_rollups"),
        ("billing_site", "0002_seed_heartbeat"),
    ]
    operations = [migrations.RunPython(seed, unseed)]
