"""Builders for CloudEvents in the shape Kong's metering-and-billing plugin sends."""

from __future__ import annotations

import itertools
import json
import uuid

_counter = itertools.count(1)


def llm_event(*, subject: str = "kong-air", tokens=24, kind: str | None = "request", model: str | None = "gpt-4o",
              provider: str = "openai", time: str | None = "2026-11-03T10:15:02.123Z", event_id: str | None = None,
              source: str = "kong-gateway", **extra) -> dict:
    event = {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": source,
        "type": "kong.llm_request",
        "subject": subject,
        "datacontenttype": "application/json",
        "data": {"type": kind, "tokens": tokens, "model": model, "provider": provider, **extra},
    }
    if time is not None:
        event["time"] = time
    return event


def api_request_event(*, subject: str = "kong-air", status: int = 200, time: str | None = "2026-11-03T10:15:02.123Z",
                      event_id: str | None = None) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id or f"req-{next(_counter)}-{uuid.uuid4().hex[:8]}",
        "source": "kong-gateway",
        "type": "kong.api_request",
        "subject": subject,
        "time": time,
        "data": {"request_method": "POST", "route_name": "ai-chat", "service_name": "ai-service",
                 "response_http_status": status},
    }


def body(events) -> bytes:
    return json.dumps(events).encode()
