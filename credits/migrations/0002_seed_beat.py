from django.db import migrations

from common.beat import seed_interval_task, unseed_task


def seed(apps, schema_editor):
    seed_interval_task(apps, name="Grant recurring credits", task="credits.recurring_grants", every_seconds=300,
                       description="Grants the credits rate cards promise each period (credit_grant), at the "
                                   "period's start, once. Safe to run twice.")
    seed_interval_task(apps, name="Expire credit grants", task="credits.expire_grants", every_seconds=900,
                       description="Writes off what is left of grants past their expiry (plus "
                                   "CREDITS_EXPIRY_DELAY_SECONDS), once. Safe to run twice.")


def unseed(apps, schema_editor):
    unseed_task(apps, name="Grant recurring credits")
    unseed_task(apps, name="Expire credit grants")


class Migration(migrations.Migration):
    dependencies = [
        ("credits", "0001_initial"),
        ("billing_site", "0002_seed_heartbeat"),
    ]
    operations = [migrations.RunPython(seed, unseed)]
