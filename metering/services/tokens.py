"""API tokens: create (the plain token is returned once, only its hash is kept) and revoke."""

from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from ..models import ApiToken
from ..selectors.tokens import forget_token, hash_token

TOKEN_PREFIX = "bbo_"  # noqa: S105 - a public marker, not a secret
PREFIX_SHOWN = 12
VALID_SCOPES = frozenset(ApiToken.Scope.values)


class InvalidScope(ValueError):
    pass


def api_token_create(*, name: str, scopes: list[str], created_by=None) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the plain token, which is never stored or shown again."""
    name = name.strip()
    if not name:
        raise ValueError("A token needs a name.")
    unknown = sorted(set(scopes) - VALID_SCOPES)
    if unknown:
        raise InvalidScope(f"Unknown scope(s): {', '.join(unknown)}. Valid scopes: {', '.join(sorted(VALID_SCOPES))}.")
    if not scopes:
        raise InvalidScope("A token needs at least one scope.")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        name=name,
        prefix=plain[:PREFIX_SHOWN],
        token_hash=hash_token(plain),
        scopes=sorted(set(scopes)),
        created_by=created_by,
    )
    return token, plain


@transaction.atomic
def api_token_revoke(*, token: ApiToken, revoked_by=None) -> ApiToken:
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.revoked_by = revoked_by
        token.save(update_fields=["revoked_at", "revoked_by"])
    forget_token(token.token_hash)  # now, and again after commit in case a request re-cached it meanwhile
    digest = token.token_hash
    transaction.on_commit(lambda: forget_token(digest))
    return token


def api_token_touch(*, token: ApiToken, min_interval_seconds: int = 60) -> None:
    """Record use, at most once a minute per token, so busy gateways do not write on every request."""
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() >= min_interval_seconds:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
