"""Fixtures of the security tests: the matrix's world, built once per module; throttle counters that start empty."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from metering import throttles
from tests.builders import built_once
from tests.security.matrix import build_world
from tests.security.wsgi_calls import django_app, keep_connection  # noqa: F401 (fixtures, registered here)


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker):
    with built_once(django_db_blocker):
        yield build_world()


@pytest.fixture(autouse=True)
def fresh_throttles(settings):
    """The throttles count in the default cache; counts must not carry over between tests (the tests stop the
    throttles' clock, so their windows have the same keys). On Redis only the throttles' keys go."""
    clear_throttles()
    yield


def clear_throttles() -> None:
    """Every throttle count, in this process and in the cache, back to nothing."""
    throttles._slices.clear()
    cache = caches[settings.API_THROTTLE_CACHE]
    if isinstance(cache, LocMemCache):
        cache.clear()
    elif isinstance(cache, RedisCache):
        client = cache._cache.get_client(write=True)
        for pattern in ("*api-auth-fail:*", "*api-ingest-rate:*"):
            for key in client.scan_iter(match=pattern):
                client.delete(key)
