"""WSGI calls for the fast route tests: one request as a server hands it over, to Django's own application or to the
fast routes in front of it, and the answer's bytes (status line, headers in order, body)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

Answer = tuple[str, list[tuple[str, str]], bytes]

# Requests every fast route hands to Django, whatever its door: what DRF's authentication refuses (401), an Accept
# header its negotiation refuses (406) or takes otherwise than without one, a query string, a method no route takes,
# what Django's middleware answers itself (a host not allowed) and a script prefix.
HANDED_ON_BY_EVERY_ROUTE: dict[str, dict[str, Any]] = {
    "no token": {"token": None},
    "unknown token": {"token": "bbo_" + "x" * 43},
    "malformed token": {"HTTP_AUTHORIZATION": "Bearer bbo_abc\x00def"},
    "Bearer without a token": {"HTTP_AUTHORIZATION": "Bearer "},
    "Basic scheme": {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"},
    "Accept: text/html (406)": {"HTTP_ACCEPT": "text/html"},
    "Accept: JSON with parameters": {"HTTP_ACCEPT": "application/json; indent=4"},
    "a query string": {"QUERY_STRING": "a=b"},
    "a query with NUL": {"QUERY_STRING": "x=%00"},
    "PUT": {"method": "PUT"},
    "a host not allowed": {"HTTP_HOST": "evil.example"},
    "a script prefix": {"SCRIPT_NAME": "/billing"},
}


@pytest.fixture
def keep_connection() -> Iterator[None]:
    """As Django's test client does: the test's transaction keeps its connection across the WSGI calls (the fast
    route tests use it: ``pytest.mark.usefixtures("keep_connection")``; registered in this folder's conftest)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def django_app() -> Spy:
    """Django's own WSGI application, counting the requests it is handed."""
    return Spy()


class Spy:
    """Django's WSGI application, noting the requests it is handed."""

    def __init__(self) -> None:
        self.app = WSGIHandler()
        self.calls = 0

    def __call__(self, environ, start_response):
        self.calls += 1
        return self.app(environ, start_response)


def wsgi_call(app, method: str, path: str, body: bytes = b"", content_type: str = "", token: str | None = None,
              **environ: Any) -> Answer:
    """``environ`` adds to (or replaces) the plain HTTP/1.1 request's keys; ``path`` is ``PATH_INFO`` as a WSGI
    server gives it (the bytes sent, percent-decoded, as latin-1 text)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": "", "SCRIPT_NAME": "",
        "SERVER_NAME": "testserver", "SERVER_PORT": "80", "HTTP_HOST": "testserver", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "198.51.100.7", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(), "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": content_type,
    }
    if token is not None:
        env["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    env.update(environ)
    started: dict[str, Any] = {}

    def start_response(status, headers, exc_info=None):
        started.update(status=status, headers=list(headers))

    result = app(env, start_response)
    try:
        content = b"".join(result)
    finally:
        getattr(result, "close", lambda: None)()
    return started["status"], started["headers"], content
