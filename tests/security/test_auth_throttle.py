"""Failed Bearer authentications are throttled per client IP: 429 with Retry-After (problem+json) past
``API_AUTH_FAILURES_PER_MINUTE``; valid tokens never counted or slowed; the client IP from REMOTE_ADDR, or from
X-Forwarded-For only as far as ``API_TRUSTED_PROXIES`` says."""

from __future__ import annotations

import os
import secrets

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.test import Client, RequestFactory

from metering import throttles
from metering.models import ApiToken
from metering.services.tokens import api_token_revoke
from metering.throttles import client_ip
from tests.builders import bearer, stopped_throttle_clock

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
MINUTE_START = 1_800_000_000 - 1_800_000_000 % 60  # a whole minute, so Retry-After is known


@pytest.fixture
def clock(monkeypatch):
    """The throttles' clock, stopped at 15 s into a minute; ``clock.now`` moves it."""
    return stopped_throttle_clock(monkeypatch, MINUTE_START + 15.0)


def guess(client: Client, **extra):
    return client.get("/api/v1/meters", **bearer("bbo_" + secrets.token_urlsafe(32)), **extra)


def test_500_guessed_tokens_get_429_after_the_threshold_and_a_valid_token_elsewhere_is_unaffected(
        clock, read_token, settings):
    assert settings.API_AUTH_FAILURES_PER_MINUTE == 20
    attacker, gateway = Client(REMOTE_ADDR="203.0.113.7"), Client(REMOTE_ADDR="198.51.100.20")
    answers = []
    for n in range(500):
        response = guess(attacker)
        answers.append(response.status_code)
        if n == 250:  # in the middle of the attack, from another address
            assert gateway.get("/api/v1/meters", **bearer(read_token)).status_code == 200
            assert guess(gateway).status_code == 401  # its own failures are its own
    assert answers == [401] * 20 + [429] * 480
    throttled = guess(attacker)
    assert throttled.status_code == 429 and throttled["Content-Type"] == PROBLEM
    assert throttled["Retry-After"] == "45"  # the seconds left in the minute
    body = throttled.json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests" and "203.0.113.7" in body["detail"]
    assert gateway.get("/api/v1/meters", **bearer(read_token)).status_code == 200


def test_the_next_minute_starts_afresh(clock):
    client = Client(REMOTE_ADDR="203.0.113.8")
    assert [guess(client).status_code for _ in range(21)][-2:] == [401, 429]
    clock.now = MINUTE_START + 59.5
    assert guess(client)["Retry-After"] == "1"
    clock.now = MINUTE_START + 60
    assert guess(client).status_code == 401


def test_valid_tokens_are_never_counted_nor_refused(clock, read_token, monkeypatch):
    client = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(25):
        guess(client)
    assert guess(client).status_code == 429

    def no_cache(*args, **kwargs):
        raise AssertionError("a valid token must not touch the throttle's cache")

    monkeypatch.setattr(throttles, "_window_add", no_cache)
    for _ in range(50):  # a gateway behind the same address keeps working, at full speed
        assert client.get("/api/v1/meters", **bearer(read_token)).status_code == 200


@pytest.mark.parametrize("header", ["Bearer", "Bearer bbo_\x00", "Bearer " + "x" * 10_240, "Bearer bbo_revoked"])
def test_every_kind_of_failure_counts(clock, header):
    client = Client(REMOTE_ADDR="203.0.113.10")
    answers = [client.get("/api/v1/meters", HTTP_AUTHORIZATION=header).status_code for _ in range(21)]
    assert answers == [401] * 20 + [429]


def test_revoked_tokens_count_as_failures(clock, make_token):
    plain = make_token("read")
    api_token_revoke(token=ApiToken.objects.get())
    client = Client(REMOTE_ADDR="203.0.113.11")
    answers = [client.get("/api/v1/meters", **bearer(plain)).status_code for _ in range(21)]
    assert answers == [401] * 20 + [429]


def test_other_schemes_and_anonymous_requests_are_not_counted(clock):
    client = Client(REMOTE_ADDR="203.0.113.12")
    for _ in range(30):
        assert client.get("/api/v1/meters").status_code == 401
        assert client.get("/api/v1/meters", HTTP_AUTHORIZATION="Basic dXNlcjpwYXNz").status_code == 401
    assert guess(client).status_code == 401


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(clock):
    client = Client(REMOTE_ADDR="203.0.113.13")
    answers = [guess(client, HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code for n in range(21)]
    assert answers[-1] == 429  # a client cannot dodge the throttle by inventing addresses


def test_behind_one_trusted_proxy_the_client_is_the_last_forwarded_address(clock, settings, read_token):
    settings.API_TRUSTED_PROXIES = 1
    proxy = Client(REMOTE_ADDR="10.0.0.1")
    # The attacker writes its own X-Forwarded-For; the proxy appends the address it saw.
    answers = [guess(proxy, HTTP_X_FORWARDED_FOR=f"1.2.3.{n}, 203.0.113.14").status_code for n in range(21)]
    assert answers[-1] == 429 and answers[:20] == [401] * 20
    assert guess(proxy, HTTP_X_FORWARDED_FOR="203.0.113.15").status_code == 401  # another client, same proxy
    assert proxy.get("/api/v1/meters", HTTP_X_FORWARDED_FOR="203.0.113.14", **bearer(read_token)).status_code == 200


@pytest.mark.parametrize("proxies, forwarded, remote, expected", [
    (0, "1.1.1.1", "10.0.0.1", "10.0.0.1"),
    (1, "1.1.1.1", "10.0.0.1", "1.1.1.1"),
    (1, "6.6.6.6, 1.1.1.1", "10.0.0.1", "1.1.1.1"),
    (2, "6.6.6.6, 1.1.1.1, 10.0.0.2", "10.0.0.1", "1.1.1.1"),
    (3, "1.1.1.1, 10.0.0.2", "10.0.0.1", "1.1.1.1"),  # fewer entries than proxies: the leftmost
    (1, "", "10.0.0.1", "10.0.0.1"),
    (1, "not-an-ip", "10.0.0.1", "10.0.0.1"),
    (1, "1.1.1.1\x00", "10.0.0.1", "10.0.0.1"),
    (1, "9" * 5000, "10.0.0.1", "10.0.0.1"),
    (1, "2001:DB8::0001", "10.0.0.1", "2001:db8::1"),
    (0, "", "", "unknown"),
    (0, "", "garbage", "unknown"),
])
def test_client_ip(settings, proxies, forwarded, remote, expected):
    settings.API_TRUSTED_PROXIES = proxies
    request = RequestFactory().get("/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=forwarded)
    assert client_ip(request) == expected


def test_zero_turns_the_throttle_off(clock, settings):
    settings.API_AUTH_FAILURES_PER_MINUTE = 0
    client = Client(REMOTE_ADDR="203.0.113.16")
    assert {guess(client).status_code for _ in range(40)} == {401}


def test_a_cache_outage_fails_open(clock, monkeypatch, caplog):
    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(throttles, "_window_add", down)
    client = Client(REMOTE_ADDR="203.0.113.17")
    assert {guess(client).status_code for _ in range(30)} == {401}
    assert "did not answer" in caplog.text


def test_locmem_counts_per_process(clock, monkeypatch):
    """What README says of development: two processes (two LocMemCache stores) each count on their own."""
    stores = [LocMemCache("worker-1", {}), LocMemCache("worker-2", {})]
    turn = iter(range(10_000))
    monkeypatch.setattr(throttles, "_cache", lambda: stores[next(turn) % 2])
    client = Client(REMOTE_ADDR="203.0.113.18")
    assert [guess(client).status_code for _ in range(40)] == [401] * 40  # 20 in each "worker"
    assert guess(client).status_code == 429


@pytest.mark.redis
def test_on_redis_the_count_is_shared_by_every_worker(clock, monkeypatch):
    """Two cache clients (two web workers) on one Redis: the 21st failure overall is refused, whichever worker
    answers it."""
    location = os.environ["REDIS_URL"]
    workers = [RedisCache(location, {"KEY_PREFIX": "throttle-test"}) for _ in range(2)]
    ip = f"203.0.113.{secrets.randbelow(200) + 20}"
    key = f"api-auth-fail:{ip}:{int(clock.now // 60)}"
    for worker in workers:
        worker.delete(key)
    turn = iter(range(10_000))
    monkeypatch.setattr(throttles, "_cache", lambda: workers[next(turn) % 2])
    client = Client(REMOTE_ADDR=ip)
    try:
        assert [guess(client).status_code for _ in range(21)] == [401] * 20 + [429]
        assert int(workers[0].get(key)) == 21
        ttl = workers[0]._cache.get_client(key).ttl(workers[0].make_and_validate_key(key))
        assert 0 < ttl <= 61  # the key goes with its minute
    finally:
        workers[0].delete(key)
