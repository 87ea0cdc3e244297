"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 that verifies every request's Standard Webhooks
signature with the ``standardwebhooks`` library, as a customer's receiver would.

``answers`` is a list of status codes served in turn (then 200); ``hang_seconds`` makes the next request sleep
before answering (a receiver that hangs). Every request is recorded in ``requests`` as ``Received`` (webhook-id,
status answered, whether the signature verified, the parsed body); ``accepted()`` lists the webhook-ids answered
2xx in arrival order.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.fakes.loopback import LoopbackService


@dataclass
class Received:
    webhook_id: str
    status: int
    verified: bool
    body: dict[str, Any] | None
    headers: dict[str, str]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_POST(self) -> None:
        fake: WebhookReceiver = self.server.fake  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        headers = {key.lower(): value for key, value in self.headers.items()}
        with fake.lock:
            hang = fake.hang_seconds
            fake.hang_seconds = 0.0
            status = fake.answers.pop(0) if fake.answers else 200
        if hang:
            fake._stopping.wait(hang)
        body = None
        verified = False
        try:
            body = Webhook(fake.secret).verify(raw, headers)
            verified = True
        except (WebhookVerificationError, ValueError):
            status = 400 if status < 300 else status
        with fake.lock:
            fake.requests.append(Received(headers.get("webhook-id", ""), status, verified, body, headers))
        payload = json.dumps({"ok": status < 300}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass  # the sender gave up (timeout)


class WebhookReceiver(LoopbackService):
    def __init__(self, secret: str = "", answers: list[int] | None = None) -> None:
        self.secret = secret
        self.answers = list(answers or [])
        self.hang_seconds = 0.0
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        self._stopping = threading.Event()

    def start(self) -> Self:
        self._serve_in_thread(ThreadingHTTPServer, _Handler, "webhook-receiver")
        return self

    @property
    def url(self) -> str:
        return f"{self.root}/hooks"

    def accepted(self) -> list[str]:
        with self.lock:
            return [r.webhook_id for r in self.requests if 200 <= r.status < 300 and r.verified]
