from django.db import migrations

from common.beat import seed_interval_task, unseed_task


def seed(apps, schema_editor):
    seed_interval_task(
        apps,
        name="Heartbeat",
        task="billing_site.heartbeat",
        every_seconds=60,
        description="Records a job run every minute: proves broker, worker and beat are alive.",
    )


def unseed(apps, schema_editor):
    unseed_task(apps, name="Heartbeat")


class Migration(migrations.Migration):
    dependencies = [
        ("billing_site", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(seed, unseed)]
