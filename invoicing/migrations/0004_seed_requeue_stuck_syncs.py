from django.db import migrations

from common.beat import seed_interval_task, unseed_task


def seed(apps, schema_editor):
    seed_interval_task(
        apps,
        name="Stripe: re-push stuck invoices",
        task="invoicing.requeue_stuck_syncs",
        every_seconds=1800,
        description="Pushes again invoices left 'syncing' for more than 3 hours (idempotent).",
    )


def unseed(apps, schema_editor):
    unseed_task(apps, name="Stripe: re-push stuck invoices")


class Migration(migrations.Migration):
    dependencies = [("invoicing", "0003_seed_unbilled_snapshot")]
    operations = [migrations.RunPython(seed, unseed)]
