"""The ingest fast route (metering.api.ingest_route) answers exactly as Django's stack does.

Each request goes, from the same state, once to Django's own WSGI application and once to the ingest route in front
of it (``FastRoutes``, as ``billing_site.wsgi`` serves it); status line, headers (order included) and body must be
the same bytes, and the route must answer successes itself and hand everything else on — with the token looked up,
the auth failure counted, the body parsed, the rate charged and the batch written once.
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any
from unittest import mock

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import OperationalError, close_old_connections, connection
from django.db.backends.utils import CursorWrapper

from billing_site.fast_routes import ROUTES
from metering import throttles
from metering.api import fast_route, ingest_route
from metering.api.fast_route import FastRoutes
from metering.api.ingest_route import INGEST_ROUTE
from metering.models import Event
from metering.services.tokens import api_token_create, api_token_revoke
from tests.builders import llm_event
from tests.security.conftest import clear_throttles
from tests.security.wsgi_calls import HANDED_ON_BY_EVERY_ROUTE, Answer, Spy, wsgi_call

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("keep_connection")]

CE = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
WINDOW_START = 1_800_000_000 - 1_800_000_000 % 60


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """The throttles' clock, stopped 3 s into a minute (and a 10-second ingest window)."""
    monkeypatch.setattr(throttles, "_now", lambda: WINDOW_START + 3.0)


@pytest.fixture
def routed(django_app) -> FastRoutes:
    return FastRoutes(django_app, [INGEST_ROUTE])


def call(app, method: str = "POST", path: str = "/api/v1/events", body: bytes = b"", content_type: str = CE,
         token: str | None = None, **environ: Any) -> Answer:
    return wsgi_call(app, method, path, body, content_type, token, **environ)


def event(**extra) -> bytes:
    return json.dumps(llm_event(event_id=str(uuid.uuid4()), **extra)).encode()


def batch(n: int) -> bytes:
    return json.dumps([llm_event(event_id=str(uuid.uuid4())) for _ in range(n)]).encode()


@pytest.fixture
def ingest_token(make_token) -> str:
    return make_token("ingest", name="gateway")


# --- successes: answered by the route, the same bytes as Django's ---------------------------------------------------


@pytest.mark.parametrize("path, content_type, make_body", [
    ("/api/v1/events", CE, event),
    ("/api/v1/events", CE_BATCH, lambda: batch(3)),
    ("/api/v1/events", f"{JSON}; charset=utf-8", event),
    ("/api/v1/events", JSON, lambda: batch(40)),  # past the one-statement size: the COPY path
    ("/api/v3/openmeter/events", CE, event),
    ("/v3/openmeter/events", CE_BATCH, lambda: batch(2)),
])
def test_a_success_is_answered_by_the_route_with_djangos_bytes(django_app, routed, ingest_token, path,
                                                             content_type, make_body):
    expected = call(django_app, path=path, body=make_body(), content_type=content_type, token=ingest_token)
    assert django_app.calls == 1
    stored = Event.objects.count()
    answer = call(routed, path=path, body=make_body(), content_type=content_type, token=ingest_token)
    assert answer == expected
    assert expected[0] in ("204 No Content", "202 Accepted")
    assert django_app.calls == 1, "the route handed a success on to Django"
    assert Event.objects.count() == stored * 2


def test_a_repeat_is_accepted_and_stored_once(routed, django_app, ingest_token):
    body = event()
    first, again = call(routed, body=body, token=ingest_token), call(routed, body=body, token=ingest_token)
    assert first == again and first[0] == "204 No Content"
    assert django_app.calls == 0 and Event.objects.count() == 1


def test_https_with_hsts_and_the_redirect_of_plain_http(settings, ingest_token):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 365 * 24 * 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    django_app = Spy()  # its middleware reads these settings when it is built, as a server's does at start
    routed = FastRoutes(django_app, [INGEST_ROUTE])
    https = {"HTTP_X_FORWARDED_PROTO": "https"}
    expected = call(django_app, body=event(), token=ingest_token, **https)
    answer = call(routed, body=event(), token=ingest_token, **https)
    assert answer == expected and django_app.calls == 1
    assert ("Strict-Transport-Security", "max-age=31536000") in answer[1]
    # plain HTTP: Django's redirect, nothing stored
    stored = Event.objects.count()
    assert call(routed, body=event(), token=ingest_token) == call(django_app, body=event(), token=ingest_token)
    assert call(routed, body=event(), token=ingest_token)[0].startswith("301")
    assert Event.objects.count() == stored


def test_the_headers_follow_the_settings(settings, django_app, routed, ingest_token):
    call(routed, body=event(), token=ingest_token)  # the headers found under the first settings
    settings.X_FRAME_OPTIONS = "SAMEORIGIN"
    answer = call(routed, body=event(), token=ingest_token)
    assert ("X-Frame-Options", "SAMEORIGIN") in answer[1]
    assert answer == call(django_app, body=event(), token=ingest_token)


# --- everything else: handed on, answered by Django once ------------------------------------------------------------


HOSTILE: dict[str, dict[str, Any]] = {
    **HANDED_ON_BY_EVERY_ROUTE,
    "text/plain": {"content_type": "text/plain"},
    "gzip": {"HTTP_CONTENT_ENCODING": "gzip"},
    "declared over 5 MiB": {"CONTENT_LENGTH": str(5 * 1024 * 1024 + 1)},
    "malformed JSON": {"body": b'{"id": '},
    "NUL escaped in a string": {"body": event(subject="a\u0000b")},
    "raw NUL byte": {"body": event().replace(b"kong-air", b"kong\x00air")},
    "broken UTF-8": {"body": event().replace(b"kong-air", b"kong-\xff\xfe")},
    "nested 1,000 deep": {"body": event()[:-1] + b', "deep": ' + b"[" * 1000 + b"]" * 1000 + b"}"},
    "id of the wrong type": {"body": event().replace(b'"id": "', b'"id": 5, "x": "')},
    "time of year 0001 with an offset": {"body": event(time="0001-01-01T00:00:00+01:00")},
    "time that is not a time": {"body": event(time="yesterday")},
    "data as a string": {"body": json.dumps({**llm_event(), "data": "tokens=5"}).encode()},
    "a batch as a single event": {"body": batch(2)},
    "an empty body": {"body": b""},
    "a trailing slash": {"path": "/api/v1/events/"},
    "GET with an ingest token": {"method": "GET"},
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_requests_are_handed_on_and_answered_as_django_does(django_app, routed, ingest_token, name):
    case = dict(HOSTILE[name])
    case.setdefault("token", ingest_token)
    body = case.pop("body", None)
    make = (lambda: body) if body is not None else event
    expected = call(django_app, body=make(), **case)
    stored = Event.objects.count()
    assert call(routed, body=make(), **case) == expected
    assert django_app.calls == 2, "the route answered a request it should have handed on"
    if not expected[0].startswith("2"):
        assert Event.objects.count() == stored  # nothing half-written
        assert not expected[0].startswith("5")


@pytest.mark.parametrize("accept", ["*/*", "application/json", "application/*, text/html;q=0.5"])
def test_an_accept_header_drf_takes_is_answered_by_the_route(django_app, routed, ingest_token, accept):
    expected = call(django_app, body=event(), token=ingest_token, HTTP_ACCEPT=accept)
    assert call(routed, body=event(), token=ingest_token, HTTP_ACCEPT=accept) == expected
    assert django_app.calls == 1 and Event.objects.count() == 2


def test_a_406_neither_writes_nor_spoils_the_routes_headers(django_app, routed, ingest_token):
    """DRF refuses ``Accept: text/html`` (406) before authenticating: the route must not store the events, and a
    first such request must not keep the route from answering the next ones."""
    refused = call(routed, body=event(), token=ingest_token, HTTP_ACCEPT="text/html")
    assert refused[0] == "406 Not Acceptable" and not Event.objects.exists()
    assert call(routed, body=event(), token=ingest_token)[0] == "204 No Content"
    assert call(routed, body=event(), token=ingest_token, HTTP_ACCEPT="text/html")[0] == "406 Not Acceptable"
    assert django_app.calls == 2 and Event.objects.count() == 1


def test_a_wrong_scope_and_a_revoked_token(django_app, routed, make_token):
    reader = make_token("read", name="reader")
    assert call(routed, body=event(), token=reader) == call(django_app, body=event(), token=reader)
    token, plain = api_token_create(name="gone", scopes=["ingest"])
    api_token_revoke(token=token)
    answer = call(routed, body=event(), token=plain)
    assert answer == call(django_app, body=event(), token=plain)
    assert answer[0] == "401 Unauthorized" and not Event.objects.exists()


def test_an_unknown_token_is_looked_up_once(routed, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert call(routed, body=event(), token="bbo_" + "y" * 43)[0] == "401 Unauthorized"


def test_a_bad_body_is_parsed_once(routed, ingest_token, monkeypatch):
    from metering.api import events as events_api

    calls = []
    real = events_api.parse_batch

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(events_api, "parse_batch", counted)
    status, headers, body = call(routed, body=b"[1, 2]", content_type=CE_BATCH, token=ingest_token)
    assert status == "400 Bad Request" and ("Content-Type", "application/problem+json") in headers
    assert json.loads(body)["errors"] and len(calls) == 1


def test_auth_failures_are_counted_once_per_request(settings, django_app, routed):
    """20 failures a minute from one address are answered 401, the 21st 429 — through the route as through Django."""
    settings.API_AUTH_FAILURES_PER_MINUTE = 20
    answers = {}
    for name, app in (("django", django_app), ("route", routed)):
        clear_throttles()
        answers[name] = [call(app, body=event(), token="bbo_" + secrets.token_urlsafe(32)) for _ in range(21)]
    assert [a[0] for a in answers["route"]] == ["401 Unauthorized"] * 20 + ["429 Too Many Requests"]
    assert answers["route"][-1] == answers["django"][-1]
    assert ("Retry-After", "57") in answers["route"][-1][1]
    assert [a[2] for a in answers["route"]] == [a[2] for a in answers["django"]]


def test_the_ingest_rate_limit_answers_alike_and_charges_once(django_app, routed):
    """A token of 1 event/s (10 per 10-second window): 8 pass, 5 more are 429, 11 at once are 413."""
    _, plain = api_token_create(name="slow", scopes=["ingest"], ingest_rate_limit=1)
    answers = {}
    for name, app in (("django", django_app), ("route", routed)):
        clear_throttles()
        answers[name] = [call(app, body=batch(n), content_type=CE_BATCH, token=plain) for n in (8, 5, 11, 2, 1)]
    statuses = [a[0][:3] for a in answers["route"]]
    assert statuses == ["204", "429", "413", "204", "429"]
    assert answers["route"] == answers["django"]
    assert Event.objects.count() == 2 * 10


def test_a_database_outage_answers_503_once_through_the_route(django_app, routed, ingest_token):
    call(routed, body=event(), token=ingest_token)  # the token is known (cached) and touched

    writes = []

    def fail(*args, **kwargs):
        writes.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    with mock.patch.object(CursorWrapper, "execute", fail), mock.patch.object(CursorWrapper, "executemany", fail):
        expected = call(django_app, body=event(), token=ingest_token)
        django_writes = len(writes)
        writes.clear()
        answer = call(routed, body=event(), token=ingest_token)
    assert answer == expected and answer[0] == "503 Service Unavailable"
    assert ("Retry-After", "10") in answer[1]
    assert len(writes) == django_writes, "the route's failed write was tried again by Django"


def test_a_chunked_body_is_handed_on_and_stored(django_app, routed, ingest_token):
    terminated: dict[str, Any] = {"wsgi.input_terminated": True}
    answer = call(routed, body=event(), token=ingest_token, CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked",
                  **terminated)
    assert answer[0] == "204 No Content" and django_app.calls == 1
    assert Event.objects.count() == 1


def test_a_failure_to_find_the_success_headers_hands_on(django_app, routed, ingest_token, monkeypatch, caplog):
    def broken(view, method, request, bodies):
        raise RuntimeError("boom")

    monkeypatch.setattr(fast_route, "_render_success", broken)
    fast_route._success.clear()
    try:
        assert call(routed, body=event(), token=ingest_token)[0] == "204 No Content"
        assert call(routed, body=event(), token=ingest_token)[0] == "204 No Content"
    finally:
        fast_route._success.clear()  # the other tests find the real headers again
    assert django_app.calls == 2 and Event.objects.count() == 2
    assert caplog.text.count("no success answer like Django's") == 1  # found out once, not on every request


def test_other_paths_never_meet_the_route(django_app, ingest_token, monkeypatch):
    monkeypatch.setattr(ingest_route, "ingest_answer", mock.Mock(side_effect=AssertionError("called")))
    routed = FastRoutes(django_app, [fast_route.Route("ingest", INGEST_ROUTE.takes, ingest_route.ingest_answer)])
    call(routed, method="GET", path="/api/v1/meters", token=ingest_token)
    call(routed, method="GET", path="/healthz")
    assert django_app.calls == 2


@pytest.mark.django_db(transaction=True)
def test_with_djangos_connection_handling(ingest_token):
    """With request_started/finished closing old connections as in a server, the route still answers and the
    connection is usable afterwards."""
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
    routed = FastRoutes(WSGIHandler(), [INGEST_ROUTE])
    for _ in range(3):
        assert call(routed, body=event(), token=ingest_token)[0] == "204 No Content"
    connection.ensure_connection()
    assert Event.objects.count() == 3


def test_the_wsgi_entry_point_serves_through_the_route():
    from billing_site import wsgi

    assert isinstance(wsgi.application, FastRoutes)
    assert wsgi.application.app is wsgi.django_application
    assert wsgi.application.routes == ROUTES and INGEST_ROUTE in ROUTES
