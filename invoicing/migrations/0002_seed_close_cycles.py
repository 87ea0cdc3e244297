from django.db import migrations

from common.beat import seed_interval_task, unseed_task


def seed(apps, schema_editor):
    seed_interval_task(
        apps,
        name="Close billing cycles",
        task="invoicing.close_cycles",
        every_seconds=300,
        description="Invoices every billing period whose end plus the grace period has passed; issues drafts "
                    "whose review time is over. Safe to run twice.",
    )


def unseed(apps, schema_editor):
    unseed_task(apps, name="Close billing cycles")


class Migration(migrations.Migration):
    dependencies = [
        ("invoicing", "0001_invoicing"),
        ("billing_site", "0002_seed_heartbeat"),
    ]
    operations = [migrations.RunPython(seed, unseed)]
