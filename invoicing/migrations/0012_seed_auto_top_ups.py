from django.db import migrations

from common.beat import seed_interval_task, unseed_task


def seed(apps, schema_editor):
    seed_interval_task(apps, name="Auto top-ups", task="invoicing.auto_top_ups", every_seconds=300,
                       description="Buys the auto top-up of customers whose live credits fell below their threshold "
                                   "(once per crossing, at most N a month). Safe to run twice.")


def unseed(apps, schema_editor):
    unseed_task(apps, name="Auto top-ups")


class Migration(migrations.Migration):
    dependencies = [
        ("invoicing", "0011_top_up_invoices"),
        ("billing_site", "0002_seed_heartbeat"),
    ]
    operations = [migrations.RunPython(seed, unseed)]
