"""API throttles, counted in Django's cache: failed Bearer authentications per client IP, and per-token ingest
rates.

Both are fixed-window counters (one ``INCRBY`` per request, the key expiring with its window). With Redis (the
cache whenever ``REDIS_URL`` is set, as in production) every web worker and machine shares the counts; with the
development default (``LocMemCache``) each process counts on its own, so N workers allow up to N times the limit.

Throttles fail open: when the cache does not answer, the request goes on as if nothing were counted (logged), so a
Redis outage never stops ingest or authentication.

- **Authentication failures**: after ``API_AUTH_FAILURES_PER_MINUTE`` failed Bearer authentications (unknown,
  revoked or malformed token) from one client IP within a clock minute, the next failures of that minute answer
  429 with ``Retry-After``. A valid token is never counted or slowed (no cache access), even from that address.
- **Ingest rate** (optional per token, ``ApiToken.ingest_rate_limit`` events per second): the events of a window
  of ``API_INGEST_RATE_WINDOW_SECONDS`` may add up to limit × window; a request whose events would go beyond it is
  refused with 429 and ``Retry-After`` (and its events do not count). Workers take the budget in slices (see
  :class:`_Slices`), so a busy token costs a few cache round trips per window, not one per request. A token
  without a limit costs nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import threading
import time

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework import exceptions

from .models import ApiToken

logger = logging.getLogger(__name__)

AUTH_FAILURE_WINDOW_SECONDS = 60


class Throttled(exceptions.Throttled):
    """429 with ``Retry-After`` (set by DRF from ``wait``), answered as problem+json."""

    def __init__(self, wait: float, detail: str) -> None:
        super().__init__(wait=max(1, math.ceil(wait)), detail=detail)


class BatchOverRateLimit(exceptions.APIException):
    """413: one request carries more events than the token may post in a whole window, so retrying never helps.
    (Not ``common.problems.Problem``: this module is imported while DRF loads its settings.)"""

    status_code = 413


def _now() -> float:
    return time.time()


def _cache():
    return caches[getattr(settings, "API_THROTTLE_CACHE", "default")]


def _window_add(key: str, amount: int, ttl: int) -> int:
    """Add ``amount`` to the counter ``key`` (created with ``ttl`` seconds to live); the new count (a fixed window:
    the caller puts the window's number in the key).

    On Redis, one round trip (``SET NX EX`` and ``INCRBY`` pipelined); on other backends ``add`` then ``incr``.
    """
    cache = _cache()
    if isinstance(cache, RedisCache):
        full_key = cache.make_and_validate_key(key)
        client = cache._cache.get_client(full_key, write=True)
        pipe = client.pipeline(transaction=False)
        pipe.set(full_key, 0, ex=ttl, nx=True)
        pipe.incrby(full_key, amount)
        return int(pipe.execute()[1])
    cache.add(key, 0, ttl)
    try:
        return cache.incr(key, amount)
    except ValueError:  # expired between add and incr
        cache.add(key, amount, ttl)
        return amount


def _window_take_back(key: str, amount: int) -> None:
    cache = _cache()
    if isinstance(cache, RedisCache):
        full_key = cache.make_and_validate_key(key)
        cache._cache.get_client(full_key, write=True).decrby(full_key, amount)
        return
    with contextlib.suppress(ValueError):  # the window is over: nothing to give back
        cache.decr(key, amount)


# --- the client's address ----------------------------------------------------------------------------------------

def client_ip(request) -> str:
    """The client's IP address: ``REMOTE_ADDR``, or, when ``API_TRUSTED_PROXIES`` = N > 0 proxies stand in front of
    the application (each appending the address it received from to ``X-Forwarded-For``), the address the
    outermost trusted proxy saw: the N-th entry from the right. Entries left of it are written by the client and
    never trusted. Anything that is not an IP address falls back to ``REMOTE_ADDR``."""
    meta = getattr(request, "META", {})
    remote = _ip_or_none(meta.get("REMOTE_ADDR", "")) or "unknown"
    proxies = getattr(settings, "API_TRUSTED_PROXIES", 0)
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in str(meta.get("HTTP_X_FORWARDED_FOR", "")).split(",") if part.strip()]
    if not forwarded:
        return remote
    candidate = forwarded[-proxies] if len(forwarded) >= proxies else forwarded[0]
    return _ip_or_none(candidate) or remote


def _ip_or_none(value: str) -> str | None:
    if not value or len(value) > 64:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


# --- failed authentications --------------------------------------------------------------------------------------

def auth_failure_record(request) -> None:
    """Count a failed Bearer authentication from the request's client IP; raise 429 when the IP is over the
    limit for this minute (``API_AUTH_FAILURES_PER_MINUTE``; 0 turns the throttle off)."""
    limit = getattr(settings, "API_AUTH_FAILURES_PER_MINUTE", 20)
    if limit <= 0:
        return
    now = _now()
    window = int(now // AUTH_FAILURE_WINDOW_SECONDS)
    ip = client_ip(request)
    try:
        count = _window_add(f"api-auth-fail:{ip}:{window}", 1, AUTH_FAILURE_WINDOW_SECONDS + 1)
    except Exception:  # fail open: a cache outage must not turn every bad token into a 500
        logger.warning("API authentication throttle: the cache did not answer", exc_info=True)
        return
    if count > limit:
        wait = (window + 1) * AUTH_FAILURE_WINDOW_SECONDS - now
        raise Throttled(wait, f"Too many failed authentications from {ip}: at most {limit} a minute. "
                              f"Retry in {max(1, math.ceil(wait))} s with a valid token.")


# --- per-token ingest rate ---------------------------------------------------------------------------------------

class _Slices:
    """This process's unspent slices of tokens' window budgets: (counter key) → events still free to post.

    A worker takes budget from the shared counter in slices of at least 1/``SLICES_PER_WINDOW`` of a window's
    allowance, and spends them locally: a token posting at its limit costs about ``SLICES_PER_WINDOW`` cache round
    trips per window per worker, whatever the number of requests. What a worker holds unspent when the window
    ends is lost, so with N workers up to N/``SLICES_PER_WINDOW`` of a window may go unused (refused early).
    """

    def __init__(self) -> None:
        self._free: dict[str, int] = {}
        self._lock = threading.Lock()

    def spend(self, key: str, events: int) -> int:
        """Take up to ``events`` from the slice of ``key``; how many are still missing."""
        with self._lock:
            free = self._free.get(key, 0)
            taken = min(free, events)
            if taken:
                self._free[key] = free - taken
            return events - taken

    def give(self, key: str, events: int, *, window_suffix: str) -> None:
        """Keep ``events`` for later requests; forget slices of windows that are over."""
        with self._lock:
            for old in [k for k in self._free if not k.endswith(window_suffix)]:
                del self._free[old]
            self._free[key] = self._free.get(key, 0) + events

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


SLICES_PER_WINDOW = 100
_slices = _Slices()


def ingest_rate_charge(token: ApiToken | None, events: int) -> None:
    """Charge ``events`` to the token's ingest rate; 429 when they would go beyond it (they are not counted
    then), 413 when one request carries more than a whole window allows. Tokens without a limit: nothing."""
    limit = token.ingest_rate_limit if token is not None else None
    if not limit or events <= 0:
        return
    assert token is not None
    window_seconds = max(1, int(getattr(settings, "API_INGEST_RATE_WINDOW_SECONDS", 10)))
    allowance = limit * window_seconds
    if events > allowance:
        raise BatchOverRateLimit(f"This request carries {events:,} events; this token may post at most "
                                 f"{limit:,} events a second, {allowance:,} per {window_seconds} s window. "
                                 "Split the batch.")
    now = _now()
    window = int(now // window_seconds)
    suffix = f":{window}"
    key = f"api-ingest-rate:{token.token_hash}{suffix}"
    missing = _slices.spend(key, events)
    if not missing:
        return  # paid from this worker's slice: no cache round trip
    try:
        # A slice for this and the next requests; when the window cannot give that much, just what is missing.
        for take in dict.fromkeys((max(missing, allowance // SLICES_PER_WINDOW), missing)):
            if _window_add(key, take, window_seconds + 1) <= allowance:
                _slices.give(key, take - missing, window_suffix=suffix)
                return
            _window_take_back(key, take)
    except Exception:  # fail open: a cache outage must not stop ingest
        logger.warning("API ingest rate limit: the cache did not answer", exc_info=True)
        return
    _slices.give(key, events - missing, window_suffix=suffix)  # what this worker had stays its own
    wait = (window + 1) * window_seconds - now
    raise Throttled(wait, f"This token may post {limit:,} events a second ({allowance:,} per {window_seconds} s "
                          f"window); this window is used up. Retry in {max(1, math.ceil(wait))} s.")
