"""Importing Kong consumers, all or nothing, idempotently."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from ..kong_admin import KongConsumerData, fetch_consumers
from ..models import KongConsumer


@dataclass(frozen=True)
class ImportResult:
    created: int
    updated: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.created + self.updated + self.unchanged


def kong_consumers_import(*, admin_url: str, token: str | None = None) -> ImportResult:
    """Fetch every page first; write only when all pages arrived (nothing half-imported)."""
    consumers = fetch_consumers(admin_url, token)
    return _store(consumers, admin_url)


@transaction.atomic
def _store(consumers: list[KongConsumerData], admin_url: str) -> ImportResult:
    created = updated = unchanged = 0
    existing = {
        c.kong_id: c for c in KongConsumer.objects.select_for_update().filter(kong_id__in=[c.id for c in consumers])
    }
    for data in consumers:
        fields = {
            "username": data.username,
            "custom_id": data.custom_id or "",
            "tags": data.tags,
            "admin_url": admin_url,
        }
        current = existing.get(data.id)
        if current is None:
            # a username moved to another consumer id: the old row gives it up
            if data.username:
                KongConsumer.objects.filter(username=data.username).exclude(kong_id=data.id).update(username=None)
            KongConsumer.objects.create(kong_id=data.id, **fields)
            created += 1
        elif any(getattr(current, k) != v for k, v in fields.items() if k != "admin_url"):
            if data.username:
                KongConsumer.objects.filter(username=data.username).exclude(kong_id=data.id).update(username=None)
            KongConsumer.objects.filter(pk=current.pk).update(**fields)
            updated += 1
        else:
            unchanged += 1
    return ImportResult(created, updated, unchanged)
