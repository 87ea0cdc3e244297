"""Looking up API tokens, with a short per-process cache so busy gateways do not query on every request.

A revoked token stops working at once in the process that revoked it and within ``TOKEN_CACHE_SECONDS`` in
the other web workers. Unknown and revoked tokens are never cached.
"""

from __future__ import annotations

import hashlib

from common.caches import ProcessCache

from ..models import ApiToken

TOKEN_CACHE_SECONDS = 5.0
TOKEN_CACHE_SIZE = 10_000
_tokens: ProcessCache[ApiToken] = ProcessCache(maxsize=TOKEN_CACHE_SIZE, ttl=TOKEN_CACHE_SECONDS,
                                               spread=0.5)


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings, so a fast hash is enough: nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_by_plain(plain: str) -> ApiToken | None:
    """The active token with this value, or None (unknown or revoked)."""
    if not plain:
        return None
    digest = hash_token(plain)
    cached = _tokens.get(digest)
    if cached is not None:
        return cached
    token = ApiToken.objects.filter(token_hash=digest).first()
    if token is None or token.revoked_at is not None:
        _tokens.forget(digest)
        return None
    _tokens.set(digest, token)
    return token


def forget_token(token_hash: str) -> None:
    _tokens.forget(token_hash)


def forget_cached_tokens() -> None:
    _tokens.clear()
