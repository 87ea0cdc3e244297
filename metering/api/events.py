"""The event door: ``POST /api/v1/events`` (204), ``POST /api/v3/openmeter/events`` and
``POST /v3/openmeter/events`` (202), and ``GET /api/v1/events`` (OpenMeter's list)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from common.problems import Problem
from common.time import format_rfc3339

from ..authentication import HasScope
from ..cloudevents import (
    MAX_BATCH_EVENTS,
    MAX_BODY_BYTES,
    MAX_STRING_LENGTH,
    MEDIA_BATCH,
    MEDIA_JSON,
    MEDIA_SINGLE,
    REQUIRED_STRING_FIELDS,
    SUPPORTED_MEDIA_TYPES,
    CloudEventsError,
    media_type_of,
    parse_batch,
    parse_events,
    unstorable_data,
)
from ..enrichment import enrich_events
from ..models import ApiToken
from ..selectors.events import MAX_LIST_LIMIT, events_list
from ..services.ingest import EventsNotStorable, events_ingest
from ..throttles import ingest_rate_charge
from .fast_route import raise_handed_refusal
from .params import datetime_param, int_param
from .schema import DATE_TIME_DESCRIPTION, NO_NUL, component, date_time, problems

# --- OpenAPI description (schema only; the body is validated by metering.cloudevents) ---------------------

_CLOUDEVENT_STRING = {"type": "string", "minLength": 1, "maxLength": MAX_STRING_LENGTH, "pattern": NO_NUL}
CLOUD_EVENT = component("CloudEvent", {
    "type": "object",
    "description": "A CloudEvents 1.0 event. Other members (`datacontenttype`, extensions) are accepted and "
                   "ignored. At most 64 KiB of JSON per event.",
    "required": list(REQUIRED_STRING_FIELDS),
    "properties": {
        "id": {**_CLOUDEVENT_STRING, "description": "Unique per `source`: a repeat is accepted and ignored."},
        "source": _CLOUDEVENT_STRING,
        "specversion": {"type": "string", "enum": ["1.0"]},
        "type": {**_CLOUDEVENT_STRING, "description": "The event type meters select, e.g. `kong.llm_request`."},
        "subject": {**_CLOUDEVENT_STRING, "description": "Who used it, e.g. a Kong consumer."},
        "time": date_time("When it happened (RFC 3339 with a UTC offset); missing or null: the time of receipt.",
                          nullable=True),
        "data": {"type": ["object", "null"], "description": "The payload meters read with JSONPath."},
    },
    "example": {"id": "5c10fade-1c9e-4d6c-8275-c52c36731d3c", "source": "kong", "specversion": "1.0",
                "type": "kong.llm_request", "subject": "kong-air", "time": "2026-03-27T10:00:00Z",
                "data": {"tokens": 120, "model": "gpt-4o", "provider": "openai", "type": "request"}},
})
_BATCH = {"type": "array", "items": CLOUD_EVENT, "maxItems": MAX_BATCH_EVENTS}
INGEST_BODY = {
    MEDIA_SINGLE: CLOUD_EVENT,
    MEDIA_BATCH: _BATCH,
    MEDIA_JSON: {"oneOf": [CLOUD_EVENT, _BATCH]},
}
INGESTED_EVENT = component("IngestedEvent", {
    "type": "object",
    "required": ["event", "ingestedAt", "storedAt", "validationError"],
    "properties": {
        "event": {**CLOUD_EVENT, "description": "The event as stored (its `time` in UTC)."},
        "ingestedAt": date_time("When it was received."),
        "storedAt": date_time("When it was stored (the same instant as `ingestedAt`)."),
        "validationError": {"type": ["string", "null"],
                            "description": "Why the event is not counted or billed, e.g. `no meter found for "
                                           "event type: X`, `no customer found for event subject: Y`."},
        "customerId": {"type": "string", "description": "The key of the customer the subject belongs to."},
        "billedOn": {"type": "string", "description": "The number of the invoice that billed the event."},
    },
})


def _date_time_parameter(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(name, OpenApiTypes.DATETIME, description=f"{description} {DATE_TIME_DESCRIPTION}")


def read_body_limited(meta: Mapping[str, Any], read: Callable[[int], bytes]) -> bytes:
    """The request body, refusing (413) anything over the limit before reading it all into memory."""
    length = meta.get("CONTENT_LENGTH")
    if length and length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise Problem(413, "Request body too large",
                      f"The body is {int(length):,} bytes; the limit is {MAX_BODY_BYTES:,} bytes.")
    body = read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise Problem(413, "Request body too large", f"The limit is {MAX_BODY_BYTES:,} bytes.")
    return body


def unsupported_media(meta: Mapping[str, Any]) -> Problem | None:
    """415 for a Content-Type other than the three JSON ones, or a compressed body; None when both are fine."""
    if media_type_of(meta.get("CONTENT_TYPE")) is None:
        return Problem(415, "Unsupported Media Type",
                       f"Content-Type must be one of: {', '.join(SUPPORTED_MEDIA_TYPES)}.")
    if meta.get("HTTP_CONTENT_ENCODING", "identity").lower() not in ("", "identity"):
        return Problem(415, "Unsupported Media Type", "Content-Encoding is not supported; send plain JSON.")
    return None


def events_post(*, token: ApiToken | None, meta: Mapping[str, Any], read: Callable[[int], bytes]) -> None:
    """The event door's rule for an authenticated, authorized POST, shared by :class:`EventsView` and the WSGI
    fast route (:mod:`metering.api.ingest_route`): media type (415), size (413), CloudEvents validation (400),
    the token's ingest rate (429/413), then the all-or-nothing write; returns once the events are committed.
    Errors are raised (``Problem``, the throttles' exceptions, the database's for an outage)."""
    problem = unsupported_media(meta)
    if problem is not None:
        raise problem
    media_type = media_type_of(meta.get("CONTENT_TYPE"))
    assert media_type is not None
    body = read_body_limited(meta, read)
    now = timezone.now()
    try:
        batch = parse_batch(body, media_type, now=now)
    except CloudEventsError as exc:
        raise Problem(exc.status, exc.title, str(exc), errors=[e.as_dict() for e in exc.errors]) from None
    ingest_rate_charge(token, batch.received)  # 429 beyond the token's ingest rate limit, if it has one
    try:
        events_ingest(rows=batch, received_at=now)
    except EventsNotStorable:
        # Rare: the per-event path's rows, one per event of the body, so that the errors' indexes are the body's.
        refusal = unstorable_data(parse_events(body, media_type, now=now))
        raise Problem(refusal.status, refusal.title, str(refusal),
                      errors=[e.as_dict() for e in refusal.errors]) from None


class EventsView(APIView):
    """POST ingests CloudEvents (ingest scope); GET lists ingested events (read scope)."""

    permission_classes = [HasScope]
    required_scopes = {"POST": "ingest", "GET": "read"}
    permission_model = "metering.event"
    parser_classes: list = []  # the body is parsed by metering.cloudevents, never by a DRF parser
    success_status = 204

    @extend_schema(
        operation_id="ingestEvents",
        tags=["Events"],
        summary="Ingest events",
        description="One CloudEvent (`application/cloudevents+json`), a batch (`application/cloudevents-batch+json`) "
                    "or either as `application/json` (`; charset=utf-8` accepted). A batch is all or nothing: any "
                    "invalid event rejects it (400, `errors` naming each event's `index` and `field`). Needs the "
                    "`ingest` scope.",
        request=INGEST_BODY,
        responses={204: OpenApiResponse(description="Stored (repeats of an (source, id) are ignored)."),
                   **problems(400, 413, 415)},
    )
    def post(self, request):
        raise_handed_refusal(request.META)  # what events_post raised in the ingest fast route, for this request
        events_post(token=request.auth, meta=request.META, read=request._request.read)
        return self.success_response()

    @classmethod
    def success_response(cls, body: bytes = b"") -> Response:
        """The answer once the events are committed (no body), here and in the ingest fast route."""
        return Response(status=cls.success_status)

    @extend_schema(
        operation_id="listEvents",
        tags=["Events"],
        summary="List ingested events",
        description="Newest first, with each event's problem (`validationError`). Needs the `read` scope.",
        parameters=[
            _date_time_parameter("from", "Events at or after this time (inclusive; default: 72 hours ago)."),
            _date_time_parameter("to", "Events at or before this time (inclusive)."),
            OpenApiParameter("subject", str, description="Part of the subject."),
            OpenApiParameter("id", str, description="Part of the event id."),
            _date_time_parameter("ingestedAtFrom", "Received at or after this time (inclusive)."),
            _date_time_parameter("ingestedAtTo", "Received at or before this time (inclusive)."),
            OpenApiParameter("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT,
                                       "default": MAX_LIST_LIMIT}, description="At most this many events."),
        ],
        responses={200: {"type": "array", "items": INGESTED_EVENT}, **problems(400)},
    )
    def get(self, request):
        params = request.query_params
        events = events_list(
            now=timezone.now(),
            time_from=datetime_param(params, "from"),
            time_to=datetime_param(params, "to"),
            subject=params.get("subject") or None,
            event_id=params.get("id") or None,
            ingested_from=datetime_param(params, "ingestedAtFrom"),
            ingested_to=datetime_param(params, "ingestedAtTo"),
            limit=int_param(params, "limit", default=MAX_LIST_LIMIT, minimum=1, maximum=MAX_LIST_LIMIT),
        )
        extras = enrich_events(events)
        return Response([
            {
                "event": event.as_cloudevent(),
                "ingestedAt": format_rfc3339(event.ingested_at),
                "storedAt": format_rfc3339(event.ingested_at),
                **extras.get(event.pk, {"validationError": None}),
            }
            for event in events
        ])


class KongEventsView(EventsView):
    """The Kong plugin's layout of the same door: POST only, answers 202."""

    http_method_names = ["post", "options"]
    success_status = 202

    @extend_schema(
        operation_id="ingestEventsKong",
        tags=["Events"],
        summary="Ingest events (Kong plugin layout)",
        description="The same door as `POST /api/v1/events`, answering 202 (also at `/v3/openmeter/events`).",
        request=INGEST_BODY,
        responses={202: OpenApiResponse(description="Stored (repeats of an (source, id) are ignored)."),
                   **problems(400, 413, 415)},
    )
    def post(self, request):
        return super().post(request)


@extend_schema(exclude=True)
class KongEventsAliasView(KongEventsView):
    """``/v3/openmeter/events`` without the ``/api`` prefix (the same contract, documented once)."""
