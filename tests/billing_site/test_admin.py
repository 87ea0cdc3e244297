import pytest
from django.contrib.auth import get_user_model


def test_admin_login_page_renders(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content


@pytest.mark.django_db
def test_staff_user_logs_in_and_sees_the_admin(client):
    get_user_model().objects.create_user("finance", password="correct horse battery", is_staff=True)
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "finance", "password": "correct horse battery"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


@pytest.mark.django_db
def test_wrong_password_is_a_form_error(client):
    get_user_model().objects.create_user("finance", password="correct horse battery", is_staff=True)
    response = client.post("/admin/login/", {"username": "finance", "password": "nope"})
    assert response.status_code == 200
    assert b"Please enter the correct username and password" in response.content


def test_root_redirects_to_admin(client):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
