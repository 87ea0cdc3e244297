from __future__ import annotations

import pytest

from tests.fakes.webhook_receiver import WebhookReceiver


@pytest.fixture
def loopback_hooks(settings):
    """Webhooks may go to http:// on loopback (the test receiver), retries wait 0 s."""
    settings.WEBHOOKS_ALLOW_HTTP = True
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    settings.WEBHOOK_RETRY_BACKOFF_SECONDS = 0
    settings.WEBHOOK_TIMEOUT_SECONDS = 2
    return settings


@pytest.fixture
def receiver(loopback_hooks):
    with WebhookReceiver() as running:
        yield running
