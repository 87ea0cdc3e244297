"""Looking up API tokens."""

from __future__ import annotations

from ..models import ApiToken
from ..services.tokens import hash_token


def api_token_by_plain(plain: str) -> ApiToken | None:
    """The active token with this value, or None (unknown or revoked)."""
    if not plain:
        return None
    token = ApiToken.objects.filter(token_hash=hash_token(plain)).first()
    if token is None or token.revoked_at is not None:
        return None
    return token
