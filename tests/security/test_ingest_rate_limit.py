"""The optional per-token ingest rate limit: set by the service, the command and the admin (hostile values refused),
counted per event over fixed windows in the cache, 429 with Retry-After beyond it (413 for a batch no window could
hold), refused events not counted, and nothing at all for tokens without a limit."""

from __future__ import annotations

import io
import os
import secrets

import pytest
from django.core.cache.backends.redis import RedisCache
from django.core.management import CommandError, call_command
from django.test import Client

from metering import throttles
from metering.models import INGEST_RATE_LIMIT_MAX, ApiToken, Event
from metering.services.tokens import (
    InvalidRateLimit,
    api_token_create,
    api_token_revoke,
    api_token_set_rate_limit,
    hash_token,
)
from tests.builders import bearer, body, llm_event, stopped_throttle_clock

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
BATCH = "application/cloudevents-batch+json"
WINDOW_START = 1_800_000_000 - 1_800_000_000 % 10


@pytest.fixture
def clock(monkeypatch):
    """The throttles' clock, stopped 3 s into a 10-second window."""
    return stopped_throttle_clock(monkeypatch, WINDOW_START + 3.0)


def limited(limit: int | None, name: str = "gateway") -> str:
    return api_token_create(name=name, scopes=["ingest"], ingest_rate_limit=limit)[1]


def post(token: str, events: int, path: str = "/api/v1/events", client: Client | None = None):
    batch = [llm_event(event_id=secrets.token_hex(8)) for _ in range(events)]
    return (client or Client()).generic("POST", path, body(batch), content_type=BATCH, **bearer(token))


# --- setting it -------------------------------------------------------------------------------------------------

def test_the_service_stores_changes_and_removes_a_limit():
    token, _ = api_token_create(name="gw", scopes=["ingest"], ingest_rate_limit=500)
    assert ApiToken.objects.get().ingest_rate_limit == 500
    assert api_token_set_rate_limit(token=token, ingest_rate_limit=50).ingest_rate_limit == 50
    assert api_token_set_rate_limit(token=token, ingest_rate_limit=None).ingest_rate_limit is None
    assert ApiToken.objects.get().ingest_rate_limit is None
    assert api_token_create(name="free", scopes=["ingest"])[0].ingest_rate_limit is None


@pytest.mark.parametrize("value", [0, -1, True, "5", 1.5, INGEST_RATE_LIMIT_MAX + 1, 2**63, [5]])
def test_the_service_refuses_bad_limits(value):
    with pytest.raises(InvalidRateLimit):
        api_token_create(name="gw", scopes=["ingest"], ingest_rate_limit=value)
    assert ApiToken.objects.count() == 0
    token, _ = api_token_create(name="gw", scopes=["ingest"], ingest_rate_limit=7)
    with pytest.raises(InvalidRateLimit):
        api_token_set_rate_limit(token=token, ingest_rate_limit=value)
    assert ApiToken.objects.get().ingest_rate_limit == 7


def test_a_revoked_token_keeps_its_limit():
    token, _ = api_token_create(name="gw", scopes=["ingest"], ingest_rate_limit=7)
    api_token_revoke(token=token)
    with pytest.raises(InvalidRateLimit):
        api_token_set_rate_limit(token=token, ingest_rate_limit=8)


def test_the_command_takes_a_rate_limit():
    out = io.StringIO()
    call_command("create_api_token", "kong-prod", "--scope", "ingest", "--rate-limit", "250", stdout=out)
    token = ApiToken.objects.get()
    assert token.ingest_rate_limit == 250 and "at most 250 events/s" in out.getvalue()
    assert token.token_hash == hash_token(out.getvalue().strip().splitlines()[-1])


@pytest.mark.parametrize("value", ["0", "-5", "abc", "1e3", "99999999999", "5\x00", ""])
def test_the_command_refuses_bad_rate_limits(value):
    with pytest.raises(CommandError):
        call_command("create_api_token", "x", "--scope", "ingest", "--rate-limit", value, stdout=io.StringIO(),
                     stderr=io.StringIO())
    assert ApiToken.objects.count() == 0


def test_the_admin_sets_the_limit_when_creating_a_token(admin_client):
    response = admin_client.post("/admin/metering/apitoken/add/",
                                 {"name": "kong", "scopes": ["ingest"], "ingest_rate_limit": "250"})
    assert response.status_code == 200 and "cannot be shown again" in response.content.decode()
    assert ApiToken.objects.get().ingest_rate_limit == 250
    listing = admin_client.get("/admin/metering/apitoken/").content.decode()
    assert "250 events/s" in listing


@pytest.mark.parametrize("value", ["0", "-1", "abc", "1e3", "2.5", "99999999999", "5\x00", "5 5"])
def test_the_admin_refuses_bad_limits_with_a_form_error(admin_client, value):
    response = admin_client.post("/admin/metering/apitoken/add/",
                                 {"name": "kong", "scopes": ["ingest"], "ingest_rate_limit": value})
    assert response.status_code == 200
    assert "ingest_rate_limit" in response.context["adminform"].form.errors
    assert ApiToken.objects.count() == 0


def test_the_admin_changes_only_the_limit_afterwards(admin_client):
    token, plain = api_token_create(name="kong", scopes=["ingest"])
    url = f"/admin/metering/apitoken/{token.pk}/change/"
    page = admin_client.get(url).content.decode()
    assert 'name="ingest_rate_limit"' in page and 'name="name"' not in page and 'name="scopes"' not in page
    response = admin_client.post(url, {"ingest_rate_limit": "40", "name": "renamed", "scopes": ["manage"],
                                       "_save": "Save"})
    assert response.status_code == 302
    token.refresh_from_db()
    assert (token.ingest_rate_limit, token.name, token.scopes) == (40, "kong", ["ingest"])
    bad = admin_client.post(url, {"ingest_rate_limit": "-3", "_save": "Save"})
    assert bad.status_code == 200 and "ingest_rate_limit" in bad.context["adminform"].form.errors
    assert admin_client.post(url, {"ingest_rate_limit": "", "_save": "Save"}).status_code == 302
    token.refresh_from_db()
    assert token.ingest_rate_limit is None
    api_token_revoke(token=token)
    assert admin_client.post(url, {"ingest_rate_limit": "5", "_save": "Save"}).status_code == 403
    token.refresh_from_db()
    assert token.ingest_rate_limit is None


# --- ingest beyond it -------------------------------------------------------------------------------------------

def test_beyond_the_limit_ingest_answers_429_with_retry_after(clock):
    token = limited(10)  # 10 events/s: 100 per 10-second window
    assert post(token, 100).status_code == 204
    refused = post(token, 1)
    assert refused.status_code == 429 and refused["Content-Type"] == PROBLEM
    assert refused["Retry-After"] == "7"  # 3 s into the window
    assert refused.json()["status"] == 429 and "10 events a second" in refused.json()["detail"]
    assert Event.objects.count() == 100
    clock.now = WINDOW_START + 10  # the next window
    assert post(token, 100).status_code == 204
    assert Event.objects.count() == 200


def test_a_batch_of_1000_counts_1000(clock):
    token = limited(100)
    assert post(token, 1000).status_code == 204
    assert post(token, 1).status_code == 429
    assert Event.objects.count() == 1000


def test_refused_events_do_not_count(clock):
    token = limited(10)
    assert post(token, 60).status_code == 204
    assert post(token, 60).status_code == 429  # 120 > 100: refused, and not charged
    assert post(token, 40).status_code == 204  # 60 + 40 = 100
    assert post(token, 1).status_code == 429
    assert Event.objects.count() == 100


def test_a_batch_no_window_could_hold_is_413_not_429(clock):
    token = limited(5)  # 50 per window
    response = post(token, 51)
    assert response.status_code == 413 and response["Content-Type"] == PROBLEM
    assert "Split the batch" in response.json()["detail"] and "Retry-After" not in response
    assert Event.objects.count() == 0
    assert post(token, 50).status_code == 204  # nothing was charged


def test_invalid_batches_are_not_charged(clock):
    token = limited(1)  # 10 per window
    bad = [llm_event() for _ in range(10)] + [{"specversion": "1.0"}]
    response = Client().generic("POST", "/api/v1/events", body(bad), content_type=BATCH, **bearer(token))
    assert response.status_code == 400
    assert post(token, 10).status_code == 204


def test_the_kong_paths_are_limited_too_and_tokens_have_their_own_budgets(clock):
    first, second = limited(1, "kong-a"), limited(1, "kong-b")
    assert post(first, 10, "/api/v3/openmeter/events").status_code == 202
    assert post(first, 1, "/v3/openmeter/events").status_code == 429
    assert post(first, 1, "/api/v1/events").status_code == 429
    assert post(second, 10, "/v3/openmeter/events").status_code == 202


def test_busy_tokens_take_their_budget_in_slices(clock, monkeypatch):
    """One cache round trip buys a slice of 1/100 of the window; the next requests spend it in the worker."""
    trips: list[int] = []
    real = throttles._window_add

    def counted(key: str, amount: int, ttl: int) -> int:
        trips.append(amount)
        return real(key, amount, ttl)

    monkeypatch.setattr(throttles, "_window_add", counted)
    token = limited(1000)  # 10,000 per window: slices of 100
    for _ in range(100):
        assert post(token, 1).status_code == 204
    assert trips == [100]
    assert post(token, 1).status_code == 204
    assert trips == [100, 100]
    assert post(token, 9_799).status_code == 204  # 99 from the slice, 9,700 more: 9,900 counted
    assert post(token, 150).status_code == 429  # no slice of 100 left after 100 more, nor 150
    assert post(token, 100).status_code == 204  # exactly what is left
    assert post(token, 1).status_code == 429
    assert Event.objects.count() == 10_000


def test_tokens_without_a_limit_cost_nothing(clock, monkeypatch):
    def no_cache(*args, **kwargs):
        raise AssertionError("a token without a limit must not touch the cache")

    monkeypatch.setattr(throttles, "_window_add", no_cache)
    monkeypatch.setattr(throttles, "_cache", no_cache)
    token = limited(None)
    for _ in range(3):
        assert post(token, 1000).status_code == 204


def test_a_new_limit_applies_at_once_in_this_worker(clock):
    token = limited(None)
    assert post(token, 500).status_code == 204
    api_token_set_rate_limit(token=ApiToken.objects.get(), ingest_rate_limit=1)
    assert post(token, 10).status_code == 204
    assert post(token, 1).status_code == 429
    api_token_set_rate_limit(token=ApiToken.objects.get(), ingest_rate_limit=None)
    assert post(token, 500).status_code == 204


def test_a_cache_outage_fails_open(clock, monkeypatch, caplog):
    def down(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(throttles, "_window_add", down)
    token = limited(1)
    assert post(token, 10).status_code == 204 and post(token, 10).status_code == 204
    assert "did not answer" in caplog.text


@pytest.mark.redis
def test_on_redis_the_budget_is_shared_by_every_worker(clock, monkeypatch):
    """Two cache clients (two web workers) on one Redis spend one budget."""
    location = os.environ["REDIS_URL"]
    workers = [RedisCache(location, {"KEY_PREFIX": "rate-test"}) for _ in range(2)]
    turn = iter(range(10_000))
    monkeypatch.setattr(throttles, "_cache", lambda: workers[next(turn) % 2])
    token = limited(3)  # 30 per window
    key = f"api-ingest-rate:{hash_token(token)}:{int(clock.now // 10)}"
    try:
        assert [post(token, 10).status_code for _ in range(4)] == [204, 204, 204, 429]
        assert int(workers[1].get(key)) == 30
    finally:
        workers[0].delete(key)
