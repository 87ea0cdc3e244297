"""The portal's rate limit: ``PORTAL_REQUESTS_PER_MINUTE`` per client address and per link, counted in the cache
(fixed one-minute windows; fails open when the cache does not answer)."""

from __future__ import annotations

import hashlib
import logging
import math
import time

from django.conf import settings
from django.core.cache import caches

from metering.throttles import client_ip

logger = logging.getLogger(__name__)
WINDOW = 60


def _count(key: str) -> int:
    cache = caches[getattr(settings, "API_THROTTLE_CACHE", "default")]
    cache.add(key, 0, WINDOW + 1)
    try:
        return int(cache.incr(key))
    except ValueError:
        cache.add(key, 1, WINDOW + 1)
        return 1


def portal_wait(request, token: str = "") -> int:
    """Seconds to wait when the client or the link is over the limit this minute, else 0."""
    limit = settings.PORTAL_REQUESTS_PER_MINUTE
    if limit <= 0:
        return 0
    now = time.time()
    window = int(now // WINDOW)
    try:
        counts = [_count(f"portal:ip:{client_ip(request)}:{window}")]
        if token:
            digest = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:32]
            counts.append(_count(f"portal:link:{digest}:{window}"))
    except Exception:  # fail open
        logger.warning("portal throttle: the cache did not answer", exc_info=True)
        return 0
    return max(1, math.ceil((window + 1) * WINDOW - now)) if max(counts) > limit else 0
