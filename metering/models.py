"""Models of the metering app: raw usage events and API tokens (meters and rollups join them later)."""

from __future__ import annotations

from django.conf import settings
from django.db import models

CLOUDEVENT_STRING_MAX = 255


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
        from .cloudevents import format_rfc3339

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
