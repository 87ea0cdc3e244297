"""Django's test clients go through the fast routes first (ingest, entitlement check), as ``billing_site.wsgi``
serves requests.

:func:`route_test_clients` (applied to the whole suite by ``tests/conftest.py``) puts the fast routes
(:func:`billing_site.fast_routes.with_fast_routes` — the WSGI callable itself) in front of Django's test handler, so
every ``Client``/``APIClient`` request meets them first and what they hand on reaches Django's stack, as in
production. A response tells which answered: ``response.fast_route`` is True when a route answered itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.http import HttpResponse
from django.test.client import ClientHandler

from billing_site.fast_routes import with_fast_routes


def _through_route(django_call: Callable[[Any, dict[str, Any]], Any]):
    def __call__(self, environ: dict[str, Any]) -> HttpResponse:
        handed_on: list[HttpResponse] = []
        started: dict[str, Any] = {}

        def django(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            response = django_call(self, environ)
            response.fast_route = False
            handed_on.append(response)
            return []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            started.update(status=status, headers=headers)

        # As Django's test handler does: the test's transaction keeps its connection open across the request.
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            body = b"".join(with_fast_routes(django)(environ, start_response))
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)
        if handed_on:
            return handed_on[0]
        response = HttpResponse(body, status=int(started["status"].split(" ", 1)[0]))
        for name in list(response.headers):
            del response.headers[name]
        for name, value in started["headers"]:
            response.headers[name] = value
        response.wsgi_request = WSGIRequest(environ)  # type: ignore[attr-defined]
        response.fast_route = True  # type: ignore[attr-defined]
        return response

    return __call__


@contextmanager
def route_test_clients() -> Iterator[None]:
    original = ClientHandler.__call__
    ClientHandler.__call__ = _through_route(original)  # type: ignore[method-assign]
    try:
        yield
    finally:
        ClientHandler.__call__ = original  # type: ignore[method-assign]
