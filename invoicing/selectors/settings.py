"""Settings → Company and Settings → Stripe, as read by documents, the Stripe gateway and the admin."""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError

from common.caches import ProcessCache
from common.crypto import DecryptionError, decrypt

from ..models import CompanyProfile, StripeSettings, StripeWebhookEvent
from ..services.stripe_webhooks import HANDLERS
from ..stripe_gateway import key_mode

logger = logging.getLogger(__name__)

SINGLETON = 1
# Keys stored in the admin, per process, for this many seconds: every issue asks whether Stripe is configured,
# and the close's queries per invoice stay constant. Saving keys forgets them in the saving process at once.
STORED_KEYS_TTL = 30
_stored_keys_cache: ProcessCache[tuple[str, str]] = ProcessCache(maxsize=1, ttl=STORED_KEYS_TTL)
WEBHOOK_EVENT_TYPES = tuple(HANDLERS)


def company_profile() -> CompanyProfile:
    """The company (pk 1), or an unsaved blank one before anyone filled it in."""
    return CompanyProfile.objects.filter(pk=SINGLETON).first() or CompanyProfile(pk=SINGLETON)


def logo_data_uri(company: CompanyProfile) -> str:
    """The logo as a ``data:`` URI for the documents (HTML and PDF alike), or ``""``."""
    if not company.logo or company.logo_content_type not in ("image/png", "image/jpeg"):
        return ""
    return f"data:{company.logo_content_type};base64,{base64.b64encode(bytes(company.logo)).decode('ascii')}"


def stripe_settings() -> StripeSettings:
    return StripeSettings.objects.filter(pk=SINGLETON).first() or StripeSettings(pk=SINGLETON)


def _read_stored_keys() -> tuple[str, str]:
    try:
        row = StripeSettings.objects.filter(pk=SINGLETON).first()
    except DatabaseError:  # before the migration ran
        return "", ""
    if row is None:
        return "", ""
    keys = []
    for token in (row.api_key_encrypted, row.webhook_secret_encrypted):
        try:
            keys.append(decrypt(token) if token else "")
        except DecryptionError:
            logger.warning("a Stripe key stored in Settings → Stripe cannot be decrypted (the key changed?)")
            keys.append("")
    return keys[0], keys[1]


def stored_stripe_keys() -> tuple[str, str]:
    """(API key, webhook secret) entered in Settings → Stripe, decrypted; ``""`` for each one not stored or not
    readable with the current key. Cached per process (:data:`STORED_KEYS_TTL`)."""
    cached = _stored_keys_cache.get("keys")
    if cached is None:
        cached = _read_stored_keys()
        _stored_keys_cache.set("keys", cached)
    return cached


def forget_stored_stripe_keys() -> None:
    _stored_keys_cache.clear()


def remember_no_stored_stripe_keys() -> None:
    """For tests: this process knows no stored keys, without asking the database."""
    _stored_keys_cache.set("keys", ("", ""))


@dataclass(frozen=True)
class KeyStatus:
    source: str  # "environment", "stored", or "" (none)
    last4: str
    unreadable: bool = False


@dataclass(frozen=True)
class StripeStatus:
    mode: str  # sandbox / test / live
    api_key: KeyStatus
    webhook_secret: KeyStatus
    settings: StripeSettings
    last_webhook: StripeWebhookEvent | None
    event_types: tuple[str, ...]


def _key_status(env_value: str, token: str, stored_last4: str) -> KeyStatus:
    if env_value.strip():
        return KeyStatus("environment", env_value.strip()[-4:] if len(env_value.strip()) >= 12 else "")
    if token:
        try:
            decrypt(token)
        except DecryptionError:
            return KeyStatus("stored", stored_last4, unreadable=True)
        return KeyStatus("stored", stored_last4)
    return KeyStatus("", "")


def stripe_status() -> StripeStatus:
    """What Settings → Stripe shows: the mode the active key gives, where each key comes from (the environment
    wins over what is stored), the last webhook received and the event types to select in Stripe."""
    row = stripe_settings()
    api_key = _key_status(settings.STRIPE_API_KEY, row.api_key_encrypted, row.api_key_last4)
    secret = _key_status(settings.STRIPE_WEBHOOK_SECRET, row.webhook_secret_encrypted, row.webhook_secret_last4)
    if api_key.source == "environment":
        mode = key_mode(settings.STRIPE_API_KEY)
    elif api_key.source == "stored" and not api_key.unreadable:
        mode = key_mode(_read_stored_keys()[0])
    else:
        mode = "sandbox"
    return StripeStatus(mode=mode, api_key=api_key, webhook_secret=secret, settings=row,
                        last_webhook=StripeWebhookEvent.objects.select_related("invoice").first(),
                        event_types=WEBHOOK_EVENT_TYPES)
