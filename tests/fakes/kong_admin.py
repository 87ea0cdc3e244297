"""A fake of Kong's Admin API ``GET /consumers`` for tests: a real HTTP server, shaped like Kong 3.x.

It is a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (random port) in a background thread, so the code under
test goes through its real HTTP client, URL joining, header handling and JSON parsing. What it does, like
Kong (``kong/api/endpoints.lua``, ``get_collection_endpoint``):

* ``GET <prefix>/consumers[?size=N][&offset=X]`` answers ``{"data": [...], "offset": X | absent, "next": ...}``.
  Consumers are listed in primary-key (``id``) order; ``size`` defaults to 100 and must be an integer from 1 to
  the cap (1000 in Kong; 400 ``invalid size`` otherwise, or ``oversize="clamp"`` to serve at most the cap
  instead). ``offset`` is an opaque URL-escaped base64 token (400 ``invalid offset`` when it cannot be decoded).
* ``next`` is what Kong writes: ``/consumers?offset=<escaped>&size=N`` (``&size`` only when the request had
  one), a path relative to the Admin API root even when the API is served under a prefix; ``null`` on the last
  page. ``next_style="absolute"`` writes a full URL instead and ``next_style="full_path"`` the path from the
  host root including the prefix (what some proxies in front of Kong produce).
* ``prefix`` serves the API under a base path, e.g. Konnect's ``/v2/control-planes/<id>/core-entities``.
* ``admin_token``: every request needs ``Kong-Admin-Token: <token>`` (RBAC); missing or wrong answers 401
  ``{"message": "Invalid credentials. Token or User credentials required"}``.
* Other paths answer 404 ``{"message": "Not found"}``; other methods 405 ``{"message": "Method not allowed"}``.

Faults by page number (1 = the request without ``offset``; the number travels inside the opaque offset):
``fail_page(n, status, body)``, ``bad_json_page(n)``, ``slow_page(n, seconds)``. Every request is recorded in
``requests`` (method, path, query, headers, status).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from tests.fakes.loopback import LoopbackService

KONG_MAX_PAGE_SIZE = 1000
KONG_DEFAULT_PAGE_SIZE = 100
INVALID_CREDENTIALS = "Invalid credentials. Token or User credentials required"
KONNECT_PREFIX = "/v2/control-planes/5f1c2a8e-6a1b-4b7e-9d3c-2f0e8b1a7c44/core-entities"


def make_consumers(
    count: int, *, start: int = 0, username: str | None = "user-{n}", custom_id: str | None = "cust-{n}",
    tags: list[str] | None = None,
) -> list[dict[str, Any]]:
    """``count`` consumers shaped like Kong's (deterministic uuid ids). ``username=None`` leaves it null."""
    created = 1_700_000_000
    return [
        {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"kong-consumer-{n}")),
            "username": username.format(n=n) if username else None,
            "custom_id": custom_id.format(n=n) if custom_id else None,
            "tags": list(tags) if tags is not None else ["plan:free", f"team-{n % 7}"],
            "created_at": created + n,
            "updated_at": created + n,
        }
        for n in range(start, start + count)
    ]


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (a port just bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]
    status: int
    page: int | None  # the page number served (None for errors before paging)

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class _Fault:
    status: int | None = None  # answer this status with body instead of the page
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    delay: float = 0.0


@dataclass
class FakeKongAdmin(LoopbackService):
    """Consumers in memory behind Kong's Admin API. Use as a context manager (or ``start()``/``stop()``);
    ``url`` is the admin URL to give the client (it includes ``prefix``)."""

    consumers: list[dict[str, Any]] = field(default_factory=list)
    admin_token: str | None = None
    max_page_size: int = KONG_MAX_PAGE_SIZE
    oversize: Literal["reject", "clamp"] = "reject"
    default_page_size: int = KONG_DEFAULT_PAGE_SIZE
    prefix: str = ""
    next_style: Literal["relative", "absolute", "full_path"] = "relative"
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.prefix = "/" + self.prefix.strip("/") if self.prefix.strip("/") else ""
        self._faults: dict[int, _Fault] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()  # wakes handlers sleeping in slow_page

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FakeKongAdmin:
        self._serve_in_thread(_Server, _Handler, "fake-kong-admin")
        return self

    @property
    def url(self) -> str:
        """The admin URL: root plus prefix."""
        return self.root + self.prefix

    # -- configuration -----------------------------------------------------------------------------

    def fail_page(self, page: int, status: int = 500, body: Any = None) -> None:
        """Answer page ``page`` with ``status`` (Kong's 500 body by default)."""
        if body is None:
            body = {"message": "An unexpected error occurred"}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        with self._lock:
            self._faults[page] = _Fault(status=status, body=raw)

    def bad_json_page(self, page: int, body: bytes = b'{"data": [{"id": "cut off') -> None:
        """Answer page ``page`` with 200 and a body that is not JSON (a truncated answer)."""
        with self._lock:
            self._faults[page] = _Fault(status=200, body=body)

    def slow_page(self, page: int, seconds: float) -> None:
        """Wait ``seconds`` before answering page ``page`` (cut short when the fake stops)."""
        with self._lock:
            self._faults[page] = _Fault(delay=seconds)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_to(self, path_suffix: str = "/consumers") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.endswith(path_suffix)]

    # -- the API -----------------------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def handle(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, bytes, str, int | None]:
        """(status, body, content type, page) for one request."""
        parts = urlsplit(target)
        query = parse_qs(parts.query, keep_blank_values=True)
        if self.admin_token is not None and headers.get("kong-admin-token") != self.admin_token:
            return _json(401, {"message": INVALID_CREDENTIALS})
        if parts.path.rstrip("/") != self.prefix + "/consumers":
            return _json(404, {"message": "Not found"})
        if method != "GET":
            return _json(405, {"message": "Method not allowed"})

        size = self.default_page_size
        if "size" in query:
            raw_size = query["size"][0]
            try:
                size_number = float(raw_size)
            except ValueError:
                return _json(400, {"code": 10, "name": "invalid size", "message": "size must be a number"})
            if size_number != int(size_number) or size_number < 1 or (
                size_number > self.max_page_size and self.oversize == "reject"
            ):
                message = f"size must be an integer between 1 and {self.max_page_size}"
                return _json(400, {"code": 10, "name": "invalid size", "message": message})
            size = min(int(size_number), self.max_page_size)

        page, after = 1, None
        if "offset" in query:
            try:
                after, previous_page = json.loads(base64.b64decode(query["offset"][0], validate=True))
                page = int(previous_page) + 1
            except (ValueError, TypeError, binascii.Error):
                message = f"'{query['offset'][0]}' is not a valid offset: bad base64 encoding"
                return _json(400, {"code": 7, "name": "invalid offset", "message": message})

        with self._lock:
            fault = self._faults.get(page)
            ordered = sorted(self.consumers, key=lambda c: c["id"])
        if fault is not None and fault.delay:
            self._stopping.wait(fault.delay)
        if fault is not None and fault.status is not None:
            return fault.status, fault.body, fault.content_type, page

        remaining = [c for c in ordered if after is None or c["id"] > after]
        data, more = remaining[:size], len(remaining) > size
        body: dict[str, Any] = {"data": data, "next": None}
        if more:
            offset = base64.b64encode(json.dumps([data[-1]["id"], page]).encode()).decode()
            next_path = f"/consumers?offset={quote(offset, safe='')}"
            if "size" in query:
                next_path += f"&size={query['size'][0]}"
            if self.next_style == "absolute":
                next_path = self.url + next_path
            elif self.next_style == "full_path":
                next_path = self.prefix + next_path
            body["offset"] = offset
            body["next"] = next_path
        status, raw, content_type, _ = _json(200, body)
        return status, raw, content_type, page


def _json(status: int, body: Any) -> tuple[int, bytes, str, None]:
    return status, json.dumps(body).encode(), "application/json; charset=utf-8", None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeKongAdmin


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "kong/3.9.0"

    def _serve(self) -> None:
        fake = self.server.fake
        headers = {k.lower(): v for k, v in self.headers.items()}
        if self.command in ("POST", "PUT", "PATCH"):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
        try:
            status, body, content_type, page = fake.handle(self.command, self.path, headers)
        except Exception as exc:  # a bug in the fake: show it to the test as a 500
            status, body, content_type, page = _json(500, {"message": f"fake Kong failed: {exc!r}"})
        parts = urlsplit(self.path)
        fake._record(
            RecordedRequest(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query, keep_blank_values=True),
                headers=dict(self.headers.items()),
                status=status,
                page=page,
            )
        )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 - http.server's naming

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the access log
        pass


@pytest.fixture
def kong_admin() -> Iterator[FakeKongAdmin]:
    """A started fake Kong Admin API without consumers; configure it in the test (``.consumers = …``)."""
    fake = FakeKongAdmin()
    with fake:
        yield fake

