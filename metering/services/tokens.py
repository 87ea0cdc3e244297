"""API tokens: create (the plain token is returned once, only its hash is kept), set the ingest rate limit, and
revoke."""

from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from ..models import INGEST_RATE_LIMIT_MAX, ApiToken
from ..selectors.tokens import forget_token, hash_token

TOKEN_PREFIX = "bbo_"  # noqa: S105 - a public marker, not a secret
PREFIX_SHOWN = 12
VALID_SCOPES = frozenset(ApiToken.Scope.values)


class InvalidScope(ValueError):
    pass


class InvalidRateLimit(ValueError):
    pass


def _checked_rate_limit(value: object) -> int | None:
    """None (no limit) or whole events per second, 1 to ``INGEST_RATE_LIMIT_MAX``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= INGEST_RATE_LIMIT_MAX:
        raise InvalidRateLimit(f"The ingest rate limit must be a whole number of events per second from 1 to "
                               f"{INGEST_RATE_LIMIT_MAX:,}, or empty for no limit.")
    return value


def api_token_create(*, name: str, scopes: list[str], created_by=None,
                     ingest_rate_limit: int | None = None) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the plain token, which is never stored or shown again."""
    ingest_rate_limit = _checked_rate_limit(ingest_rate_limit)
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
        ingest_rate_limit=ingest_rate_limit,
    )
    return token, plain


@transaction.atomic
def api_token_set_rate_limit(*, token: ApiToken, ingest_rate_limit: int | None) -> ApiToken:
    """Change (or, with None, remove) a token's ingest rate limit. Web workers remember tokens for a few
    seconds, so the new limit applies everywhere within ``TOKEN_CACHE_SECONDS``."""
    ingest_rate_limit = _checked_rate_limit(ingest_rate_limit)
    token = ApiToken.objects.select_for_update().get(pk=token.pk)
    if token.revoked_at is not None:
        raise InvalidRateLimit("This token is revoked; its rate limit no longer matters.")
    if token.ingest_rate_limit != ingest_rate_limit:
        token.ingest_rate_limit = ingest_rate_limit
        token.save(update_fields=["ingest_rate_limit"])
    forget_token(token.token_hash)
    digest = token.token_hash
    transaction.on_commit(lambda: forget_token(digest))
    return token


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
