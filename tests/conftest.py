"""Fixtures shared by the whole suite. Builders (plain functions) live in ``tests/builders``; the fake Stripe
server's fixtures are registered here from ``tests/fakes/stripe_fixtures.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from catalog.selectors import forget_cached_features
from customers.selectors import forget_cached_entitlements
from invoicing.selectors.settings import remember_no_stored_stripe_keys
from metering.selectors.tokens import forget_cached_tokens
from metering.services.tokens import api_token_create
from tests import builders
from tests.fakes.stripe_fixtures import fake, fake_stripe, stripe_gateway  # noqa: F401 (fixtures, registered here)
from tests.ingest_route_client import route_test_clients


@pytest.fixture(autouse=True)
def fresh_process_caches():
    """Per-process caches (tokens, features, entitlement rate cards) must not carry rows between tests, whose
    rolled-back ids the next test may reuse."""
    for forget in (forget_cached_tokens, forget_cached_features, forget_cached_entitlements):
        forget()
    # No Stripe keys stored in Settings → Stripe, known without a query (query counts stay as they were); the tests
    # that store keys go through the service, which forgets this.
    remember_no_stored_stripe_keys()
    yield


@pytest.fixture
def kong_fixtures() -> dict:
    """The sample Kong events and recommended meters (metering/data/kong_events.json), a fresh copy."""
    return builders.kong_fixtures()


@pytest.fixture
def in_tmp_path(tmp_path, monkeypatch) -> Path:
    """The test runs in its temporary directory: files it writes (``catalog.yaml``...) go there, and messages name
    them by their bare name."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


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


@pytest.fixture(autouse=True, scope="session")
def ingest_fast_route():
    """Every test client's request meets the ingest fast route first, as in production (billing_site.wsgi)."""
    with route_test_clients():
        yield


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """A SQLite file migrated by ``manage.py migrate``, made once per run (pytest-xdist workers share the run's
    temporary root); tests start their processes on a copy (``builders.copy_sqlite``)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return builders.migrated_sqlite_template(root)
