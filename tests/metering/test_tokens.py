"""API tokens: the command, the admin (shown once), revocation."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from metering.models import ApiToken
from metering.services.tokens import api_token_create, hash_token
from tests.builders import bearer, body, llm_event

pytestmark = pytest.mark.django_db


def test_create_api_token_prints_the_token_last(api):
    out = io.StringIO()
    call_command("create_api_token", "kong-prod", "--scope", "ingest", "--scope", "read", stdout=out)
    plain = out.getvalue().strip().splitlines()[-1]
    token = ApiToken.objects.get()
    assert token.name == "kong-prod"
    assert token.scopes == ["ingest", "read"]
    assert token.token_hash == hash_token(plain)
    assert plain.startswith(token.prefix)
    assert plain not in (token.prefix, token.token_hash)
    response = api.generic("POST", "/api/v1/events", body([llm_event()]), content_type="application/json",
                           **bearer(plain))
    assert response.status_code == 204


def test_create_api_token_needs_a_known_scope():
    with pytest.raises(CommandError):
        call_command("create_api_token", "x", "--scope", "root", stdout=io.StringIO(), stderr=io.StringIO())
    assert ApiToken.objects.count() == 0


def test_create_api_token_needs_a_scope():
    with pytest.raises(CommandError):
        call_command("create_api_token", "x", stdout=io.StringIO(), stderr=io.StringIO())


def test_service_rejects_blank_name_and_no_scope():
    with pytest.raises(ValueError):
        api_token_create(name="  ", scopes=["ingest"])
    with pytest.raises(ValueError):
        api_token_create(name="x", scopes=[])


def test_admin_creates_a_token_and_shows_it_once(admin_client):
    response = admin_client.post("/admin/metering/apitoken/add/", {"name": "kong", "scopes": ["ingest"]})
    assert response.status_code == 200
    token = ApiToken.objects.get()
    page = response.content.decode()
    start = page.index('id="api-token"')
    value = page[start:].split('value="', 1)[1].split('"', 1)[0]
    assert token.token_hash == hash_token(value)
    assert "cannot be shown again" in page
    detail = admin_client.get(f"/admin/metering/apitoken/{token.pk}/change/").content.decode()
    assert value not in detail
    assert token.prefix in detail


def test_admin_form_requires_name_and_scope(admin_client):
    response = admin_client.post("/admin/metering/apitoken/add/", {"name": "", "scopes": []})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors.keys() == {"name", "scopes"}
    assert ApiToken.objects.count() == 0


def test_admin_revoke_asks_for_confirmation_then_revokes(admin_client, api):
    token, plain = api_token_create(name="old", scopes=["ingest"])
    data = {"action": "revoke_tokens", "_selected_action": [token.pk]}
    confirm = admin_client.post("/admin/metering/apitoken/", data)
    assert b"Revoke these API tokens?" in confirm.content
    token.refresh_from_db()
    assert token.revoked_at is None
    admin_client.post("/admin/metering/apitoken/", {**data, "confirmed": "yes"})
    token.refresh_from_db()
    assert token.revoked_at is not None
    response = api.generic("POST", "/api/v1/events", body([llm_event()]), content_type="application/json",
                           **bearer(plain))
    assert response.status_code == 401
