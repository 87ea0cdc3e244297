"""``POST /stripe/webhooks``: Stripe's signed events, each stored once and handled."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from common.problems import problem_json_response

from ..services.stripe_webhooks import webhook_receive
from ..stripe_gateway import WebhookSignatureError

MAX_WEBHOOK_BYTES = 1024 * 1024


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    length = request.META.get("CONTENT_LENGTH") or "0"
    if not (length.isascii() and length.isdigit()):
        return problem_json_response(400, "Bad Request", "Content-Length must be a number of bytes.")
    if int(length) > MAX_WEBHOOK_BYTES:
        return problem_json_response(413, "Content Too Large", "Stripe events are far smaller than 1 MiB.")
    try:
        stored, new = webhook_receive(payload=request.body, signature=request.headers.get("Stripe-Signature"))
    except WebhookSignatureError as exc:
        return problem_json_response(400, "Invalid webhook", str(exc))
    return JsonResponse({"received": True, "duplicate": not new, "outcome": stored.outcome})
