"""Small per-process caches (``cachetools``) that web and worker threads may share.

cachetools' caches are not thread-safe (even a read may evict expired entries), so every operation holds a lock.
A cache with a ``ttl`` forgets an entry that many seconds after it was stored; one without keeps it until it is
among the least recently used of ``maxsize`` entries. Each process has its own copy: what one process forgets,
another forgets only when its own entry expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import Cache, LRUCache, TTLCache

V = TypeVar("V")


class ProcessCache(Generic[V]):
    """A thread-safe ``cachetools.TTLCache`` (``ttl`` seconds) or ``LRUCache`` (``ttl=None``) of ``maxsize``."""

    def __init__(self, *, maxsize: int, ttl: float | None, timer: Callable[[], float] = time.monotonic) -> None:
        self._cache: Cache[Hashable, V] = (
            LRUCache(maxsize=maxsize) if ttl is None else TTLCache(maxsize=maxsize, ttl=ttl, timer=timer)
        )
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            return self._cache.get(key)

    def set(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._cache[key] = value

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._cache.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)
