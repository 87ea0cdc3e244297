"""Fixtures shared by the whole suite."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from metering.services.tokens import api_token_create

# A copy of ../shared/fixtures/kong_events.json ships in the repo (CI clones may not have ../shared);
# tests/metering/test_kong_fixtures.py checks the copy against the original when it is there.
KONG_FIXTURES_FILE = Path(__file__).resolve().parent.parent / "metering" / "data" / "kong_events.json"


@pytest.fixture(autouse=True)
def fresh_process_caches():
    """Per-process caches (tokens, features, entitlement rate cards) must not carry rows between tests, whose
    rolled-back ids the next test may reuse."""
    from catalog.selectors import forget_cached_features
    from customers.selectors import forget_cached_entitlements
    from metering.selectors.tokens import forget_cached_tokens

    for forget in (forget_cached_tokens, forget_cached_features, forget_cached_entitlements):
        forget()
    yield


@pytest.fixture
def kong_fixtures() -> dict:
    """The sample Kong events and recommended meters (../shared/fixtures/kong_events.json)."""
    return copy.deepcopy(json.loads(KONG_FIXTURES_FILE.read_text()))


@pytest.fixture
def make_token(db):
    def _make(*scopes: str, name: str = "test token") -> str:
        return api_token_create(name=name, scopes=list(scopes))[1]

    return _make


@pytest.fixture
def ingest_token(make_token) -> str:
    return make_token("ingest", name="gateway")


@pytest.fixture
def read_token(make_token) -> str:
    return make_token("read", name="reader")


@pytest.fixture
def api(db) -> APIClient:
    return APIClient()


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}
