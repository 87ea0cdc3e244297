"""The entitlement check's fast route (customers.api.entitlement_route) answers exactly as Django's stack does.

Each request goes, from the same state, once to Django's own WSGI application and once to the fast routes in front
of it (as ``billing_site.wsgi`` serves it); status line, headers (order included) and body must be the same bytes.
The route must answer the successes itself (Django's handler not called) and hand everything else on, with the
token looked up and an auth failure counted once, and the check run once.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any
from unittest import mock

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import OperationalError, close_old_connections, connection, connections, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from billing_site import fast_routes
from catalog.services.plans import RateCardSpec
from customers.api import entitlements
from customers.api.entitlement_route import ENTITLEMENT_ROUTE
from customers.models import Customer
from customers.services.subscriptions import subscription_create
from metering import throttles
from metering.api import fast_route
from metering.api.fast_route import FastRoutes
from metering.services.tokens import api_token_create, api_token_revoke
from tests import builders
from tests.builders import D, grant, ingest, iso, llm_event, quota, sso_feature, token_plan
from tests.security.conftest import clear_throttles
from tests.security.wsgi_calls import HANDED_ON_BY_EVERY_ROUTE, Answer, Spy, wsgi_call

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("keep_connection")]

WINDOW_START = 1_800_000_000 - 1_800_000_000 % 60
VALUE = "/api/v1/customers/{}/entitlements/{}/value"


@pytest.fixture(autouse=True)
def clock(monkeypatch):
    """The throttles' clock, stopped 3 s into a minute."""
    monkeypatch.setattr(throttles, "_now", lambda: WINDOW_START + 3.0)


@pytest.fixture(autouse=True)
def headers_found_afresh():
    """Each test's first request is the first the route meets (what it learns must not depend on that request)."""
    fast_route.forget_learned()
    yield
    fast_route.forget_learned()


@pytest.fixture
def routed(django_app) -> FastRoutes:
    return fast_routes.with_fast_routes(django_app)


def wire(text: str) -> str:
    """``PATH_INFO`` as a WSGI server gives a path sent in UTF-8: its bytes as latin-1 text."""
    return text.encode().decode("latin-1")


def call(app, path: str = VALUE.format("kong-air", "ai-token"), method: str = "GET", token: str | None = None,
         **environ: Any) -> Answer:
    return wsgi_call(app, method, path, token=token, **environ)


def both(django_app, routed, **request: Any) -> tuple[Answer, Answer]:
    """Django's answer and the route's, to the same request from the same state."""
    return call(django_app, **request), call(routed, **request)


def subscribed(*extra: RateCardSpec, unit_amount: str = "0.00002") -> Customer:
    air = builders.kong_air(since=timezone.now() - dt.timedelta(days=400))
    subscription_create(customer=air, plan=token_plan(extra=list(extra), unit_amount=unit_amount),
                        start=timezone.now() - dt.timedelta(days=1))
    return air


def used(tokens: int) -> None:
    ingest([llm_event(tokens=tokens, time=iso(timezone.now() - dt.timedelta(minutes=5)))])


def credits(mode: str) -> RateCardSpec:
    return RateCardSpec(key="ai-quota", feature="ai-token", entitlement_type="metered", entitlement_limit=D("1000000"),
                        entitlement_soft=True, entitlement_credits=mode)


def boolean_world() -> tuple[Customer, str]:
    return subscribed(), "ai-token"


def static_world() -> tuple[Customer, str]:
    sso_feature()
    air = subscribed(RateCardSpec(key="sso", feature="sso", entitlement_type="static",
                                  entitlement_config={"seats": 5, "région": "é"}))
    return air, "sso"


def metered_world() -> tuple[Customer, str]:
    air = subscribed(quota(limit="500"))
    used(400)
    return air, "ai-token"


def over_limit_world() -> tuple[Customer, str]:
    air = subscribed(quota(limit="500"))
    used(650)
    return air, "ai-token"


def credit_world(mode: str):
    def world() -> tuple[Customer, str]:
        air = subscribed(credits(mode), unit_amount="0.01")
        used(1500)  # $15.00 of usage against $10.00 of credits
        grant(air, 1000, effective_at=timezone.now() - dt.timedelta(days=2))
        return air, "ai-token"

    return world


def no_access_world() -> tuple[Customer, str]:
    token_plan()
    return builders.kong_air(since=timezone.now() - dt.timedelta(days=400)), "ai-token"


WORLDS = {
    "boolean": boolean_world,
    "static": static_world,
    "metered": metered_world,
    "metered over a hard limit": over_limit_world,
    "metered credit_only": credit_world("credit_only"),
    "metered credit_then_invoice": credit_world("credit_then_invoice"),
    "no access": no_access_world,
}


# --- successes: answered by the route, the same bytes as Django's ---------------------------------------------------


@pytest.mark.parametrize("by", ["key", "id"])
@pytest.mark.parametrize("world", WORLDS)
def test_a_success_is_answered_by_the_route_with_djangos_bytes(django_app, routed, read_token, world, by):
    air, feature = WORLDS[world]()
    path = VALUE.format(air.key if by == "key" else air.pk, feature)
    expected, answer = both(django_app, routed, path=path, token=read_token)
    assert answer == expected
    assert expected[0] == "200 OK" and ("Content-Type", "application/json") in expected[1]
    assert ("Content-Length", str(len(expected[2]))) in expected[1]
    assert django_app.calls == 1, "the route handed a success on to Django"
    body = json.loads(answer[2])
    assert body["hasAccess"] is (world not in ("no access", "metered over a hard limit", "metered credit_only"))
    if "credit" in world:
        assert (body["creditBalance"], body["creditAvailable"]) == (10, -5)


def test_the_route_answers_without_djangos_handler(routed, read_token):
    subscribed()
    senders: list[type] = []

    def note(sender, **kwargs):
        senders.append(sender)

    request_started.connect(note)
    try:
        with mock.patch.object(WSGIHandler, "__call__", side_effect=AssertionError("Django's handler called")):
            answer = call(routed, token=read_token)
    finally:
        request_started.disconnect(note)
    assert answer[0] == "200 OK" and json.loads(answer[2]) == {"hasAccess": True}
    assert senders == [FastRoutes]


def test_the_suites_test_client_meets_the_route(api, read_token):
    subscribed()
    response = api.get(VALUE.format("kong-air", "ai-token"), HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert response.status_code == 200 and response.fast_route
    assert response.json() == {"hasAccess": True}


def test_a_non_ascii_key_decodes_as_django_decodes_it(django_app, routed, read_token, api):
    """Keys are ASCII when made through the services; a row with another key still answers as Django does, the
    path's UTF-8 bytes decoded once (a first such request does not keep the route from finding its headers)."""
    air = subscribed()
    Customer.objects.filter(pk=air.pk).update(key="kóng-äir")
    path = wire(VALUE.format("kóng-äir", "ai-token"))
    expected, answer = both(django_app, routed, path=path, token=read_token)
    assert answer == expected and expected[0] == "200 OK" and json.loads(answer[2]) == {"hasAccess": True}
    assert django_app.calls == 1
    # percent-encoded by the client, decoded by the server (here Django's test client) before the application
    response = api.get("/api/v1/customers/k%C3%B3ng-%C3%A4ir/entitlements/ai%2Dtoken/value",
                       HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert response.status_code == 200 and response.fast_route and response.content == answer[2]
    # the same text sent in latin-1 is not UTF-8: Django's 400, handed on
    expected, answer = both(django_app, routed, path=VALUE.format("kóng-äir", "ai-token"), token=read_token)
    assert answer == expected and expected[0] == "400 Bad Request" and django_app.calls == 3


@pytest.mark.parametrize("accept", ["*/*", "application/json", "application/*, text/html;q=0.5"])
def test_an_accept_header_drf_takes_is_answered_by_the_route(django_app, routed, read_token, accept):
    subscribed()
    expected, answer = both(django_app, routed, token=read_token, HTTP_ACCEPT=accept)
    assert answer == expected and expected[0] == "200 OK" and django_app.calls == 1


def test_a_path_is_resolved_and_an_accept_header_negotiated_once_and_each_verdict_kept_apart(
        django_app, routed, read_token, monkeypatch):
    """The route remembers what the URL resolver made of a path and what DRF's negotiation made of an Accept header:
    the same request again resolves and negotiates nothing, and another path or header gets its own verdict."""
    subscribed()
    resolved = mock.Mock(wraps=fast_route._resolved_kwargs)
    negotiated = mock.Mock(wraps=fast_route._negotiated_as_default)
    monkeypatch.setattr(fast_route, "_resolved_kwargs", resolved)
    monkeypatch.setattr(fast_route, "_negotiated_as_default", negotiated)
    for _ in range(3):
        assert call(routed, token=read_token)[0] == "200 OK"
    assert (resolved.call_count, negotiated.call_count, django_app.calls) == (1, 1, 0)
    expected, answer = both(django_app, routed, token=read_token, HTTP_ACCEPT="text/html")
    assert answer == expected and answer[0].startswith("406") and negotiated.call_count == 2
    expected, answer = both(django_app, routed, path=VALUE.format("kong-air/more", "ai-token"), token=read_token)
    assert answer == expected and answer[0].startswith("404") and resolved.call_count == 2
    assert call(routed, token=read_token)[0] == "200 OK"  # the first verdicts still stand
    assert (resolved.call_count, negotiated.call_count) == (2, 2)
    long_path, long_accept = VALUE.format("k" * 300, "ai-token"), "application/json, " + "x/y;q=0.1, " * 30
    for _ in range(2):  # long paths and headers (anyone may send them) are not kept
        expected, answer = both(django_app, routed, path=long_path, token=read_token, HTTP_ACCEPT=long_accept)
        assert answer == expected and answer[0].startswith("404")
    assert (resolved.call_count, negotiated.call_count) == (4, 4)
    assert len(fast_route._RESOLVED) == 2 and len(fast_route._NEGOTIATED) == 2


def test_https_with_hsts_and_the_redirect_of_plain_http(settings, read_token):
    subscribed()
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 365 * 24 * 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    django_app = Spy()  # its middleware reads these settings when it is built, as a server's does at start
    routed = fast_routes.with_fast_routes(django_app)
    https = {"HTTP_X_FORWARDED_PROTO": "https"}
    expected, answer = both(django_app, routed, token=read_token, **https)
    assert answer == expected and expected[0] == "200 OK" and django_app.calls == 1
    assert ("Strict-Transport-Security", "max-age=31536000") in answer[1]
    expected, answer = both(django_app, routed, token=read_token)
    assert answer == expected and answer[0].startswith("301") and django_app.calls == 3


def test_the_headers_follow_the_settings(settings, django_app, routed, read_token):
    subscribed()
    call(routed, token=read_token)  # the headers found under the first settings
    settings.X_FRAME_OPTIONS = "SAMEORIGIN"
    expected, answer = both(django_app, routed, token=read_token)
    assert ("X-Frame-Options", "SAMEORIGIN") in answer[1] and answer == expected


# --- everything else: handed on, answered by Django once ------------------------------------------------------------


HOSTILE: dict[str, dict[str, Any]] = {
    **HANDED_ON_BY_EVERY_ROUTE,
    "unknown customer": {"path": VALUE.format("nobody", "ai-token")},
    "unknown feature": {"path": VALUE.format("kong-air", "teleport")},
    "unknown customer and feature": {"path": VALUE.format("nobody", "teleport")},
    "an id too big for an id": {"path": VALUE.format("9" * 30, "ai-token")},
    "a key with a literal %": {"path": VALUE.format("kong%2Dair", "ai-token")},
    "a key with a literal %C3": {"path": VALUE.format("k%C3%B3ng", "ai-token")},
    "a format parameter": {"QUERY_STRING": "format=json"},
    "HEAD": {"method": "HEAD"},
    "POST": {"method": "POST"},
    "OPTIONS": {"method": "OPTIONS"},
    "an extra segment": {"path": "/api/v1/customers/kong-air/x/entitlements/ai-token/value"},
    "more segments after the route": {"path": VALUE.format("kong-air", "ai-token") + "/x/value"},
    "a slash in the key (sent as %2F)": {"path": VALUE.format("kong/air", "ai-token")},
    "a trailing slash": {"path": VALUE.format("kong-air", "ai-token") + "/"},
    "an empty key": {"path": VALUE.format("", "ai-token")},
    "a double slash": {"path": "/api/v1/customers//kong-air/entitlements/ai-token/value"},
    "NUL in the key": {"path": VALUE.format("kong\x00air", "ai-token")},
    "NUL in the feature": {"path": VALUE.format("kong-air", "ai\x00token")},
    "bytes that are not UTF-8": {"path": VALUE.format("kong-\xff\xfe", "ai-token")},
    "a prefix before the route": {"path": "/x" + VALUE.format("kong-air", "ai-token")},
}


@pytest.mark.parametrize("name", HOSTILE)
def test_other_requests_are_handed_on_and_answered_as_django_does(django_app, routed, read_token, name):
    subscribed()
    case = dict(HOSTILE[name])
    case.setdefault("token", read_token)
    expected, answer = both(django_app, routed, **case)
    assert answer == expected
    assert django_app.calls == 2, "the route answered a request it should have handed on"
    assert not expected[0].startswith("5")
    # the first request the route met did not keep it from answering the next ones
    assert call(routed, token=read_token)[0] == "200 OK" and django_app.calls == 2


def test_a_wrong_scope_and_a_revoked_token(django_app, routed, make_token):
    subscribed()
    gateway = make_token("ingest", name="gateway")
    expected, answer = both(django_app, routed, token=gateway)
    assert answer == expected and answer[0] == "403 Forbidden"
    token, plain = api_token_create(name="gone", scopes=["read"])
    api_token_revoke(token=token)
    expected, answer = both(django_app, routed, token=plain)
    assert answer == expected and answer[0] == "401 Unauthorized"
    assert django_app.calls == 4


def test_a_staff_session_is_answered_by_django(admin_client):
    subscribed()
    response = admin_client.get(VALUE.format("kong-air", "ai-token"))
    assert response.status_code == 200 and not response.fast_route
    assert response.json() == {"hasAccess": True}


def test_an_unknown_token_is_looked_up_once(routed, django_assert_num_queries):
    with django_assert_num_queries(1):
        assert call(routed, token="bbo_" + "y" * 43)[0] == "401 Unauthorized"


@pytest.mark.parametrize("path", [VALUE.format("nobody", "ai-token"), VALUE.format("kong-air", "teleport")])
def test_an_unknown_customer_or_feature_is_checked_once(routed, read_token, monkeypatch, path):
    subscribed()
    calls = []
    real = entitlements.entitlement_value_body

    def counted(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(entitlements, "entitlement_value_body", counted)
    monkeypatch.setattr("customers.api.entitlement_route.entitlement_value_body", counted)
    status, headers, body = call(routed, path=path, token=read_token)
    assert status == "404 Not Found" and ("Content-Type", "application/problem+json") in headers
    assert json.loads(body)["detail"].startswith(("No customer", "No feature")) and len(calls) == 1


def test_auth_failures_are_counted_once_per_request(settings, django_app, routed):
    """20 failures a minute from one address are answered 401, the 21st 429 — through the route as through Django."""
    settings.API_AUTH_FAILURES_PER_MINUTE = 20
    answers = {}
    for name, app in (("django", django_app), ("route", routed)):
        clear_throttles()
        answers[name] = [call(app, token="bbo_" + secrets.token_urlsafe(32)) for _ in range(21)]
    assert [a[0] for a in answers["route"]] == ["401 Unauthorized"] * 20 + ["429 Too Many Requests"]
    assert answers["route"] == answers["django"]
    assert ("Retry-After", "57") in answers["route"][-1][1]


def test_a_database_outage_answers_503_once_through_the_route(django_app, routed, read_token):
    subscribed()
    assert call(routed, token=read_token)[0] == "200 OK"  # the token and the feature are known (cached)
    statements = []

    def fail(*args, **kwargs):
        statements.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    with mock.patch.object(CursorWrapper, "execute", fail), mock.patch.object(CursorWrapper, "executemany", fail):
        expected = call(django_app, token=read_token)
        django_statements = len(statements)
        statements.clear()
        answer = call(routed, token=read_token)
    assert answer == expected and answer[0] == "503 Service Unavailable"
    assert len(statements) == django_statements, "the route's failed check was tried again by Django"


def test_a_failure_to_find_the_success_headers_hands_on(django_app, routed, read_token, monkeypatch, caplog):
    subscribed()

    def broken(view, method, request, bodies):
        raise RuntimeError("boom")

    monkeypatch.setattr(fast_route, "_render_success", broken)
    assert call(routed, token=read_token)[0] == "200 OK"
    assert call(routed, token=read_token)[0] == "200 OK"
    assert django_app.calls == 2
    assert caplog.text.count("no success answer like Django's") == 1  # found out once, not on every request


def test_a_view_whose_drf_checks_differ_is_handed_on(django_app, routed, read_token, monkeypatch):
    """A throttle (or another authenticator first, another permission…) the route cannot reproduce: Django."""
    subscribed()
    view = entitlements.EntitlementValueView
    for name, value in (("throttle_classes", [mock.Mock]), ("authentication_classes", view.authentication_classes[1:]),
                        ("permission_classes", [])):
        with mock.patch.object(view, name, value):
            assert not fast_route.drf_checks_reproducible(view)
    monkeypatch.setattr(view, "permission_classes", [])
    assert call(routed, token=read_token)[0] == "200 OK" and django_app.calls == 1


@pytest.mark.django_db(transaction=True)
def test_with_djangos_connection_handling(read_token):
    """With request_started/finished closing old connections as in a server, the route answers and the connection
    is usable afterwards."""
    no_access_world()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
    routed = fast_routes.with_fast_routes(WSGIHandler())
    assert [call(routed, token=read_token)[0] for _ in range(3)] == ["200 OK"] * 3
    connection.ensure_connection()
    assert Customer.objects.filter(key="kong-air").exists()


def test_the_wsgi_entry_point_serves_through_the_route():
    from billing_site import wsgi

    assert isinstance(wsgi.application, FastRoutes) and ENTITLEMENT_ROUTE in wsgi.application.routes


@pytest.fixture
def served(read_token):
    """The route as a server runs it: request_started/finished closing old connections, persistent connections
    checked (CONN_HEALTH_CHECKS, also on SQLite here)."""
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)
    enabled = connection.settings_dict["CONN_HEALTH_CHECKS"]
    connection.settings_dict["CONN_HEALTH_CHECKS"] = True
    connection.close()
    try:
        yield fast_routes.with_fast_routes(WSGIHandler())
    finally:
        connection.settings_dict["CONN_HEALTH_CHECKS"] = enabled
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)


@pytest.mark.django_db(transaction=True)
def test_a_reused_connection_is_not_checked_with_a_statement_of_its_own(served, read_token, monkeypatch):
    metered_world()
    checks = []
    wrapper = connections["default"]
    real = type(wrapper).is_usable

    def counted(self):
        checks.append(1)
        return real(self)

    monkeypatch.setattr(type(wrapper), "is_usable", counted)
    assert call(served, token=read_token)[0] == "200 OK"  # the token looked up (then remembered): checked first
    checks.clear()
    assert [call(served, token=read_token)[0] for _ in range(3)] == ["200 OK"] * 3
    assert connection.connection is not None and checks == []
    assert call(served, path=VALUE.format("nobody", "ai-token"), token=read_token)[0] == "404 Not Found"
    assert checks == []  # handed on to Django, a 404 runs no statement there: the check ran once, in the route


@pytest.mark.django_db(transaction=True)
def test_inside_a_transaction_the_read_runs_as_is(monkeypatch):
    """A broken connection cannot be replaced inside an atomic block: the error stands, no second read."""
    calls = []

    def read():
        calls.append(1)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(type(connections["default"]), "is_usable", lambda self: False)
    with transaction.atomic(), pytest.raises(OperationalError):
        fast_route.read_checked_by_use(read)
    assert calls == [1]
    connection.ensure_connection()
    with pytest.raises(OperationalError):
        fast_route.read_checked_by_use(read)  # outside one: the connection proves unusable, so read once more
    assert calls == [1, 1, 1]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_dropped_is_replaced_and_the_check_answers(served, read_token):
    import psycopg

    metered_world()
    first = call(served, token=read_token)
    assert first[0] == "200 OK"
    with psycopg.connect(**connection.get_connection_params(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [connection.connection.info.backend_pid])
    assert call(served, token=read_token) == first
    assert call(served, token=read_token) == first
