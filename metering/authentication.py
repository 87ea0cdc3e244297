"""Bearer-token authentication and the one authorization rule of every API of the project.

Authentication: ``Authorization: Bearer <token>``. Missing, unknown, revoked or malformed token → 401
problem+json; after ``API_AUTH_FAILURES_PER_MINUTE`` failures from one client IP within a minute → 429 with
``Retry-After`` (see :mod:`metering.throttles`). A valid token is never counted or slowed.

Authorization (:class:`HasScope`), the same for every API view:

- Each view declares, per HTTP method it implements, the token scope it needs (``required_scopes``, e.g.
  ``{"GET": "read", "POST": "manage"}``), and the model it acts on (``permission_model = "metering.meter"``).
  Actions that are not a plain add/change/delete name their Django permission instead
  (``required_permissions = {"POST": "invoicing.issue_invoice"}``). A view that only reads, or only writes by POST,
  subclasses :class:`metering.api.views.ReadView` or :class:`~metering.api.views.WriteView`, which declare the scope.
- An **API token** may do what its scopes say (scopes are not nested: ``manage`` does not include ``read``).
- A **staff session** (a user logged in to the admin) may do exactly what that user's Django permissions allow
  in the admin: ``view_<model>`` for a read (GET, HEAD, OPTIONS, and POSTs the view declares with the ``read``
  scope, such as the meter query), ``add_``/``change_``/``delete_<model>`` for POST/PUT and PATCH/DELETE, or the
  view's explicit permission. Inactive or non-staff users → 403.
- Posting events (the ``ingest`` scope) is for tokens only, superusers included: usage is billed, so it comes only
  from a named, revocable, rate-limited gateway token (the admin has no way to add events either), never from a
  browser session, where a forged cross-site request or a mistaken click would create billable usage.
- A method a view implements but does not declare is refused to everyone (fail closed); a method it does not
  implement answers 405.
"""

from __future__ import annotations

from typing import Any, NoReturn

from rest_framework import authentication, exceptions, permissions

from .models import ApiToken
from .selectors.tokens import api_token_by_plain
from .services.tokens import api_token_touch
from .throttles import auth_failure_record

TOKEN_MAX_LENGTH = 200  # ours are 47 characters; anything much longer is not a token of ours
TOKEN_ONLY_SCOPES = frozenset({ApiToken.Scope.INGEST})
SESSION_WRITE_ACTIONS = {"POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}


class Principal:
    """``request.user`` for a request authenticated by something that is not a Django user (an API token, a
    customer portal link): authenticated and active, never staff or superuser, without a primary key."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    is_anonymous = False
    pk = None

    def __init__(self, username: str) -> None:
        self.username = username

    def __str__(self) -> str:
        return self.username


class TokenPrincipal(Principal):
    """``request.user`` for a token-authenticated request (tokens are not Django users)."""

    def __init__(self, token: ApiToken) -> None:
        super().__init__(f"token:{token.prefix}")
        self.token = token


class BearerAuthentication(authentication.BaseAuthentication):
    """An ``Authorization: Bearer <secret>`` scheme: a 401 names it in ``WWW-Authenticate``."""

    keyword = "Bearer"

    def authenticate_header(self, request) -> str:
        return self.keyword


def api_actor(request) -> tuple[Any, str]:
    """Who a write through the API is recorded as: ``(user, "")`` for a staff session, ``(None, "api")`` for an
    API token."""
    user = request.user if getattr(request.user, "is_authenticated", False) and request.auth is None else None
    return user, "" if user else "api"


def looks_like_token(value: str) -> bool:
    """Printable ASCII without spaces, of a sane length: anything else fails without a database lookup."""
    return 0 < len(value) <= TOKEN_MAX_LENGTH and value.isascii() and value.isprintable() and " " not in value


def bearer_token(header: str | bytes | None) -> tuple[ApiToken | None, str | None]:
    """The rule for an ``Authorization`` header: ``(token, None)`` for a valid Bearer token (its use recorded),
    ``(None, None)`` when the header is absent or of another scheme (e.g. Basic: other authenticators decide),
    ``(None, why)`` for a failed Bearer authentication (401, counted against the client's IP by the caller).
    Used by :class:`BearerTokenAuthentication` and by the ingest fast route (:mod:`metering.api.ingest_route`)."""
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    if not header:
        return None, None
    scheme, _, value = str(header).partition(" ")
    if scheme.lower() != "bearer":
        return None, None
    value = value.strip()
    if not value:
        return None, "The Authorization header has no token after 'Bearer'."
    if not looks_like_token(value):
        return None, "Malformed API token."
    token = api_token_by_plain(value)
    if token is None:
        return None, "Unknown or revoked API token."
    api_token_touch(token=token)
    return token, None


VERDICT_KEY = "metering.bearer_verdict"  # WSGI environ key: no client header can name it (those are HTTP_*)


def request_bearer_token(meta: dict) -> tuple[ApiToken | None, str | None]:
    """:func:`bearer_token` for a request's ``Authorization`` header, decided once per request: the verdict is kept
    in the request's environ, so the DRF authenticator does not look an unknown token up again after the ingest
    fast route handed the request on."""
    header = meta.get("HTTP_AUTHORIZATION", "")
    kept = meta.get(VERDICT_KEY)
    if kept is not None and kept[0] == header:
        return kept[1]
    verdict = bearer_token(header)
    meta[VERDICT_KEY] = (header, verdict)
    return verdict


def token_may(token: ApiToken, view, method: str) -> bool:
    """Whether an API token may call ``method`` on ``view`` (a view class or instance): the token side of
    :class:`HasScope` (a method the view does not implement is not this rule's to refuse: it answers 405)."""
    scope = required_scope(view, method)
    return scope is not None and token.has_scope(scope)


class BearerTokenAuthentication(BearerAuthentication):
    def authenticate(self, request):
        token, failure = request_bearer_token(request.META)
        if failure is not None:
            self.fail(request, failure)
        if token is None:
            return None  # no Bearer header: leave it to other authenticators
        return TokenPrincipal(token), token

    @staticmethod
    def fail(request, message: str) -> NoReturn:
        auth_failure_record(request)  # 429 instead, once this address failed too often
        raise exceptions.AuthenticationFailed(message)


def required_scope(view, method: str) -> str | None:
    """The token scope ``method`` needs on ``view``: as declared; undeclared reads need ``read``; None for an
    undeclared write (refused)."""
    declared = getattr(view, "required_scopes", {}).get(method)
    if declared is not None:
        return declared
    return ApiToken.Scope.READ if method in permissions.SAFE_METHODS else None


def required_permission(view, method: str) -> str | None:
    """The Django permission a staff session needs for ``method`` on ``view``; None when no session may do it
    (token-only scopes, undeclared methods or models)."""
    explicit = getattr(view, "required_permissions", {}).get(method)
    if explicit:
        return explicit
    scope = required_scope(view, method)
    model = getattr(view, "permission_model", "")
    if scope is None or scope in TOKEN_ONLY_SCOPES or "." not in model:
        return None
    app_label, model_name = model.split(".", 1)
    action = "view" if scope == ApiToken.Scope.READ or method in permissions.SAFE_METHODS else (
        SESSION_WRITE_ACTIONS.get(method))
    return f"{app_label}.{action}_{model_name}" if action else None


def implements(view, method: str) -> bool:
    return method.lower() in getattr(view, "http_method_names", ()) and hasattr(view, method.lower())


class HasScope(permissions.BasePermission):
    """The one rule: tokens by their scopes, staff sessions by the Django permission of the model the view acts
    on (see the module's docstring)."""

    def has_permission(self, request, view) -> bool:
        method = request.method
        token = request.auth if isinstance(request.auth, ApiToken) else None
        user = request.user
        if token is None and (user is None or not user.is_authenticated):
            raise exceptions.NotAuthenticated("Send 'Authorization: Bearer <token>'.")
        if not implements(view, method):
            return True  # the view answers 405
        scope = required_scope(view, method)
        if token is not None:
            if token_may(token, view, method):
                return True
            self.message = (f"This token does not have the '{scope}' scope." if scope
                            else f"{method} is not open to API tokens here.")
            return False
        if not (user.is_active and user.is_staff):
            self.message = "Only active staff users or API tokens may use this API."
            return False
        permission = required_permission(view, method)
        if permission is None:
            self.message = ("Posting events needs an API token with the ingest scope; staff sessions cannot "
                            "post events." if scope in TOKEN_ONLY_SCOPES
                            else f"{method} is not open to staff sessions here.")
            return False
        if user.has_perm(permission):
            return True
        self.message = f"Your account does not have the permission {permission!r}."
        return False
