"""common.caches.ProcessCache: the per-process caches of tokens, features and entitlement rate cards."""

from __future__ import annotations

import threading
import time

from common.caches import ProcessCache


def test_an_entry_expires_after_its_ttl():
    cache: ProcessCache[str] = ProcessCache(maxsize=10, ttl=0.05)
    cache.set("k", "v")
    assert cache.get("k") == "v"
    time.sleep(0.1)
    assert cache.get("k") is None


def test_with_a_spread_entries_stored_together_expire_apart_and_never_after_the_ttl():
    clock = [0.0]
    cache: ProcessCache[int] = ProcessCache(maxsize=100, ttl=10, timer=lambda: clock[0], spread=0.5)
    for key in range(50):
        cache.set(key, key)
    clock[0] = 4.99  # none before half the ttl
    assert all(cache.get(key) == key for key in range(50))
    clock[0] = 7.5
    kept = sum(cache.get(key) is not None for key in range(50))
    assert 0 < kept < 50  # some, not all
    clock[0] = 10.0
    assert all(cache.get(key) is None for key in range(50))  # every one by the ttl
    assert cache.ttl == 10


def test_without_ttl_the_least_recently_used_entry_goes_first():
    cache: ProcessCache[int] = ProcessCache(maxsize=2, ttl=None)
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.set("c", 3)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    assert len(cache) == 2


def test_forget_and_clear():
    cache: ProcessCache[int] = ProcessCache(maxsize=10, ttl=60)
    cache.set("a", 1)
    cache.set("b", 2)
    cache.forget("a")
    cache.forget("missing")
    assert (cache.get("a"), cache.get("b")) == (None, 2)
    cache.clear()
    assert len(cache) == 0


def test_threads_share_one_cache_without_corrupting_it():
    cache: ProcessCache[int] = ProcessCache(maxsize=100, ttl=60)
    errors: list[BaseException] = []

    def hammer(offset: int) -> None:
        try:
            for i in range(2_000):
                cache.set((offset, i % 150), i)
                cache.get((offset, (i * 7) % 150))
                if i % 50 == 0:
                    cache.forget((offset, i % 150))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 100
