"""Bearer-token authentication and scope permissions for every API of the project.

Missing, unknown or revoked token → 401; a token without the needed scope → 403 (both problem+json via
the project's exception handler). Staff users logged in to the admin may use the read and manage APIs
from the browser.
"""

from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from .models import ApiToken
from .selectors.tokens import api_token_by_plain
from .services.tokens import api_token_touch


class TokenPrincipal:
    """``request.user`` for a token-authenticated request (tokens are not Django users)."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    is_anonymous = False

    def __init__(self, token: ApiToken) -> None:
        self.token = token
        self.pk = None
        self.username = f"token:{token.prefix}"

    def __str__(self) -> str:
        return self.username


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return None  # e.g. Basic: leave it to other authenticators
        value = value.strip()
        if not value:
            raise exceptions.AuthenticationFailed("The Authorization header has no token after 'Bearer'.")
        token = api_token_by_plain(value)
        if token is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API token.")
        api_token_touch(token=token)
        return TokenPrincipal(token), token

    def authenticate_header(self, request) -> str:
        return self.keyword


class HasScope(permissions.BasePermission):
    """The view names the scope it needs per HTTP method in ``required_scopes`` (e.g. ``{"POST": "ingest"}``).

    Methods not listed need ``read``. A staff session needs the Django permission the view names for the method
    in ``required_permissions`` (e.g. ``{"POST": "invoicing.issue_invoice"}``), where it names one.
    """

    def has_permission(self, request, view) -> bool:
        scope = getattr(view, "required_scopes", {}).get(request.method, ApiToken.Scope.READ)
        token = request.auth if isinstance(request.auth, ApiToken) else None
        if token is not None:
            if token.has_scope(scope):
                return True
            self.message = f"This token does not have the '{scope}' scope."
            return False
        user = request.user
        if user is None or not user.is_authenticated:
            raise exceptions.NotAuthenticated("Send 'Authorization: Bearer <token>'.")
        if user.is_active and user.is_staff:
            permission = getattr(view, "required_permissions", {}).get(request.method)
            if permission is None or user.has_perm(permission):
                return True
            self.message = f"Your account does not have the permission {permission!r}."
            return False
        self.message = "Only staff users or API tokens may use this API."
        return False
