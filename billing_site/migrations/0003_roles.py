from django.db import migrations

# The roles used to be created here; they are now kept in sync after every migrate (billing_site.apps), so
# roles follow new permissions without a migration each time.


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
    operations = []
