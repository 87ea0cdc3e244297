from django.db import migrations

from common.beat import seed_interval_task, unseed_task


def seed(apps, schema_editor):
    seed_interval_task(
        apps,
        name="Dashboard: unbilled usage",
        task="invoicing.unbilled_snapshot",
        every_seconds=900,
        description="Preview totals of every active subscription, for the admin dashboard.",
    )


def unseed(apps, schema_editor):
    unseed_task(apps, name="Dashboard: unbilled usage")


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0002_seed_close_cycles")]
    operations = [migrations.RunPython(seed, unseed)]
