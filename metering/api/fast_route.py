"""Fast routes: a few hot API requests answered in front of Django, without its request cycle, middleware and DRF.

``billing_site.wsgi`` wraps Django's WSGI application in :class:`FastRoutes` with a table of :class:`Route` s; each
route (the ingest POSTs, :mod:`metering.api.ingest_route`; the gateway's entitlement check,
:mod:`customers.api.entitlement_route`) keeps its own rule, and answers only the successes, byte for byte as
Django's stack would. Every other request, and every request whose answer is not a success, goes to Django
unchanged. What the routes share is here, so each decides alike:

- :func:`served_as_is`: Django's middleware would let the request through to the view untouched (an allowed
  host, no HTTPS or ``www.`` redirect, no refused user agent, no forced script name);
- :func:`authorized_token`: what DRF's ``APIView.initial`` would decide before the view runs — content
  negotiation (:func:`negotiated_as_default`), the Bearer token (:func:`metering.authentication.request_bearer_token`,
  whose verdict travels with the request so that Django neither looks an unknown token up again nor counts an auth
  failure twice) and its scope (:func:`metering.authentication.token_may`, the token side of
  :class:`~metering.authentication.HasScope`) — and only for a view whose DRF checks are exactly those
  (:func:`drf_checks_reproducible`: no throttles, no versioning, the default negotiator);
- :func:`success_headers`: the status line and headers Django's stack gives the view's success, found once per
  view, method and scheme by running the configured middleware stack around the real view class;
- :data:`REFUSAL_KEY`: a route whose rule raised (a 404, a 413, a database outage…) hands the request on with the
  exception; the DRF view raises it again (:func:`raise_handed_refusal`), so the rule runs once per request;
- :class:`FastRoutes`: the WSGI middleware, which marks each request's lifetime with Django's
  ``request_started``/``request_finished`` signals, so database connections are handled as in Django.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.conf import settings
from django.core import signals
from django.core.exceptions import DisallowedHost
from django.core.handlers.base import BaseHandler
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import setting_changed
from django.db import Error, connection
from django.http import HttpRequest, HttpResponse
from django.urls import Resolver404, get_resolver
from rest_framework.negotiation import DefaultContentNegotiation

from common.caches import ProcessCache

from ..authentication import BearerTokenAuthentication, HasScope, request_bearer_token, token_may
from ..models import ApiToken

logger = logging.getLogger(__name__)

Environ = dict[str, Any]
Headers = list[tuple[str, str]]
Answer = tuple[str, Headers, bytes]

# WSGI environ key (no client header can name it: those are HTTP_*): the exception a route's rule raised for this
# request; the view raises it again (raise_handed_refusal) and Django's stack answers it.
REFUSAL_KEY = "metering.fast_route_refusal"


def raise_handed_refusal(meta: dict[str, Any]) -> None:
    """In a DRF view a fast route serves: raise what the route's run of the view's rule raised for this request
    (the request is then answered by DRF's exception handler and the middleware, as if the view had raised it)."""
    refusal = meta.pop(REFUSAL_KEY, None)
    if refusal is not None:
        raise refusal


def hand_on(environ: Environ, refusal: Exception) -> None:
    """Keep the exception the view's rule raised in the route, for the view (see :func:`raise_handed_refusal`)."""
    environ[REFUSAL_KEY] = refusal


# --- what Django's middleware and DRF would decide before the view ------------------------------------------------


def wsgi_request(environ: Environ) -> WSGIRequest:
    """Django's request over ``environ`` (its ``META`` is ``environ``: what a route keeps there travels on to
    Django), leaving ``environ`` as the server gave it: Django's request stores the decoded path in
    ``PATH_INFO``, which Django's handler would decode once more (a non-ASCII path would change)."""
    kept = {key: environ[key] for key in ("PATH_INFO", "SCRIPT_NAME") if key in environ}
    request = WSGIRequest(environ)
    for key in ("PATH_INFO", "SCRIPT_NAME"):
        if key in kept:
            environ[key] = kept[key]
        else:
            environ.pop(key, None)
    return request


def served_as_is(request: HttpRequest) -> bool:
    """Whether Django's middleware would let the request through to the view untouched: an allowed host, no
    HTTPS redirect, no ``www.`` redirect or refused user agent configured, no forced script name."""
    if settings.FORCE_SCRIPT_NAME or settings.PREPEND_WWW or settings.DISALLOWED_USER_AGENTS:
        return False
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return not (settings.SECURE_SSL_REDIRECT and not request.is_secure())


# What the URL resolver made of a path for a view, per resolver (another ROOT_URLCONF is another resolver): a gateway
# asks about the same customers and features over and over, and resolving a path walks the URL patterns each time.
# Only short paths and headers are kept: anyone may send the others (before any token is checked), and a few
# thousand long ones would cost a worker megabytes.
_RESOLVED: ProcessCache[tuple[dict[str, Any] | None]] = ProcessCache(maxsize=10_000, ttl=None)
_KEPT_TEXT_MAX = 256


def resolves_to(request: HttpRequest, view: type) -> dict[str, Any] | None:
    """The keyword arguments Django's URL resolver passes ``view`` for this request (its path as Django decodes
    it), or None when Django would route it elsewhere (or nowhere)."""
    resolver, path = get_resolver(), request.path_info
    if len(path) > _KEPT_TEXT_MAX:
        return _resolved_kwargs(resolver.resolve, path, view)
    key = (resolver, path, view)
    resolved = _RESOLVED.get(key)
    if resolved is None:
        resolved = (_resolved_kwargs(resolver.resolve, path, view),)
        _RESOLVED.set(key, resolved)
    return None if resolved[0] is None else dict(resolved[0])


def _resolved_kwargs(resolve: Callable[[str], Any], path: str, view: type) -> dict[str, Any] | None:
    try:
        match = resolve(path)
    except Resolver404:
        return None
    if getattr(match.func, "view_class", None) is not view or match.args or getattr(match.func, "initkwargs", None):
        return None
    return match.kwargs


def drf_checks_reproducible(view: type) -> bool:
    """Whether :func:`authorized_token` decides exactly as DRF's ``APIView.initial`` would for ``view``: Bearer
    authentication first, :class:`~metering.authentication.HasScope` alone, no throttle, no versioning, DRF's
    default content negotiation. Otherwise a route hands every request to Django."""
    authenticators = list(getattr(view, "authentication_classes", ()))
    return (bool(authenticators) and authenticators[0] is BearerTokenAuthentication
            and list(getattr(view, "permission_classes", ())) == [HasScope]
            and not list(getattr(view, "throttle_classes", ()))
            and getattr(view, "versioning_class", None) is None
            and getattr(view, "content_negotiation_class", None) is DefaultContentNegotiation)


class _Negotiating:
    """What DRF's default content negotiation reads of a request (no query string: no ``?format=``)."""

    def __init__(self, request: HttpRequest) -> None:
        self.META = request.META
        self.headers = request.headers
        self.query_params = request.GET


def _negotiation(view: Any, request: Any) -> tuple[type, str]:
    renderer, media_type = view.content_negotiation_class().select_renderer(
        request, [renderer() for renderer in view.renderer_classes], None)
    return type(renderer), media_type


_default_negotiation: dict[type, tuple[type, str]] = {}
# The verdict per view and Accept header (with no query string, all DRF's negotiation reads): gateways send one or two.
_NEGOTIATED: ProcessCache[bool] = ProcessCache(maxsize=1_000, ttl=None)


def negotiated_as_default(view: type, request: HttpRequest) -> bool:
    """DRF's content negotiation of ``view`` for this request's ``Accept`` header picks the renderer and media
    type it picks without one (so the success answer is the one :func:`success_headers` found); False for
    anything else, e.g. ``Accept: text/html`` (Django answers 406)."""
    accept = request.META.get("HTTP_ACCEPT")
    if request.GET or len(accept or "") > _KEPT_TEXT_MAX:
        return _negotiated_as_default(view, request)
    key = (view, accept)
    verdict = _NEGOTIATED.get(key)
    if verdict is None:
        verdict = _negotiated_as_default(view, request)
        _NEGOTIATED.set(key, verdict)
    return verdict


def _negotiated_as_default(view: type, request: HttpRequest) -> bool:
    if view not in _default_negotiation:
        _default_negotiation[view] = _negotiation(view, _Negotiating(HttpRequest()))
    try:
        return _negotiation(view, _Negotiating(request)) == _default_negotiation[view]
    except Exception:  # noqa: BLE001 - 406 (or a 404 for a format DRF does not know): Django answers
        return False


def authorized_token(view: type, method: str, request: HttpRequest) -> ApiToken | None:
    """The request's Bearer token, when DRF would let ``method`` on ``view`` through to the handler for it: the
    view's checks are reproducible, content negotiation passes and the token is valid and has the scope. None:
    Django answers (a 401/403/406/429, or a staff session), the Bearer verdict kept in the request's environ."""
    if not drf_checks_reproducible(view) or not negotiated_as_default(view, request):
        return None
    try:
        token, _failure = request_bearer_token(request.META)
    except Exception:  # noqa: BLE001 - e.g. the database is down: Django answers (503), trying once more
        return None
    if token is None or not token_may(token, view, method):
        return None  # Django answers 401/403/429 (and counts the failure against the client's IP once)
    return token


# --- the success answer's headers, as Django's stack sets them --------------------------------------------------

@dataclass(frozen=True)
class Success:
    """The status line and headers of a view's success, with the place of ``Content-Length`` (which depends on
    the body) in them."""

    status: str
    headers: tuple[tuple[str, str], ...]
    length_at: int

    def answer(self, body: bytes) -> Answer:
        headers = list(self.headers)
        headers[self.length_at] = (headers[self.length_at][0], str(len(body)))
        return self.status, headers, body


_success: dict[tuple[type, str, bool], Success | None] = {}
_PLACEHOLDERS = (b"", b'{"placeholder": true}')


def success_headers(view: type, method: str, request: HttpRequest,
                    *, bodies: Sequence[bytes] = _PLACEHOLDERS) -> Success | None:
    """The status line and headers Django gives the success of ``method`` on ``view``, whose handler answers
    ``view.success_response(body)``: found once per view, method and scheme by running the configured middleware
    stack around the real DRF view class (its handler answering at once, with each of ``bodies`` to see that only
    ``Content-Length`` follows the body); forgotten when a setting changes. None (logged once): the route cannot
    answer like Django here (e.g. a middleware sets a cookie), so Django answers every such request."""
    key = (view, method, request.is_secure())
    if key not in _success:
        try:
            _success[key] = _render_success(view, method, request, bodies)
        except Exception:
            logger.exception("fast route of %s %s: no success answer like Django's; Django answers these requests",
                             method, view.__name__)
            _success[key] = None
    return _success[key]


def forget_learned(**kwargs: Any) -> None:
    """Forget the success headers, negotiations and resolved paths found so far (when a setting changes)."""
    _success.clear()
    _default_negotiation.clear()
    _NEGOTIATED.clear()
    _RESOLVED.clear()


setting_changed.connect(forget_learned, dispatch_uid="metering-fast-route-success-headers")


class _AnswerOnly(BaseHandler):
    """Django's configured middleware stack around one view, without URL resolution."""

    def __init__(self, view: Callable[..., HttpResponse]) -> None:
        super().__init__()
        self._view = view
        self.load_middleware()

    def _get_response(self, request: HttpRequest) -> HttpResponse:
        response: Any = self._view(request)
        return response.render() if callable(getattr(response, "render", None)) else response  # as Django does


def _render_success(view: Any, method: str, request: HttpRequest, bodies: Sequence[bytes]) -> Success:
    def handler(self: Any, request: Any, *args: Any, **kwargs: Any) -> HttpResponse:
        return view.success_response(self.placeholder)

    # The real view class (its allowed methods, renderers, headers), without authentication or permission, its
    # handler answering the placeholder body at once.
    stored: Any = type(f"Stored{view.__name__}", (view,), {
        "authentication_classes": [], "permission_classes": [], "placeholder": b"", method.lower(): handler})
    environ = {key: value for key, value in request.META.items()
               if key not in ("HTTP_COOKIE", "HTTP_AUTHORIZATION", "HTTP_ACCEPT", "CONTENT_LENGTH")}
    environ["REQUEST_METHOD"] = method
    found: list[tuple[str, Headers]] = []
    for body in bodies:
        environ["wsgi.input"] = io.BytesIO(b"")
        answer_only: Any = _AnswerOnly(stored.as_view(placeholder=body))  # Django keeps its chain unstubbed
        response = answer_only._middleware_chain(WSGIRequest(dict(environ)))
        if response.status_code >= 300 or response.cookies or response.content != body:
            raise RuntimeError(f"the fast route cannot answer like Django here: {response.status_code}")
        headers = list(response.items())
        if headers.count(("Content-Length", str(len(body)))) != 1:
            raise RuntimeError("the fast route cannot answer like Django here: no single Content-Length")
        found.append((f"{response.status_code} {response.reason_phrase}", headers))
    (status, headers), others = found[0], found[1:]
    length_at = headers.index(("Content-Length", str(len(bodies[0]))))
    for body, (other_status, other_headers) in zip(bodies[1:], others, strict=True):
        expected = list(headers)
        expected[length_at] = ("Content-Length", str(len(body)))
        if (other_status, other_headers) != (status, expected):
            raise RuntimeError("the fast route cannot answer like Django here: headers depend on the body")
    return Success(status, tuple(headers), length_at)


# --- the database connection ----------------------------------------------------------------------------------------

T = TypeVar("T")


def read_checked_by_use(read: Callable[[], T]) -> T:
    """``read()`` (statements that write nothing) without Django's health check of a reused connection (a ``SELECT 1``
    round trip before the request's first statement, ``CONN_HEALTH_CHECKS``): the read itself tells, and when it
    fails on a connection that then proves unusable (the server restarted, a proxy dropped it), the connection is
    closed and the read runs once more on a new one, as Django would have done after its check. Inside a transaction
    (where a broken connection cannot be replaced) the read just runs."""
    if connection.in_atomic_block:
        return read()
    reused = connection.connection is not None
    if reused:
        connection.health_check_done = True  # type: ignore[attr-defined]  # django-stubs lacks it
    try:
        return read()
    except Error:
        if not reused or connection.is_usable():
            raise
        connection.close()
        return read()


# --- WSGI -----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One fast route: ``takes`` is a cheap test of the method and path (no database, no parsing), ``answer`` the
    route's rule, giving the success answer or None for Django to answer (``environ`` then as Django needs it)."""

    name: str
    takes: Callable[[Environ], bool]
    answer: Callable[[Environ], Answer | None]


class FastRoutes:
    """WSGI middleware: the requests a route of ``routes`` takes and answers are answered here; everything else,
    and whatever a route hands on, by ``app``."""

    def __init__(self, app: Callable[..., Iterable[bytes]], routes: Sequence[Route]) -> None:
        self.app = app
        self.routes = tuple(routes)

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> Iterable[bytes]:
        route = next((route for route in self.routes if route.takes(environ)), None)
        if route is None:
            return self.app(environ, start_response)
        # The request's lifetime as Django's handler marks it: connections past their age or broken are closed.
        signals.request_started.send(sender=self.__class__, environ=environ)
        try:
            answer = route.answer(environ)
        finally:
            signals.request_finished.send(sender=self.__class__)
        if answer is None:
            return self.app(environ, start_response)
        status, headers, body = answer
        start_response(status, list(headers))
        return [body]
