from typing import Any

import pytest

from billing_site.celery import app


def healthz(client: Any, status_code: int) -> dict[str, Any]:
    response = client.get("/healthz")
    assert response.status_code == status_code
    return response.json()


@pytest.mark.django_db
def test_healthz_reports_database_and_broker(client):
    body = healthz(client, 200)
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is True


@pytest.mark.django_db
def test_healthz_is_503_when_the_broker_is_down(client, monkeypatch):
    # A real connection attempt to a port where nothing listens.
    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    body = healthz(client, 503)
    assert body["status"] == "unavailable"
    assert body["broker"]["ok"] is False
    assert body["database"]["ok"] is True


@pytest.mark.django_db
def test_healthz_is_503_when_the_filesystem_broker_folder_is_gone(client, monkeypatch, tmp_path):
    monkeypatch.setitem(app.conf, "broker_url", "filesystem://")
    monkeypatch.setitem(app.conf, "broker_transport_options", {
        "data_folder_in": str(tmp_path / "missing"), "data_folder_out": str(tmp_path / "missing"),
        "control_folder": str(tmp_path / "missing"),
    })
    assert "missing or not writable" in healthz(client, 503)["broker"]["error"]


def test_unknown_api_path_is_problem_json(client):
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 404
