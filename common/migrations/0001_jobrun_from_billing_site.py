"""JobRun moves from ``billing_site`` (now configuration only) to ``common``: the model's state moves, the
table is renamed, and its content type (with its permissions and admin log entries) follows."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def move_content_type(apps, schema_editor):
    content_type = apps.get_model("contenttypes", "ContentType")
    if not content_type.objects.filter(app_label="common", model="jobrun").exists():
        content_type.objects.filter(app_label="billing_site", model="jobrun").update(app_label="common")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("billing_site", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="JobRun",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("kind", models.CharField(db_index=True, max_length=64)),
                        ("status", models.CharField(choices=[("queued", "Queued"), ("running", "Running"), ("succeeded", "Succeeded"), ("failed", "Failed")], db_index=True, default="queued", max_length=16)),
                        ("trigger", models.CharField(choices=[("beat", "Schedule (beat)"), ("admin", "Admin"), ("cli", "Command line"), ("api", "API"), ("system", "System")], default="system", max_length=16)),
                        ("params", models.JSONField(blank=True, default=dict)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("started_at", models.DateTimeField(blank=True, null=True)),
                        ("finished_at", models.DateTimeField(blank=True, null=True)),
                        ("progress_done", models.BigIntegerField(default=0)),
                        ("progress_total", models.BigIntegerField(blank=True, null=True)),
                        ("message", models.TextField(blank=True)),
                        ("result", models.JSONField(blank=True, default=dict)),
                        ("requested_by", models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="+", to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        "ordering": ["-created_at", "-id"],
                        "indexes": [models.Index(fields=["kind", "-created_at"], name="jobrun_kind_recent")],
                        "db_table": "billing_site_jobrun",
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="jobrun", table=None),
        migrations.RunPython(move_content_type, migrations.RunPython.noop),
    ]
