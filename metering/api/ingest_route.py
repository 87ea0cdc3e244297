"""The ingest fast route: event POSTs answered without Django's request cycle, its middleware stack and DRF.

Gateways post events one at a time (the Kong plugin's default batch size is 1), so for this one door the cost of
the request cycle around the write (WSGI handler, twelve middlewares, URL resolution, DRF's request, content
negotiation, authentication, permission and rendering) was most of a POST's CPU. ``billing_site.wsgi`` wraps
Django's WSGI application in :class:`IngestRoute`; the rule stays here.

What the route takes: exactly a ``POST`` to ``/api/v1/events``, ``/api/v3/openmeter/events`` or
``/v3/openmeter/events`` with no query string, a ``Content-Length`` within the ingest limit (no
``Transfer-Encoding``), one of the event door's media types, a host ``ALLOWED_HOSTS`` accepts, no pending HTTPS
redirect, and a valid Bearer token whose scopes allow the POST — decided by the same functions the DRF view uses
(:func:`metering.authentication.bearer_token`, :func:`~metering.authentication.token_may`,
:func:`metering.api.events.unsupported_media`). It then runs the event door's own rule,
:func:`metering.api.events.events_post` (body limit, CloudEvents validation, the token's ingest rate limit, the
all-or-nothing write, answered after COMMIT), and answers 204 or 202 with the headers Django's stack gives that
answer (see :func:`success_headers`).

Everything else goes to Django unchanged: other paths and methods, and every request whose answer is not a
success, which Django's stack answers byte for byte as it always did. A missing, malformed, unknown or revoked
token and a wrong scope are handed on before the body is read; the Bearer verdict travels with the request
(:func:`metering.authentication.request_bearer_token`), so Django neither looks an unknown token up again nor
counts an auth failure twice (the per-IP throttle counts it once, in DRF's authenticator). A refusal by
:func:`~metering.api.events.events_post` (413, 400, 429, a database outage…) is handed on with the exception it
raised (``REFUSAL_KEY``) and the body put back; the DRF view raises that same exception, so the request is
parsed, rate-charged and written once, and the answer is rendered by DRF's exception handler and the middleware.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core import signals
from django.core.exceptions import DisallowedHost
from django.core.handlers.base import BaseHandler
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse
from rest_framework.response import Response

from ..authentication import request_bearer_token, token_may
from ..cloudevents import MAX_BODY_BYTES
from .events import (
    REFUSAL_KEY,
    EventsView,
    KongEventsAliasView,
    KongEventsView,
    events_post,
    unsupported_media,
)

logger = logging.getLogger(__name__)

ROUTES: dict[str, type[EventsView]] = {
    "/api/v1/events": EventsView,
    "/api/v3/openmeter/events": KongEventsView,
    "/v3/openmeter/events": KongEventsAliasView,
}

Headers = list[tuple[str, str]]
Answer = tuple[str, Headers, bytes]


def ingest_answer(environ: dict[str, Any]) -> Answer | None:
    """The answer to an ingest POST the fast route takes, once its events are committed: ``(status line,
    headers, body)``. None: Django answers it (``environ`` is then as Django needs it, its body put back)."""
    view = ROUTES.get(environ.get("PATH_INFO", ""))
    if view is None or environ.get("REQUEST_METHOD") != "POST" or not _plain(environ):
        return None
    request = WSGIRequest(environ)
    if not _served_as_is(request):
        return None
    try:
        token, _failure = request_bearer_token(environ)
    except Exception:  # noqa: BLE001 - e.g. the database is down: Django answers (503), trying once more
        return None
    if token is None or not token_may(token, view, "POST"):
        return None  # Django answers 401/403/429 (and counts the failure against the client's IP)
    found = success_headers(view, request)
    if found is None:
        return None
    status, headers = found
    body = request.read()
    try:
        events_post(token=token, meta=environ, read=io.BytesIO(body).read)
    except Exception as exc:  # noqa: BLE001 - every refusal and failure is answered by Django's stack
        environ["wsgi.input"] = io.BytesIO(body)
        environ[REFUSAL_KEY] = exc
        return None
    return status, headers, b""


def _plain(environ: dict[str, Any]) -> bool:
    """No query string, script prefix or chunked framing; a Content-Length within the limit; a media type and
    encoding the event door takes (anything else: Django and its middleware decide)."""
    length = environ.get("CONTENT_LENGTH") or ""
    return (not environ.get("QUERY_STRING") and not environ.get("SCRIPT_NAME")
            and "HTTP_TRANSFER_ENCODING" not in environ
            and length.isascii() and length.isdigit() and int(length) <= MAX_BODY_BYTES
            and unsupported_media(environ) is None)


def _served_as_is(request: HttpRequest) -> bool:
    """Whether Django's middleware would let the request through to the view untouched: an allowed host, no
    HTTPS redirect, no ``www.`` redirect or refused user agent configured, no forced script name."""
    if settings.FORCE_SCRIPT_NAME or settings.PREPEND_WWW or settings.DISALLOWED_USER_AGENTS:
        return False
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return not (settings.SECURE_SSL_REDIRECT and not request.is_secure())


# --- the success answer's headers, as Django's stack sets them --------------------------------------------------

_success: dict[tuple[type, bool], tuple[str, Headers] | None] = {}


def success_headers(view: type[EventsView], request: HttpRequest) -> tuple[str, Headers] | None:
    """The status line and headers Django gives the success of ``view`` (204 or 202, no body): found once per
    view and scheme by running the configured middleware stack around the real DRF view class, whose write is
    left out (it answers at once); forgotten when a setting changes. None (logged once): the route cannot answer
    like Django here (e.g. a middleware sets a cookie), so Django answers every such request."""
    key = (view, request.is_secure())
    if key not in _success:
        try:
            _success[key] = _render_success(view, request)
        except Exception:
            logger.exception("ingest fast route: no success answer like Django's; Django answers these requests")
            _success[key] = None
    return _success[key]


def _forget_success_headers(**kwargs: Any) -> None:
    _success.clear()


setting_changed.connect(_forget_success_headers, dispatch_uid="metering-ingest-route-success-headers")


class _AnswerOnly(BaseHandler):
    """Django's configured middleware stack around one view, without URL resolution."""

    def __init__(self, view: Callable[..., HttpResponse]) -> None:
        super().__init__()
        self._view = view
        self.load_middleware()

    def _get_response(self, request: HttpRequest) -> HttpResponse:
        response: Any = self._view(request)
        return response.render() if callable(getattr(response, "render", None)) else response  # as Django does


def _render_success(view: type[EventsView], request: HttpRequest) -> tuple[str, Headers]:
    class Stored(view):  # type: ignore[valid-type,misc]
        authentication_classes: list = []
        permission_classes: list = []

        def post(self, request):
            return Response(status=self.success_status)

    environ = {key: value for key, value in request.META.items()
               if key not in ("HTTP_COOKIE", "HTTP_AUTHORIZATION", "CONTENT_LENGTH")}
    environ["wsgi.input"] = io.BytesIO(b"")
    handler: Any = _AnswerOnly(Stored.as_view())  # Django's handler keeps its chain in an unstubbed attribute
    response = handler._middleware_chain(WSGIRequest(environ))
    if response.status_code != view.success_status or response.cookies or response.content:
        raise RuntimeError(f"the ingest fast route cannot answer like Django here: {response.status_code}")
    return f"{response.status_code} {response.reason_phrase}", list(response.items())


# --- WSGI -----------------------------------------------------------------------------------------------------------


class IngestRoute:
    """WSGI middleware: the ingest POSTs the fast route takes are answered here, everything else by ``app``."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ROUTES:
            return self.app(environ, start_response)
        # The request's lifetime as Django's handler marks it: connections past their age or broken are closed.
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            answer = ingest_answer(environ)
        finally:
            signals.request_finished.send(sender=self.__class__)
        if answer is None:
            return self.app(environ, start_response)
        status, headers, body = answer
        start_response(status, list(headers))
        return [body]
