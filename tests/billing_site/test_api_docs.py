"""The OpenAPI schema and its docs need a staff session or a read token, unless API_DOCS_PUBLIC."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

pytestmark = pytest.mark.django_db

SCHEMA, DOCS, REDOC = "/api/schema/", "/api/docs/", "/api/redoc/"


def staff_client(role: str = "Finance viewer") -> Client:
    user = User.objects.create_user("docs-reader", password="pw-123456", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    return body


def test_anonymous_schema_is_401_problem_json(client):
    response = client.get(SCHEMA)
    assert_problem(response, 401)
    assert response["WWW-Authenticate"] == "Bearer"
    assert b"openapi" not in response.content


@pytest.mark.parametrize("page", [DOCS, REDOC, DOCS + "?script="])
def test_anonymous_docs_go_to_the_admin_login_and_back(client, page):
    response = client.get(page)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")
    assert "/api/" in response["Location"]
    assert b"SwaggerUIBundle" not in response.content


def test_a_read_token_gets_the_schema(client, read_token):
    response = client.get(SCHEMA, HTTP_AUTHORIZATION=f"Bearer {read_token}")
    assert response.status_code == 200
    assert b"openapi: 3" in response.content
    assert b"/api/v1/events" in response.content


def test_an_ingest_only_token_is_refused(client, ingest_token):
    assert_problem(client.get(SCHEMA, HTTP_AUTHORIZATION=f"Bearer {ingest_token}"), 403)
    assert_problem(client.get(DOCS, HTTP_AUTHORIZATION=f"Bearer {ingest_token}"), 403)


def test_an_unknown_token_is_401_even_on_the_html_docs(client):
    assert_problem(client.get(SCHEMA, HTTP_AUTHORIZATION="Bearer bbo_nope"), 401)
    response = client.get(DOCS, HTTP_AUTHORIZATION="Bearer bbo_nope")
    assert_problem(response, 401)
    assert response["WWW-Authenticate"] == "Bearer"


def test_a_logged_in_user_who_is_not_staff_is_refused(client):
    client.force_login(User.objects.create_user("customer", password="pw-123456"))
    assert_problem(client.get(SCHEMA), 403)
    assert_problem(client.get(DOCS), 403)


def test_any_staff_role_reads_the_schema_and_both_docs():
    client = staff_client("Finance viewer")
    schema = client.get(SCHEMA, HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/meters" in schema.json()["paths"]
    docs = client.get(DOCS)
    assert docs.status_code == 200
    script = client.get(DOCS + "?script=")
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle(" in script.content
    assert client.get(REDOC).status_code == 200


def test_a_read_token_may_open_the_html_docs(client, read_token):
    assert client.get(DOCS, HTTP_AUTHORIZATION=f"Bearer {read_token}").status_code == 200


def test_api_docs_public_opens_all_three_to_anyone(client, settings):
    settings.API_DOCS_PUBLIC = True
    assert client.get(SCHEMA).status_code == 200
    assert client.get(DOCS).status_code == 200
    assert client.get(DOCS + "?script=").status_code == 200
    assert client.get(REDOC).status_code == 200


def test_the_docs_pages_have_no_inline_script_and_a_nonce_on_their_styles():
    client = staff_client()
    swagger = client.get(DOCS)
    page, policy = swagger.content.decode(), swagger["Content-Security-Policy"]
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
    found = re.search(r"<style nonce=\"([^\"]+)\"", page)
    assert found is not None
    nonce = found.group(1)
    assert f"'nonce-{nonce}'" in policy
    assert "script-src 'self';" in policy + ";"
    assert 'src="/api/docs/?script="' in page

    redoc = client.get(REDOC)
    page, policy = redoc.content.decode(), redoc["Content-Security-Policy"]
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == []
    assert "fonts.googleapis.com" not in page  # nothing from outside
    assert 'data-schema-url="/api/schema/"' in page
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"  # Redoc's page relaxes styles and workers only
    assert directives["style-src"] == "'self' 'unsafe-inline'"
    assert directives["worker-src"] == "'self' blob:"
