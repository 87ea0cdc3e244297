"""pytest fixtures for the fake Stripe server.

Register them in a conftest (``from tests.fakes.stripe_fixtures import fake_stripe, stripe_gateway``) or
import them into a test module with ``# noqa: F401``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Task
from celery.exceptions import Retry

from invoicing.stripe_gateway import StripeConfig, StripeGateway
from tests.fakes.stripe_server import FakeStripeServer


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
