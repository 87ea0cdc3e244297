"""CloudEvents in the shape Kong's metering-and-billing plugin sends (see metering/data/kong_events.json)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from pathlib import Path

from tests.builders.moments import iso

__all__ = ["KONG_FIXTURES_FILE", "llm_event", "tokens", "api_request_event", "body", "kong_fixtures"]

_counter = itertools.count(1)

# The sample Kong events and the meters they recommend; ships in the repo (a copy of ../shared/fixtures/).
KONG_FIXTURES_FILE = Path(__file__).resolve().parents[2] / "metering" / "data" / "kong_events.json"


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


def tokens(n, at: dt.datetime, kind: str = "request", *, subject: str = "kong-air", **extra) -> dict:
    """``n`` LLM tokens of ``kind`` used by ``subject`` at ``at``."""
    return llm_event(tokens=n, kind=kind, time=iso(at), subject=subject, **extra)


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


def kong_fixtures() -> dict:
    """A fresh copy of the sample Kong events and recommended meters."""
    return json.loads(KONG_FIXTURES_FILE.read_text())
