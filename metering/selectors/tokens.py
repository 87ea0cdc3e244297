"""Looking up API tokens, with a short per-process cache so busy gateways do not query on every request.

A revoked token stops working at once in the process that revoked it and within ``TOKEN_CACHE_SECONDS`` in
the other web workers. Unknown and revoked tokens are never cached.
"""

from __future__ import annotations

import threading
import time

from ..models import ApiToken
from ..services.tokens import hash_token

TOKEN_CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, ApiToken]] = {}
_lock = threading.Lock()


def api_token_by_plain(plain: str) -> ApiToken | None:
    """The active token with this value, or None (unknown or revoked)."""
    if not plain:
        return None
    digest = hash_token(plain)
    now = time.monotonic()
    with _lock:
        cached = _cache.get(digest)
    if cached is not None and now - cached[0] < TOKEN_CACHE_SECONDS:
        return cached[1]
    token = ApiToken.objects.filter(token_hash=digest).first()
    if token is None or token.revoked_at is not None:
        with _lock:
            _cache.pop(digest, None)
        return None
    with _lock:
        if len(_cache) > 10_000:
            _cache.clear()
        _cache[digest] = (now, token)
    return token


def forget_token(token_hash: str) -> None:
    with _lock:
        _cache.pop(token_hash, None)


def forget_cached_tokens() -> None:
    with _lock:
        _cache.clear()
