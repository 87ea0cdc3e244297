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


CHUNK = 5_000  # values per IN (…) list: well below SQLite's limit on a statement's variables


@transaction.atomic
def _store(consumers: list[KongConsumerData], admin_url: str) -> ImportResult:
    """New consumers are created, changed ones updated, in a few statements however many there are. A username
    moved to another consumer id is given up by the row that had it (also between two consumers of this import:
    the last one named wins, as Kong's own uniqueness would have it)."""
    existing = {
        c.kong_id: c for c in KongConsumer.objects.select_for_update().filter(kong_id__in=[c.id for c in consumers])
    }
    created: list[KongConsumer] = []
    changed: list[KongConsumer] = []
    written: list[KongConsumer] = []  # created and changed, in the import's order (the last one naming a username wins)
    unchanged = 0
    for data in consumers:
        fields = {"username": data.username, "custom_id": data.custom_id or "", "tags": data.tags,
                  "admin_url": admin_url}
        current = existing.get(data.id)
        if current is None:
            current = KongConsumer(kong_id=data.id, **fields)
            created.append(current)
        elif any(getattr(current, k) != v for k, v in fields.items() if k != "admin_url"):
            for name, value in fields.items():
                setattr(current, name, value)
            changed.append(current)
        else:
            unchanged += 1
            continue
        written.append(current)
    owner = {row.username: row.kong_id for row in written if row.username}
    for row in written:
        if row.username and owner[row.username] != row.kong_id:
            row.username = None
    _release_usernames(owner)
    KongConsumer.objects.bulk_update(changed, ["username", "custom_id", "tags", "admin_url"], batch_size=CHUNK)
    KongConsumer.objects.bulk_create(created, batch_size=CHUNK)
    return ImportResult(len(created), len(changed), unchanged)


def _release_usernames(owner: dict[str, str]) -> None:
    """Rows holding a username this import gives another consumer id (username → kong id) give it up."""
    names = list(owner)
    releasing = []
    for at in range(0, len(names), CHUNK):
        holders = KongConsumer.objects.filter(username__in=names[at:at + CHUNK]).values_list("pk", "kong_id",
                                                                                              "username")
        releasing += [pk for pk, kong_id, username in holders if username is not None and owner[username] != kong_id]
    for at in range(0, len(releasing), CHUNK):
        KongConsumer.objects.filter(pk__in=releasing[at:at + CHUNK]).update(username=None)
