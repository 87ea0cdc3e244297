"""Project-level views: health, and problem+json 404/500 for API paths."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.defaults import page_not_found, server_error

from .health import health_report
from .problems import problem_json_response

API_PREFIXES = ("/api/", "/v3/", "/stripe/")


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    healthy, report = health_report()
    return JsonResponse(report, status=200 if healthy else 503)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith(API_PREFIXES):
        return problem_json_response(404, "Not Found", f"No API resource at {request.path}")
    return page_not_found(request, exception)


def server_failure(request: HttpRequest) -> HttpResponse:
    if request.path.startswith(API_PREFIXES):
        return problem_json_response(500, "Internal Server Error", "The server failed; the error is logged.")
    return server_error(request)
