from django.db import migrations

from billing_site.roles import sync_roles


def create_roles(apps, schema_editor):
    sync_roles(apps)


def remove_roles(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(
        name__in=["Finance viewer", "Billing operator", "Billing admin"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("billing_site", "0002_seed_heartbeat"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("metering", "0003_seed_usage_aggregator"),
        ("catalog", "0001_catalog"),
        ("customers", "0002_stripe_synced_hash"),
        ("invoicing", "0002_seed_close_cycles"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(create_roles, remove_roles)]
