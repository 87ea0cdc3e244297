"""Secrets kept in the database (e.g. Stripe keys entered in the admin), encrypted with Fernet (AES-128-CBC +
HMAC-SHA256, from ``cryptography``).

The key is ``FIELD_ENCRYPTION_KEY`` when set (any text; a Fernet key works as well as a passphrase), otherwise
``SECRET_KEY``: either way it goes through HKDF-SHA256 with a purpose of its own, so the Fernet key is never
the setting itself and never the key Django signs sessions with. Changing the key makes stored secrets
unreadable (:class:`DecryptionError`): enter them again.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

__all__ = ["DecryptionError", "decrypt", "encrypt", "last4"]

_PURPOSE = b"billing: secrets stored in the database (Fernet)"


class DecryptionError(ValueError):
    """A stored secret that this key cannot read (the key changed, or the value is not ours)."""


def _fernet(secret: str | None = None) -> Fernet:
    material = secret if secret is not None else (getattr(settings, "FIELD_ENCRYPTION_KEY", "") or settings.SECRET_KEY)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_PURPOSE).derive(material.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(plaintext: str, *, secret: str | None = None) -> str:
    """The Fernet token (ASCII) of ``plaintext``; ``secret`` overrides the configured key (tests, rotation)."""
    return _fernet(secret).encrypt(plaintext.encode()).decode("ascii")


def decrypt(token: str, *, secret: str | None = None) -> str:
    """The plaintext of a token made by :func:`encrypt` with the same key, else :class:`DecryptionError`."""
    try:
        return _fernet(secret).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError, ValueError):
        raise DecryptionError("the stored secret cannot be read with the current key; enter it again") from None


def last4(secret: str) -> str:
    """What may be shown of a secret: its last four characters (nothing of one shorter than 12)."""
    return secret[-4:] if len(secret) >= 12 else ""
