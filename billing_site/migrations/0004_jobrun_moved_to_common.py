from django.db import migrations


class Migration(migrations.Migration):
    """JobRun now lives in ``common`` (see common/migrations/0001): only the model state leaves here."""

    dependencies = [
        ("billing_site", "0003_roles"),
        ("common", "0001_jobrun_from_billing_site"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="JobRun")],
                                            database_operations=[]),
    ]
