"""Models of the metering app: raw usage events and API tokens (meters and rollups join them later)."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from common.time import format_rfc3339

CLOUDEVENT_STRING_MAX = 255
INGEST_RATE_LIMIT_MAX = 10_000_000  # events per second; far beyond what one installation ingests


class Event(models.Model):
    """One CloudEvent as the gateway sent it. Append-only: never edited, never deleted by the app.

    ``ingest_tx`` orders events by the ingest transaction that wrote them (PostgreSQL: the transaction
    id; SQLite, where writers are serialized: a per-batch counter). The usage aggregator reads events by
    ``ingest_tx`` ranges below the oldest still-running transaction, so an event whose transaction commits
    late is never skipped (ids and ``ingested_at`` are not commit order).
    """

    id = models.BigAutoField(primary_key=True)
    source = models.CharField(max_length=CLOUDEVENT_STRING_MAX)
    event_id = models.CharField("CloudEvent id", max_length=CLOUDEVENT_STRING_MAX)
    type = models.CharField(max_length=CLOUDEVENT_STRING_MAX)
    subject = models.CharField(max_length=CLOUDEVENT_STRING_MAX)
    time = models.DateTimeField()
    data = models.JSONField(null=True, blank=True)
    ingested_at = models.DateTimeField()
    ingest_tx = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "event_id"], name="metering_event_source_id_uniq"),
        ]
        indexes = [
            # usage of one subject over a period (raw tail queries, explorer filtered by subject)
            models.Index(fields=["subject", "time"], name="metering_event_subject_time"),
            # the events list: newest first within a time range
            models.Index(fields=["time"], name="metering_event_time"),
            # the aggregator's cursor
            models.Index(fields=["ingest_tx"], name="metering_event_ingest_tx"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id} ({self.subject})"

    def as_cloudevent(self) -> dict:
        """The event in CloudEvents JSON form, as the list API returns it."""
        event = {
            "id": self.event_id,
            "source": self.source,
            "specversion": "1.0",
            "type": self.type,
            "subject": self.subject,
            "time": format_rfc3339(self.time),
        }
        if self.data is not None:
            event["data"] = self.data
        return event


class ApiToken(models.Model):
    """A Bearer token for gateways and scripts. Only a SHA-256 hash is stored; the token is shown once."""

    class Scope(models.TextChoices):
        INGEST = "ingest", "ingest: post usage events"
        READ = "read", "read: read APIs (events, meters, usage, entitlements, invoices)"
        MANAGE = "manage", "manage: create and change meters through the API"

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The first characters of the token, to recognise it.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    ingest_rate_limit = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(INGEST_RATE_LIMIT_MAX)],
        verbose_name="ingest rate limit",
        help_text="Events per second this token may post, counted per event (a batch of 1,000 counts 1,000) "
                  "over short windows; beyond it ingest answers 429. Empty: no limit.",
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class Meter(models.Model):
    """What to count: events of one type, aggregated over a JSONPath value, grouped by JSONPaths.

    ``rollup_low`` is the aggregator's high-water mark: every event of this meter's type with
    ``ingest_tx < rollup_low`` is in the rollups, exactly once; newer ones are read raw at query time.
    ``rollup_error`` / ``rollup_failed_at`` say why the aggregator last failed on it (cleared by the next
    chunk that succeeds); one meter's failure never stops the others.
    """

    class Aggregation(models.TextChoices):
        SUM = "SUM"
        COUNT = "COUNT"
        UNIQUE_COUNT = "UNIQUE_COUNT", "Unique count"
        AVG = "AVG", "Average"
        MIN = "MIN", "Minimum"
        MAX = "MAX", "Maximum"
        LATEST = "LATEST"

    class ValueAbsent(models.TextChoices):
        """What an event without the value property (missing, or JSON null) means to the meter: an event
        problem (not counted, shown on the event), or a value of 0 that counts nothing. A value that is present
        but not a number (or out of range) is an event problem either way."""

        INVALID = "invalid", "an event problem (not counted, shown on the event)"
        ZERO = "zero", "zero: the event counts nothing"

    slug = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    event_type = models.CharField(max_length=CLOUDEVENT_STRING_MAX, db_index=True)
    aggregation = models.CharField(max_length=16, choices=Aggregation.choices)
    value_property = models.CharField(max_length=255, blank=True, help_text="JSONPath, e.g. $.tokens")
    value_absent = models.CharField(
        "when the value is absent", max_length=8, choices=ValueAbsent.choices, default=ValueAbsent.INVALID,
        help_text="An event without the value property (missing or null): an event problem, or zero (for a field "
                  "a gateway sends only when it has something to count, e.g. $.cache_read_tokens). Only for SUM, "
                  "AVG, MIN, MAX and LATEST.")
    group_by = models.JSONField(default=dict, blank=True, help_text='Name → JSONPath, e.g. {"model": "$.model"}')
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    rollup_low = models.BigIntegerField(default=0, editable=False)
    # The newest hour and day stored in the rollups: later buckets are plain inserts, no upsert needed.
    rollup_newest_hour = models.DateTimeField(null=True, editable=False)
    rollup_newest_day = models.DateTimeField(null=True, editable=False)
    definition_version = models.PositiveIntegerField(default=1, editable=False)
    # Why the aggregator last failed on this meter (empty when its last run succeeded); the other meters go on.
    rollup_error = models.TextField(blank=True, editable=False)
    rollup_failed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        """What pickers and lists show: the name people gave it, with the slug beside it."""
        return f"{self.name} ({self.slug})" if self.name and self.name != self.slug else self.slug


class UsageSeries(models.Model):
    """One meter × subject × group-by values: what a row of rollups is about.

    The rollups refer to their series by id, so their rows and their one index stay narrow (the subject
    and the JSON group object once per series instead of once per hour), which is what keeps folding
    millions of events a minute cheap. Only the aggregator creates series.
    """

    meter = models.ForeignKey(Meter, on_delete=models.CASCADE, db_index=False, related_name="+")
    subject = models.CharField(max_length=CLOUDEVENT_STRING_MAX)
    # The group-by values as text (usage_sql.group_key_from_columns): what the aggregator joins on.
    group_key = models.TextField()
    group_values = models.JSONField(default=dict)

    class Meta:
        verbose_name_plural = "usage series"
        constraints = [models.UniqueConstraint(fields=["meter", "subject", "group_key"], name="metering_series_key")]

    def __str__(self) -> str:
        return f"{self.meter_id} {self.subject} {self.group_values}"


class UsageRollup(models.Model):
    """Pre-aggregated usage of one series (meter × subject × group-by values) in one time bucket.

    Derived data, rebuilt from raw events at will: the series reference has no database foreign-key
    constraint (checking it at every commit of a chunk costs more than the rest of the commit), and
    Django still deletes the rows with their series. The primary key is (series, bucket_start).
    """

    pk = models.CompositePrimaryKey("series", "bucket_start")
    series = models.ForeignKey(UsageSeries, on_delete=models.CASCADE, db_constraint=False, db_index=False,
                               related_name="+")
    bucket_start = models.DateTimeField()
    event_count = models.BigIntegerField(default=0)
    value_count = models.BigIntegerField(default=0)
    value_sum = models.DecimalField(max_digits=40, decimal_places=12, default=0)
    value_min = models.DecimalField(max_digits=40, decimal_places=12, null=True)
    value_max = models.DecimalField(max_digits=40, decimal_places=12, null=True)
    latest_time = models.DateTimeField(null=True)
    latest_event = models.BigIntegerField(null=True)
    latest_value = models.DecimalField(max_digits=40, decimal_places=12, null=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.series_id} {self.bucket_start:%Y-%m-%d %H:%M}"


class HourlyUsage(UsageRollup):
    pass


class DailyUsage(UsageRollup):
    """UTC days, derived from the same pass as the hours: long ranges read 24× fewer rows."""

    class Meta:
        # The dashboard's "last 30 days" across meters; days are appended roughly in time order, so cheap.
        indexes = [models.Index(fields=["bucket_start"], name="metering_daily_time")]


class HourlyDistinctValue(models.Model):
    """The distinct values seen per series and hour, for exact UNIQUE_COUNT meters."""

    pk = models.CompositePrimaryKey("series", "bucket_start", "value")
    series = models.ForeignKey(UsageSeries, on_delete=models.CASCADE, db_constraint=False, db_index=False,
                               related_name="+")
    bucket_start = models.DateTimeField()
    value = models.TextField()

    def __str__(self) -> str:
        return f"{self.series_id} {self.bucket_start:%Y-%m-%d %H:%M} {self.value}"


class AggregationCursor(models.Model):
    """High-water marks of aggregators that are not per meter (subject and event-type activity)."""

    name = models.CharField(max_length=64, unique=True)
    low = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} < {self.low}"


class SubjectActivity(models.Model):
    """Per subject: how many events, first and last seen. Kept by the aggregator, not by ingest."""

    subject = models.CharField(max_length=CLOUDEVENT_STRING_MAX, unique=True)
    event_count = models.BigIntegerField(default=0)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    last_ingested_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "subject activity"

    def __str__(self) -> str:
        return self.subject


class EventTypeActivity(models.Model):
    type = models.CharField(max_length=CLOUDEVENT_STRING_MAX, unique=True)
    event_count = models.BigIntegerField(default=0)
    last_seen = models.DateTimeField()

    class Meta:
        verbose_name_plural = "event type activity"

    def __str__(self) -> str:
        return self.type
