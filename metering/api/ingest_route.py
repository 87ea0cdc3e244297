"""The ingest fast route: event POSTs answered without Django's request cycle, its middleware stack and DRF.

Gateways post events one at a time (the Kong plugin's default batch size is 1), so for this one door the cost of
the request cycle around the write (WSGI handler, twelve middlewares, URL resolution, DRF's request, content
negotiation, authentication, permission and rendering) was most of a POST's CPU. ``billing_site.wsgi`` puts
:data:`INGEST_ROUTE` in the table of :class:`metering.api.fast_route.FastRoutes` in front of Django's WSGI
application; the rule stays here, the machinery every fast route shares is :mod:`metering.api.fast_route`.

What the route takes: exactly a ``POST`` to ``/api/v1/events``, ``/api/v3/openmeter/events`` or
``/v3/openmeter/events`` with no query string, a ``Content-Length`` within the ingest limit (no
``Transfer-Encoding``), one of the event door's media types, a host ``ALLOWED_HOSTS`` accepts, no pending HTTPS
redirect, an ``Accept`` header DRF's content negotiation takes as it takes none, and a valid Bearer token whose
scopes allow the POST — decided by the same functions the DRF view uses
(:func:`metering.authentication.request_bearer_token`, :func:`~metering.authentication.token_may`,
:func:`metering.api.events.unsupported_media`). It then runs the event door's own rule,
:func:`metering.api.events.events_post` (body limit, CloudEvents validation, the token's ingest rate limit, the
all-or-nothing write, answered after COMMIT), and answers 204 or 202 with the headers Django's stack gives that
answer (see :func:`metering.api.fast_route.success_headers`).

Everything else goes to Django unchanged: other paths and methods, and every request whose answer is not a
success, which Django's stack answers byte for byte as it always did. A missing, malformed, unknown or revoked
token and a wrong scope are handed on before the body is read; the Bearer verdict travels with the request
(:func:`metering.authentication.request_bearer_token`), so Django neither looks an unknown token up again nor
counts an auth failure twice (the per-IP throttle counts it once, in DRF's authenticator). A refusal by
:func:`~metering.api.events.events_post` (413, 400, 429, a database outage…) is handed on with the exception it
raised (:data:`~metering.api.fast_route.REFUSAL_KEY`) and the body put back; the DRF view raises that same
exception, so the request is parsed, rate-charged and written once, and the answer is rendered by DRF's exception
handler and the middleware.
"""

from __future__ import annotations

import io
from typing import Any

from ..cloudevents import MAX_BODY_BYTES
from .events import EventsView, KongEventsAliasView, KongEventsView, events_post, unsupported_media
from .fast_route import Answer, Route, authorized_token, hand_on, served_as_is, success_headers, wsgi_request

ROUTES: dict[str, type[EventsView]] = {
    "/api/v1/events": EventsView,
    "/api/v3/openmeter/events": KongEventsView,
    "/v3/openmeter/events": KongEventsAliasView,
}


def ingest_answer(environ: dict[str, Any]) -> Answer | None:
    """The answer to an ingest POST the fast route takes, once its events are committed: ``(status line,
    headers, body)``. None: Django answers it (``environ`` is then as Django needs it, its body put back)."""
    view = ROUTES.get(environ.get("PATH_INFO", ""))
    if view is None or environ.get("REQUEST_METHOD") != "POST" or not _plain(environ):
        return None
    request = wsgi_request(environ)
    if not served_as_is(request):
        return None
    token = authorized_token(view, "POST", request)
    if token is None:
        return None  # Django answers 401/403/406/429 (and counts an auth failure against the client's IP)
    success = success_headers(view, "POST", request, bodies=(b"",))
    if success is None:
        return None
    body = request.read()
    try:
        events_post(token=token, meta=environ, read=io.BytesIO(body).read)
    except Exception as exc:  # noqa: BLE001 - every refusal and failure is answered by Django's stack
        environ["wsgi.input"] = io.BytesIO(body)
        hand_on(environ, exc)
        return None
    return success.answer(b"")


def _plain(environ: dict[str, Any]) -> bool:
    """No query string, script prefix or chunked framing; a Content-Length within the limit; a media type and
    encoding the event door takes (anything else: Django and its middleware decide)."""
    length = environ.get("CONTENT_LENGTH") or ""
    return (not environ.get("QUERY_STRING") and not environ.get("SCRIPT_NAME")
            and "HTTP_TRANSFER_ENCODING" not in environ
            and length.isascii() and length.isdigit() and int(length) <= MAX_BODY_BYTES
            and unsupported_media(environ) is None)


INGEST_ROUTE = Route("ingest", takes=lambda environ: environ.get("PATH_INFO") in ROUTES, answer=ingest_answer)
