"""The OpenAPI schema and its HTML docs, for staff sessions and ``read`` tokens (public with API_DOCS_PUBLIC=true).

- ``/api/schema/``: anonymous → 401 problem+json (``WWW-Authenticate: Bearer``); a token without ``read`` → 403.
- ``/api/docs/`` (Swagger UI) and ``/api/redoc/``: anonymous → a redirect to the admin login, back here after it.

The HTML pages run under the site's Content-Security-Policy: Swagger UI's start script is served by its own
request (drf-spectacular's split view), Redoc's from a static file, and the pages' inline styles carry the
response's nonce (templates/drf_spectacular/). Redoc's renderer injects ``<style>`` elements without a nonce and
builds its search worker from a ``blob:`` URL, so its page alone allows those two (never inline scripts).
"""

from __future__ import annotations

from typing import Any

from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_replace
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.utils.decorators import method_decorator
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView
from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from common.problems import PROBLEM_CONTENT_TYPE
from metering.authentication import HasScope


class DocsAccess(HasScope):
    """A token with the ``read`` scope or a staff session, as for every read of the API; anyone with
    ``API_DOCS_PUBLIC``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if settings.API_DOCS_PUBLIC:
            return True
        user = request.user
        if request.auth is None and user is not None and user.is_authenticated and user.is_active and user.is_staff:
            return True  # the docs describe the API; they hold no data a staff role could be denied
        return super().has_permission(request, view)


class _ProblemJsonMixin(APIView):
    """Refusals as problem+json, whatever the view renders otherwise (YAML schema, HTML pages)."""

    permission_classes = [DocsAccess]

    def handle_exception(self, exc: Exception) -> Response:
        self.request.accepted_renderer = JSONRenderer()
        self.request.accepted_media_type = PROBLEM_CONTENT_TYPE
        return super().handle_exception(exc)


class _HtmlDocsMixin(_ProblemJsonMixin):
    """Anonymous browsers go to the admin login, and come back after it."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, exceptions.NotAuthenticated):
            self.request.accepted_renderer = JSONRenderer()
            login = redirect_to_login(self.request.get_full_path())
            return Response(status=login.status_code, headers={"Location": login["Location"]})
        return super().handle_exception(exc)


class SchemaView(_ProblemJsonMixin, SpectacularAPIView):
    pass


class SwaggerView(_HtmlDocsMixin, SpectacularSwaggerSplitView):
    pass


@method_decorator(
    csp_replace({"style-src": [SELF, UNSAFE_INLINE], "worker-src": [SELF, "blob:"]}), name="dispatch"
)
class RedocView(_HtmlDocsMixin, SpectacularRedocView):
    pass


