"""The event door: ``POST /api/v1/events`` (204), ``POST /api/v3/openmeter/events`` and
``POST /v3/openmeter/events`` (202), and ``GET /api/v1/events`` (OpenMeter's list)."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from common.problems import Problem
from common.time import format_rfc3339

from ..authentication import HasScope
from ..cloudevents import (
    MAX_BODY_BYTES,
    SUPPORTED_MEDIA_TYPES,
    CloudEventsError,
    media_type_of,
    parse_events,
    unstorable_data,
)
from ..enrichment import enrich_events
from ..selectors.events import MAX_LIST_LIMIT, events_list
from ..services.ingest import EventsNotStorable, events_ingest
from ..throttles import ingest_rate_charge
from .params import datetime_param, int_param


def read_body_limited(request) -> bytes:
    """The request body, refusing (413) anything over the limit before reading it all into memory."""
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isascii() and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise Problem(413, "Request body too large",
                      f"The body is {int(length):,} bytes; the limit is {MAX_BODY_BYTES:,} bytes.")
    body = request._request.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise Problem(413, "Request body too large", f"The limit is {MAX_BODY_BYTES:,} bytes.")
    return body


class EventsView(APIView):
    """POST ingests CloudEvents (ingest scope); GET lists ingested events (read scope)."""

    permission_classes = [HasScope]
    required_scopes = {"POST": "ingest", "GET": "read"}
    permission_model = "metering.event"
    parser_classes: list = []  # the body is parsed by metering.cloudevents, never by a DRF parser
    success_status = 204

    @extend_schema(operation_id="ingestEvents", request={m: {"type": "object"} for m in SUPPORTED_MEDIA_TYPES},
                   responses={204: None, 202: None})
    def post(self, request):
        media_type = media_type_of(request.META.get("CONTENT_TYPE"))
        if media_type is None:
            raise Problem(415, "Unsupported Media Type",
                          f"Content-Type must be one of: {', '.join(SUPPORTED_MEDIA_TYPES)}.")
        if request.META.get("HTTP_CONTENT_ENCODING", "identity").lower() not in ("", "identity"):
            raise Problem(415, "Unsupported Media Type", "Content-Encoding is not supported; send plain JSON.")
        body = read_body_limited(request)
        now = timezone.now()
        try:
            rows = parse_events(body, media_type, now=now)
        except CloudEventsError as exc:
            raise Problem(exc.status, exc.title, str(exc), errors=[e.as_dict() for e in exc.errors]) from None
        ingest_rate_charge(request.auth, len(rows))  # 429 beyond the token's ingest rate limit, if it has one
        try:
            events_ingest(rows=rows, received_at=now)
        except EventsNotStorable:
            refusal = unstorable_data(rows)
            raise Problem(refusal.status, refusal.title, str(refusal),
                          errors=[e.as_dict() for e in refusal.errors]) from None
        return Response(status=self.success_status)

    @extend_schema(operation_id="listEvents", parameters=[
        OpenApiParameter("from", str), OpenApiParameter("to", str), OpenApiParameter("subject", str),
        OpenApiParameter("id", str), OpenApiParameter("ingestedAtFrom", str), OpenApiParameter("ingestedAtTo", str),
        OpenApiParameter("limit", int),
    ], responses={200: OpenApiTypes.OBJECT})
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

    @extend_schema(operation_id="ingestEventsKong", request={m: {"type": "object"} for m in SUPPORTED_MEDIA_TYPES},
                   responses={202: None})
    def post(self, request):
        return super().post(request)


@extend_schema(exclude=True)
class KongEventsAliasView(KongEventsView):
    """``/v3/openmeter/events`` without the ``/api`` prefix (the same contract, documented once)."""
