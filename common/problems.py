"""RFC 9457 problem details (``application/problem+json``) for every API error.

DRF's exception handler is replaced by :func:`problem_exception_handler`; views raise :class:`Problem`
for errors that carry extra members (e.g. ``errors: [{index, field, message}]`` for a bad batch).

An outage of the database or of the broker (Redis) is not the client's fault nor a bug: it is answered
503 with ``Retry-After`` (:func:`is_outage`), so gateways retry later instead of treating it as a failure
(DRF views here; other views through :class:`common.middleware.OutageMiddleware`).
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis.exceptions
from django.db import InterfaceError, OperationalError
from django.http import HttpResponse, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

PROBLEM_CONTENT_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = 10

logger = logging.getLogger(__name__)

# Raised when a service is down or unreachable: the database (Django wraps every driver's connection errors in
# these two), the Celery broker (kombu) and Redis used directly (a cache).
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


class Problem(exceptions.APIException):
    """An API error with a title, a detail and optional extra members (``errors`` and the like)."""

    def __init__(self, status_code: int, title: str, detail: str = "", **extra: Any) -> None:
        self.status_code = status_code
        self.title = title
        self.extra = extra
        super().__init__(detail=detail or title)


def problem_body(status_code: int, title: str, detail: str = "", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status_code}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return body


def problem_json_response(status_code: int, title: str, detail: str = "", **extra: Any) -> HttpResponse:
    """A plain Django response, for views outside DRF (health, webhooks, 404 handler)."""
    return JsonResponse(
        problem_body(status_code, title, detail, **extra), status=status_code, content_type=PROBLEM_CONTENT_TYPE
    )


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGE_ERRORS)


def outage_body(exc: BaseException) -> dict[str, Any]:
    """The 503 problem for an outage (logged; the driver's message stays in the log, not in the answer)."""
    logger.error("service unavailable: %s: %s", type(exc).__name__, exc)
    return problem_body(503, "Service Unavailable",
                        f"A service this request needs is unavailable; retry in {RETRY_AFTER_SECONDS} seconds.")


def outage_response(exc: BaseException) -> HttpResponse:
    """A plain Django 503 problem+json with ``Retry-After``, for views outside DRF."""
    response = JsonResponse(outage_body(exc), status=503, content_type=PROBLEM_CONTENT_TYPE)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _flatten_validation_errors(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """DRF's nested ``{field: [messages]}`` as a flat ``[{field, message}]`` list."""
    errors: list[dict[str, str]] = []
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            errors.extend(_flatten_validation_errors(value, name))
    elif isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict | list):
                errors.extend(_flatten_validation_errors(item, prefix))
            else:
                errors.append({"field": prefix or "non_field_errors", "message": str(item)})
    else:
        errors.append({"field": prefix or "non_field_errors", "message": str(detail)})
    return errors


_TITLES = {
    status.HTTP_400_BAD_REQUEST: "Bad Request",
    status.HTTP_401_UNAUTHORIZED: "Unauthorized",
    status.HTTP_403_FORBIDDEN: "Forbidden",
    status.HTTP_404_NOT_FOUND: "Not Found",
    status.HTTP_405_METHOD_NOT_ALLOWED: "Method Not Allowed",
    status.HTTP_406_NOT_ACCEPTABLE: "Not Acceptable",
    status.HTTP_409_CONFLICT: "Conflict",
    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: "Content Too Large",
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE: "Unsupported Media Type",
    status.HTTP_429_TOO_MANY_REQUESTS: "Too Many Requests",
}


def problem_exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, Problem):
        body = problem_body(exc.status_code, exc.title, str(exc.detail), **exc.extra)
        return Response(body, status=exc.status_code, content_type=PROBLEM_CONTENT_TYPE)
    if is_outage(exc):
        return Response(outage_body(exc), status=503, content_type=PROBLEM_CONTENT_TYPE,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    response = exception_handler(exc, context)
    if response is None:
        return None  # unexpected errors: Django's 500 handling and logging
    title = _TITLES.get(response.status_code, "Error")
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten_validation_errors(exc.detail)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        body = problem_body(response.status_code, "Validation failed", detail, errors=errors)
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else str(response.data)
        body = problem_body(response.status_code, title, str(detail))
    response.data = body
    response.content_type = PROBLEM_CONTENT_TYPE
    return response
