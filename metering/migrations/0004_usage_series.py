"""Rollups keyed by usage series (meter × subject × group-by values) with a (series, bucket) primary key.

Rollups are derived data: the old tables are dropped and every meter's high-water mark goes back to 0,
so the aggregator folds all events again into the new tables (queries read raw events meanwhile).
"""

import django.db.models.deletion
from django.db import migrations, models


def refold_every_meter(apps, schema_editor):
    apps.get_model("metering", "Meter").objects.update(rollup_low=0, rollup_newest_hour=None, rollup_newest_day=None)


ROLLUP_FIELDS: list[tuple[str, models.Field]] = [
    ("event_count", models.BigIntegerField(default=0)),
    ("value_count", models.BigIntegerField(default=0)),
    ("value_sum", models.DecimalField(decimal_places=12, default=0, max_digits=40)),
    ("value_min", models.DecimalField(decimal_places=12, max_digits=40, null=True)),
    ("value_max", models.DecimalField(decimal_places=12, max_digits=40, null=True)),
    ("latest_time", models.DateTimeField(null=True)),
    ("latest_event", models.BigIntegerField(null=True)),
    ("latest_value", models.DecimalField(decimal_places=12, max_digits=40, null=True)),
]


def rollup_fields():
    return [
        ("pk", models.CompositePrimaryKey("series", "bucket_start", blank=True, editable=False, primary_key=True,
                                          serialize=False)),
        ("series", models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                     related_name="+", to="metering.usageseries")),
        ("bucket_start", models.DateTimeField()),
        *[(name, field.clone()) for name, field in ROLLUP_FIELDS],
    ]


class Migration(migrations.Migration):

    dependencies = [
        ("metering", "0003_seed_usage_aggregator"),
    ]

    operations = [
        migrations.DeleteModel(name="HourlyUsage"),
        migrations.DeleteModel(name="DailyUsage"),
        migrations.DeleteModel(name="HourlyDistinctValue"),
        migrations.AddField(
            model_name="meter",
            name="rollup_newest_day",
            field=models.DateTimeField(editable=False, null=True),
        ),
        migrations.AddField(
            model_name="meter",
            name="rollup_newest_hour",
            field=models.DateTimeField(editable=False, null=True),
        ),
        migrations.CreateModel(
            name="UsageSeries",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("subject", models.CharField(max_length=255)),
                ("group_key", models.TextField()),
                ("group_values", models.JSONField(default=dict)),
                ("meter", models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="+", to="metering.meter")),
            ],
            options={
                "verbose_name_plural": "usage series",
                "constraints": [models.UniqueConstraint(fields=("meter", "subject", "group_key"),
                                                        name="metering_series_key")],
            },
        ),
        migrations.CreateModel(name="HourlyUsage", fields=rollup_fields(), options={"abstract": False}),
        migrations.CreateModel(
            name="DailyUsage",
            fields=rollup_fields(),
            options={"indexes": [models.Index(fields=["bucket_start"], name="metering_daily_time")]},
        ),
        migrations.CreateModel(
            name="HourlyDistinctValue",
            fields=[
                ("pk", models.CompositePrimaryKey("series", "bucket_start", "value", blank=True, editable=False,
                                                  primary_key=True, serialize=False)),
                ("series", models.ForeignKey(db_constraint=False, db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                             related_name="+", to="metering.usageseries")),
                ("bucket_start", models.DateTimeField()),
                ("value", models.TextField()),
            ],
        ),
        migrations.RunPython(refold_every_meter, migrations.RunPython.noop),
    ]
