"""The role × action matrix, walked whole: every action through the admin (a representative page or action per
row, as a logged-in user of each role) and through the API (each endpoint × method, as each role's staff session
and as each token scope). Allowed → 2xx and the state changed; anything else → 403 (problem+json on the API) and
nothing changed.

``tests/security/matrix.py`` holds ``MATRIX``, the source of truth; README's "API access" table is checked against
it, cell by cell.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from django.test import Client
from django.urls import resolve

from metering.models import Meter
from tests.builders import bearer
from tests.security.matrix import (
    INGEST,
    MANAGE,
    MATRIX,
    PROBLEM,
    READ,
    ROLES,
    SESSIONS,
    VIEWER,
    Api,
    Row,
    api_call,
    api_views,
    path_in,
)


def _cases():
    for row in MATRIX:
        for role in ROLES:
            if row.api or role in SESSIONS:
                yield pytest.param(row, role, id=f"{row.action} | {role}")


# --- the walk ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("row, role", list(_cases()))
def test_the_matrix(world, db, row: Row, role: str):
    allowed = role in row.allowed
    client = Client()
    if role in SESSIONS:
        client.force_login(world["users"][role])
        headers: dict = {}
    else:
        headers = bearer(world["tokens"][role])
    # The admin first: its pages only look (or change a meter the API rows leave alone); the API then acts.
    for page in (row.admin if role in SESSIONS else ()):
        before = page.state(world) if page.state else None
        path = path_in(page.path, world)
        response = client.post(path, page.data) if page.data is not None else client.get(path)
        what = f"{role}: admin {'POST' if page.data is not None else 'GET'} {page.path}"
        if allowed:
            assert response.status_code == page.ok, f"{what} → {response.status_code}"
            if page.state:
                assert page.state(world) != before, f"{what} was allowed but changed nothing"
        else:
            assert admin_refused(client, response), f"{what} → {response.status_code}, expected a refusal"
            if page.state:
                assert page.state(world) == before, f"{what} was refused but changed something"

    for call in row.api:
        before = call.state(world) if call.state else None
        response = api_call(client, call, world, headers)
        what = f"{role}: {call.method} {call.path}"
        if call.method == "GET":
            head = api_call(client, Api("HEAD", call.path), world, headers)
            assert head.status_code == response.status_code, f"{role}: HEAD {call.path} → {head.status_code}"
        if allowed:
            assert 200 <= response.status_code < 300, f"{what} → {response.status_code} {response.content[:300]!r}"
            if call.state:
                assert call.state(world) != before, f"{what} was allowed but changed nothing"
        else:
            assert response.status_code == 403, f"{what} → {response.status_code}, expected 403"
            assert response["Content-Type"] == PROBLEM, what
            assert response.json()["status"] == 403
            if call.state:
                assert call.state(world) == before, f"{what} was refused but changed something"


def admin_refused(client: Client, response) -> bool:
    """The admin refuses with 403, or (its confirmation pages, the gateway connection) by redirecting back with an
    error message."""
    if response.status_code == 403:
        return True
    if response.status_code != 302 or "/login/" in response["Location"]:
        return False
    page = client.get(response["Location"]).content.decode()
    return "You may not do that." in page or "is for Billing admins" in page


def test_a_finance_viewer_cannot_turn_a_sum_meter_into_a_count(world, db):
    """The issue's own case: a Finance viewer's PUT /api/v1/meters/llm_tokens is 403 and the meter stays SUM."""
    client = Client()
    client.force_login(world["users"][VIEWER])
    response = client.put("/api/v1/meters/llm_tokens", json.dumps({"aggregation": "COUNT"}),
                          content_type="application/json")
    assert response.status_code == 403 and response["Content-Type"] == PROBLEM
    assert "metering.change_meter" in response.json()["detail"]
    assert Meter.objects.get(slug="llm_tokens").aggregation == "SUM"
    created = client.post("/api/v1/meters", json.dumps({"slug": "x", "eventType": "x", "aggregation": "COUNT"}),
                          content_type="application/json")
    deleted = client.delete("/api/v1/meters/spare")
    assert (created.status_code, deleted.status_code) == (403, 403)
    assert set(Meter.objects.values_list("slug", flat=True)) == {"llm_tokens", "spare"}


def test_tokens_do_not_open_the_admin(world, db):
    client = Client()
    for token in world["tokens"].values():
        response = client.get("/admin/metering/meter/", **bearer(token))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_matrix_covers_every_endpoint_and_method():
    covered = {(getattr(resolve(call.path.split("?")[0]).func, "cls", None), call.method)
               for row in MATRIX for call in row.api}
    implemented = {(cls, method.upper()) for cls in set(api_views().values()) for method in cls.http_method_names
                   if method not in ("head", "options") and hasattr(cls, method)}
    assert covered == implemented


# --- README's table is this matrix --------------------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_matrix() -> dict[str, set[str]]:
    text = README.read_text()
    start, end = text.index("<!-- permission-matrix -->"), text.index("<!-- /permission-matrix -->")
    rows: dict[str, set[str]] = {}
    for line in text[start:end].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 1 + len(ROLES) or not cells[0] or set(cells[0]) <= {"-", ":"} or cells[0] == "action":
            continue
        marks = cells[1:1 + len(ROLES)]
        assert all(mark in ("✓", "—") for mark in marks), line
        roles = (*SESSIONS, INGEST, READ, MANAGE)
        rows[re.sub(r"\s+", " ", cells[0])] = {role for role, mark in zip(roles, marks, strict=True) if mark == "✓"}
    return rows


def test_readme_shows_exactly_this_matrix():
    assert readme_matrix() == {row.action: set(row.allowed) for row in MATRIX}
