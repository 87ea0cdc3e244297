"""The entitlement check's fast route: ``GET /api/v1/customers/{idOrKey}/entitlements/{featureKey}/value`` answered
without Django's request cycle, its middleware stack and DRF.

The gateway asks this on every call it lets through, so for this one door the request cycle around the check (WSGI
handler, twelve middlewares, URL resolution, DRF's request, content negotiation, authentication, permission) was a
large part of its CPU. ``billing_site.wsgi`` puts :data:`ENTITLEMENT_ROUTE` in the table of
:class:`metering.api.fast_route.FastRoutes` (whose shared rules it uses) in front of Django's WSGI application.

What the route takes: exactly a ``GET`` whose path Django's URL resolver routes to
:class:`~customers.api.entitlements.EntitlementValueView` (the path decoded as Django decodes it: UTF-8 of
``PATH_INFO``'s bytes, one segment each for ``idOrKey`` and ``featureKey``), with no query string or script
prefix, nothing :class:`common.middleware.RequestHygieneMiddleware` refuses (NUL, broken UTF-8), a host
``ALLOWED_HOSTS`` accepts, no pending HTTPS redirect, an ``Accept`` header DRF's negotiation takes as it takes none,
and a valid Bearer token with the ``read`` scope (:func:`metering.api.fast_route.authorized_token`). It answers
:func:`customers.api.entitlements.entitlement_value_body` with the status line and headers Django's stack gives the
view's 200 (its ``Content-Length`` that of the body).

Everything else goes to Django unchanged: ``HEAD`` and other methods, staff sessions, 401/403/406/429 (the Bearer
verdict travels with the request: the token is looked up and an auth failure counted once), and an unknown
customer or feature or a database outage, handed on with the exception the body's rule raised, which the view
raises again (so the check runs once per request) for DRF's exception handler and the middleware to answer.

A reused database connection is not checked with a ``SELECT 1`` first (Django's ``CONN_HEALTH_CHECKS``): the check's
own first statement tells, and a connection found broken is replaced and the check run again
(:func:`metering.api.fast_route.read_checked_by_use`), one round trip fewer on every call.
"""

from __future__ import annotations

from typing import Any

from common.middleware import RequestHygieneMiddleware
from metering.api.fast_route import (
    Answer,
    Route,
    authorized_token,
    hand_on,
    read_checked_by_use,
    resolves_to,
    served_as_is,
    success_headers,
    wsgi_request,
)

from .entitlements import EntitlementValueView, entitlement_value_body

PREFIX, SUFFIX = "/api/v1/customers/", "/value"


def _takes(environ: dict[str, Any]) -> bool:
    """A GET the entitlement check's URL pattern could match (decided exactly by :func:`entitlement_answer`)."""
    path = environ.get("PATH_INFO", "")
    return environ.get("REQUEST_METHOD") == "GET" and path.startswith(PREFIX) and path.endswith(SUFFIX)


def entitlement_answer(environ: dict[str, Any]) -> Answer | None:
    """The 200 answer to an entitlement check the fast route takes: ``(status line, headers, body)``. None: Django
    answers it."""
    if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING") or environ.get("SCRIPT_NAME"):
        return None
    request = wsgi_request(environ)
    if RequestHygieneMiddleware.problem(request) is not None or not served_as_is(request):
        return None
    arguments = resolves_to(request, EntitlementValueView)
    if arguments is None:
        return None
    if authorized_token(EntitlementValueView, "GET", request) is None:
        return None  # Django answers 401/403/406/429 (and counts an auth failure against the client's IP once)
    success = success_headers(EntitlementValueView, "GET", request)
    if success is None:
        return None
    try:
        body = read_checked_by_use(lambda: entitlement_value_body(**arguments))
    except Exception as exc:  # noqa: BLE001 - 404s and failures are answered by Django's stack
        hand_on(environ, exc)
        return None
    return success.answer(body)


ENTITLEMENT_ROUTE = Route("entitlement check", takes=_takes, answer=entitlement_answer)
