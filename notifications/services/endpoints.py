"""Webhook endpoints: create (the secret is shown once), change, delete, rotate the secret, send a test event."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.queue import enqueue_on_commit

from .. import transport
from ..event_types import SUBSCRIBABLE
from ..models import Delivery, WebhookEndpoint
from .outbox import event_record

MAX_DESCRIPTION = 500


class EndpointError(ValueError):
    """Invalid input; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class NewEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


def clean_url(url: object) -> str:
    if not isinstance(url, str):
        raise EndpointError("url", "The URL must be text.")
    url = url.strip()
    try:
        transport.resolve(url)
    except transport.UnsafeUrl as exc:
        raise EndpointError("url", str(exc)) from exc
    return url


def clean_event_types(event_types: object) -> list[str]:
    if event_types is None:
        return []
    if not isinstance(event_types, list) or not all(isinstance(item, str) for item in event_types):
        raise EndpointError("event_types", "event_types must be a list of event type names (empty: all).")
    unknown = sorted(set(event_types) - set(SUBSCRIBABLE))
    if unknown:
        raise EndpointError("event_types", f"Unknown event types: {', '.join(unknown)[:300]}; "
                                           f"use {', '.join(SUBSCRIBABLE)}.")
    return sorted(set(event_types), key=SUBSCRIBABLE.index)


def clean_description(description: object) -> str:
    if not isinstance(description, str) or "\x00" in description or len(description) > MAX_DESCRIPTION:
        raise EndpointError("description", f"The description must be text of at most {MAX_DESCRIPTION} "
                                           "characters.")
    return description.strip()


@transaction.atomic
def endpoint_create(*, url: str, event_types: list[str] | None = None, description: str = "",
                    enabled: bool = True) -> NewEndpoint:
    secret = transport.new_secret()
    endpoint = WebhookEndpoint.objects.create(url=clean_url(url), event_types=clean_event_types(event_types),
                                              description=clean_description(description), enabled=bool(enabled),
                                              secret=secret)
    return NewEndpoint(endpoint, secret)


@transaction.atomic
def endpoint_update(*, endpoint: WebhookEndpoint, url: str, event_types: list[str] | None, description: str,
                    enabled: bool) -> WebhookEndpoint:
    """Change an endpoint; enabling it again clears its failure record and sends what waited."""
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    was_enabled = endpoint.enabled
    endpoint.url = clean_url(url) if url != endpoint.url else endpoint.url
    endpoint.event_types = clean_event_types(event_types)
    endpoint.description = clean_description(description)
    endpoint.enabled = bool(enabled)
    if endpoint.enabled and not was_enabled:
        endpoint.failing_since, endpoint.disabled_at, endpoint.disabled_reason = None, None, ""
        for customer_key in set(Delivery.objects.filter(endpoint=endpoint, status=Delivery.Status.PENDING)
                                .values_list("customer_key", flat=True)):
            enqueue_on_commit("notifications.deliver", endpoint_id=endpoint.pk, recipient="",
                              customer_key=customer_key)
    endpoint.save()
    return endpoint


@transaction.atomic
def endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()


@transaction.atomic
def endpoint_rotate_secret(*, endpoint: WebhookEndpoint, now: dt.datetime | None = None) -> NewEndpoint:
    """A new secret signs from now on; the old one signs too (a second signature) for
    ``WEBHOOK_SECRET_ROTATION_HOURS``, so receivers can switch without losing a delivery."""
    now = now or timezone.now()
    endpoint = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    secret = transport.new_secret()
    endpoint.previous_secret, endpoint.secret = endpoint.secret, secret
    endpoint.previous_secret_expires_at = now + dt.timedelta(hours=settings.WEBHOOK_SECRET_ROTATION_HOURS)
    endpoint.save()
    return NewEndpoint(endpoint, secret)


@transaction.atomic
def endpoint_send_test(*, endpoint: WebhookEndpoint) -> Delivery:
    """A ``test`` event delivered to this endpoint only (even if it is disabled: it is a check)."""
    event = event_record(event_type="test", data={"message": "A test event from the billing back office."},
                         test=True)
    event.dispatched_at = event.occurred_at
    event.save(update_fields=["dispatched_at"])
    delivery = Delivery.objects.create(event=event, endpoint=endpoint, customer_key="")
    enqueue_on_commit("notifications.deliver", endpoint_id=endpoint.pk, recipient="", customer_key="")
    return delivery
