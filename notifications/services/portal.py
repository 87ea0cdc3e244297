"""Customer portal links: signed, expiring, revocable.

The token is ``<link id>.<nonce>`` signed with Django's :class:`~django.core.signing.TimestampSigner` (the
``SECRET_KEY``, a salt of its own): a tampered token fails the signature before any database read. The link row
stores only the nonce's SHA-256, so a database leak reveals no usable link; a link works while it is neither
expired (``PORTAL_LINK_DAYS``) nor revoked, and it opens exactly one customer's data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils import timezone

from customers.models import Customer

from ..models import PortalLink

SALT = "notifications.portal"
MAX_TOKEN_LENGTH = 200


@dataclass(frozen=True)
class SharedLink:
    link: PortalLink
    token: str  # shown once, in the URL /portal/<token>/


def _hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT, sep="~")


@transaction.atomic
def portal_link_create(*, customer: Customer, created_by=None, days: int | None = None,
                       now: dt.datetime | None = None) -> SharedLink:
    now = now or timezone.now()
    nonce = secrets.token_urlsafe(24)
    link = PortalLink.objects.create(customer=customer, nonce_hash=_hash(nonce), created_by=created_by,
                                     expires_at=now + dt.timedelta(days=days or settings.PORTAL_LINK_DAYS))
    return SharedLink(link, _signer().sign(f"{link.pk}.{nonce}"))


@transaction.atomic
def portal_link_revoke(*, link: PortalLink, now: dt.datetime | None = None) -> PortalLink:
    link = PortalLink.objects.select_for_update().get(pk=link.pk)
    if link.revoked_at is None:
        link.revoked_at = now or timezone.now()
        link.save(update_fields=["revoked_at"])
    return link


def portal_link_resolve(token: object, *, now: dt.datetime | None = None) -> PortalLink | None:
    """The live link a token opens, or None (bad signature, unknown, expired, revoked)."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        return None
    now = now or timezone.now()
    try:
        value = _signer().unsign(token, max_age=dt.timedelta(days=max(settings.PORTAL_LINK_DAYS, 1) * 4))
    except signing.BadSignature:
        return None
    pk, _, nonce = value.partition(".")
    if not pk.isdigit() or not nonce:
        return None
    link = PortalLink.objects.select_related("customer").filter(pk=int(pk), nonce_hash=_hash(nonce)).first()
    if link is None or link.revoked_at is not None or link.expires_at <= now:
        return None
    PortalLink.objects.filter(pk=link.pk).update(last_used_at=now)
    return link
