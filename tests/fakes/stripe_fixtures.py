"""pytest fixtures for the fake Stripe server, registered for the whole suite in ``tests/conftest.py``:

- ``fake_stripe``: a started fake Stripe server
- ``stripe_gateway``: the production gateway pointed at it (no sleeping between attempts)
- ``fake``: the fake with the settings and the invoice push's gateway pointed at it, as in production except the
  client timeout (``fake.client_timeout``, 5 s; tests that inject timeouts shorten it before the push runs)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Task
from celery.exceptions import Retry

from invoicing.services import stripe_push
from invoicing.stripe_gateway import StripeConfig, StripeGateway
from tests.fakes.stripe_server import FakeStripeServer

# Paths of the Stripe API, as the fake's request log matches them.
CUSTOMERS = r"^/v1/customers$"
INVOICES = r"^/v1/invoices$"
ITEMS = r"^/v1/invoiceitems$"
FINALIZE = r"^/v1/invoices/[^/]+/finalize$"
VOID = r"^/v1/invoices/[^/]+/void$"


def no_sleep(_seconds: float) -> None:
    pass


def run_as_worker(task: Task[Any, Any], pk: int, retries: int = 0) -> float | None:
    """One run of a Stripe task as a worker runs it (retry number ``retries``); returns the countdown of the
    retry it asks for, or None. (In tests CELERY_TASK_EAGER_PROPAGATES is on, so an eager ``self.retry()``
    raises ``Retry`` to the caller instead of re-running the task: the tests play the worker.)"""
    try:
        task.apply(args=(pk,), retries=retries, throw=True)
    except Retry as retry:
        assert isinstance(retry.when, int | float), retry.when  # a countdown, not an eta
        return retry.when
    return None


def fake_stripe_config(fake: FakeStripeServer, **overrides: Any) -> StripeConfig:
    """A StripeConfig pointing at ``fake`` (short timeout: the fake answers in milliseconds)."""
    values: dict[str, Any] = {
        "api_key": fake.api_key,
        "webhook_secret": fake.webhook_secret,
        "api_base": fake.url,
        "timeout_seconds": 5,
    }
    values.update(overrides)
    return StripeConfig(**values)


def gateway_for(
    fake: FakeStripeServer, *, sleep: Callable[[float], None] = no_sleep, **config_overrides: Any
) -> StripeGateway:
    return StripeGateway(fake_stripe_config(fake, **config_overrides), sleep=sleep)


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripeServer]:
    with FakeStripeServer() as fake:
        yield fake


@pytest.fixture
def stripe_gateway(fake_stripe: FakeStripeServer) -> StripeGateway:
    return gateway_for(fake_stripe)


def point_at_fake(settings, monkeypatch, fake: FakeStripeServer) -> FakeStripeServer:
    """Settings and the invoice push's gateway pointed at ``fake``."""
    settings.STRIPE_API_KEY = fake.api_key
    settings.STRIPE_API_BASE = fake.url
    settings.STRIPE_WEBHOOK_SECRET = fake.webhook_secret
    settings.STRIPE_IDEMPOTENCY_PREFIX = ""
    settings.INVOICE_ISSUE_ZERO_TOTAL = False
    # StripeConfig.from_settings() cannot set the sleep or the timeout; everything else is as in production.
    # Tests that inject timeouts shorten the client's timeout (short_timeout) before the push builds its gateway.
    fake.client_timeout = 5.0
    monkeypatch.setattr(stripe_push, "gateway", lambda: gateway_for(fake, timeout_seconds=fake.client_timeout))
    return fake


@pytest.fixture
def fake(settings, monkeypatch, fake_stripe: FakeStripeServer) -> FakeStripeServer:
    return point_at_fake(settings, monkeypatch, fake_stripe)
