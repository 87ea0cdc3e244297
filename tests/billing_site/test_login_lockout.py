"""The admin login lockout (django-axes): per username + client address, with a cool-off, seen by superusers only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.test import Client

from billing_site.roles import role_permissions

pytestmark = pytest.mark.django_db

PASSWORD = "right-pw-123456"
LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def staff():
    return User.objects.create_user("ops", password=PASSWORD, is_staff=True, is_superuser=True)


def attempt(client: Client, username: str, password: str, ip: str = "10.0.0.1", **extra):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip, **extra)


def logged_in(response) -> bool:
    return response.status_code == 302 and response["Location"] == "/admin/"


def fail(client: Client, times: int, username: str = "ops", ip: str = "10.0.0.1", **extra) -> list[int]:
    return [attempt(client, username, "wrong-guess", ip, **extra).status_code for _ in range(times)]


def test_defaults_are_five_failures_and_fifteen_minutes():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert timedelta(minutes=15) == settings.AXES_COOLOFF_TIME
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]


def test_failures_below_the_limit_are_answered_with_the_login_form(client, staff):
    answers = [attempt(client, "ops", "wrong-guess") for _ in range(settings.AXES_FAILURE_LIMIT - 1)]
    assert [r.status_code for r in answers] == [200] * (settings.AXES_FAILURE_LIMIT - 1)
    assert all("Please enter the correct username and password" in r.content.decode() for r in answers)
    assert logged_in(attempt(client, "ops", PASSWORD))


def test_after_the_limit_even_the_right_password_is_refused_with_a_clear_page(client, staff):
    statuses = fail(client, settings.AXES_FAILURE_LIMIT)
    assert statuses == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]
    refused = attempt(client, "ops", PASSWORD)
    assert refused.status_code == 429
    page = refused.content.decode()
    assert 'id="locked-out"' in page
    assert "The account “ops” is locked for" in page
    assert "after 5 failed logins in a row" in page
    assert "Try again in 15 minutes" in page
    assert refused["Retry-After"] == "900"
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still sent to the login page


def test_thirty_bad_logins_in_a_row_are_not_all_answered_normally(client, staff):
    statuses = fail(client, 30)
    assert statuses.count(200) == settings.AXES_FAILURE_LIMIT - 1
    assert statuses[settings.AXES_FAILURE_LIMIT - 1:] == [429] * (30 - settings.AXES_FAILURE_LIMIT + 1)


def test_the_lock_is_per_username_and_address(client, staff):
    User.objects.create_user("other", password=PASSWORD, is_staff=True)
    fail(client, settings.AXES_FAILURE_LIMIT, username="ops", ip="10.0.0.1")
    assert attempt(Client(), "ops", PASSWORD, ip="10.0.0.1").status_code == 429
    assert logged_in(attempt(Client(), "ops", PASSWORD, ip="10.0.0.2"))  # the same user from another address
    assert logged_in(attempt(Client(), "other", PASSWORD, ip="10.0.0.1"))  # another user from the same address


def test_changing_the_user_agent_does_not_reset_the_count(client, staff):
    for number in range(settings.AXES_FAILURE_LIMIT):
        attempt(client, "ops", "wrong-guess", HTTP_USER_AGENT=f"agent/{number}")
    assert attempt(client, "ops", PASSWORD, HTTP_USER_AGENT="agent/new").status_code == 429


def backdate_attempts(seconds: float) -> None:
    for row in AccessAttempt.objects.all():
        row.attempt_time -= timedelta(seconds=seconds)
        row.save(update_fields=["attempt_time"])


def test_the_lock_expires_after_the_cool_off(client, staff):
    fail(client, settings.AXES_FAILURE_LIMIT)
    backdate_attempts(settings.AXES_COOLOFF_TIME.total_seconds() - 60)
    assert attempt(client, "ops", PASSWORD).status_code == 429  # a minute to go (and the wait starts again)
    backdate_attempts(settings.AXES_COOLOFF_TIME.total_seconds() + 1)
    assert logged_in(attempt(client, "ops", PASSWORD))
    assert not AccessAttempt.objects.exists()  # a success forgets the failures of that username + address


def test_the_cool_off_is_a_setting(client, staff, settings):
    settings.AXES_COOLOFF_TIME = timedelta(minutes=1)
    fail(client, settings.AXES_FAILURE_LIMIT)
    backdate_attempts(30)
    refused = attempt(client, "ops", PASSWORD)
    assert refused.status_code == 429
    assert "Try again in 1 minute." in refused.content.decode()
    assert refused["Retry-After"] == "60"
    backdate_attempts(61)
    assert logged_in(attempt(client, "ops", PASSWORD))


def test_a_forged_x_forwarded_for_does_not_escape_the_lock(client, staff):
    fail(client, settings.AXES_FAILURE_LIMIT)
    assert attempt(client, "ops", PASSWORD, HTTP_X_FORWARDED_FOR="203.0.113.9").status_code == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.0.0.1"}


def test_behind_a_trusted_proxy_the_address_it_saw_counts(client, staff, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.9.9.9"
    fail(client, settings.AXES_FAILURE_LIMIT, ip=proxy, HTTP_X_FORWARDED_FOR="1.1.1.1, 198.51.100.7")
    assert attempt(client, "ops", PASSWORD, ip=proxy, HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 429
    # Another client behind the same proxy is not locked; nor is one whose header the proxy did not complete.
    assert logged_in(attempt(Client(), "ops", PASSWORD, ip=proxy, HTTP_X_FORWARDED_FOR="198.51.100.8"))
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"198.51.100.7"}


def test_a_malformed_forwarded_address_falls_back_to_the_connection(client, staff, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    statuses = fail(client, settings.AXES_FAILURE_LIMIT, ip="10.9.9.9", HTTP_X_FORWARDED_FOR="not-an-ip\x00")
    assert statuses[-1] == 429
    assert set(AccessAttempt.objects.values_list("ip_address", flat=True)) == {"10.9.9.9"}


def test_the_failures_and_the_logins_are_recorded(client, staff):
    fail(client, 2)
    assert logged_in(attempt(client, "ops", PASSWORD))
    assert AccessFailureLog.objects.filter(username="ops", ip_address="10.0.0.1").count() == 2
    assert AccessLog.objects.filter(username="ops", ip_address="10.0.0.1").count() == 1
    assert "wrong-guess" not in " ".join(AccessAttempt.objects.values_list("post_data", flat=True))


# --- who sees the lockout in the admin --------------------------------------------------------------------------

AXES_PAGES = ["/admin/axes/accessattempt/", "/admin/axes/accessfailurelog/", "/admin/axes/accesslog/"]


def settings_section(client: Client) -> list[str]:
    response = client.get("/admin/")
    assert response.status_code == 200
    sections = {app["name"]: [m["object_name"] for m in app["models"]] for app in response.context["app_list"]}
    return sections.get("Settings", [])


def test_a_superuser_sees_who_is_locked_out_under_settings_and_can_unlock(client, staff):
    fail(Client(), settings.AXES_FAILURE_LIMIT, username="ops", ip="10.0.0.7")
    admin = User.objects.create_superuser("root", password=PASSWORD)
    client.force_login(admin)
    names = settings_section(client)
    after_groups = names[names.index("Group") + 1:names.index("Group") + 4]
    assert after_groups == ["AccessAttempt", "AccessFailureLog", "AccessLog"]
    for url in AXES_PAGES:
        assert client.get(url).status_code == 200, url
    page = client.get("/admin/axes/accessattempt/?locked_out=yes").content.decode()
    assert "10.0.0.7" in page and "Locked Out" in page
    attempt_row = AccessAttempt.objects.get()
    assert client.get(f"/admin/axes/accessattempt/{attempt_row.pk}/delete/").status_code == 200
    client.post(f"/admin/axes/accessattempt/{attempt_row.pk}/delete/", {"post": "yes"})
    assert not AccessAttempt.objects.exists()
    assert logged_in(attempt(Client(), "ops", PASSWORD, ip="10.0.0.7"))
    # The logs are an audit trail: read-only, even for a superuser.
    log = AccessFailureLog.objects.first()
    assert client.get(f"/admin/axes/accessfailurelog/{log.pk}/delete/").status_code == 403


@pytest.mark.parametrize("role", list(role_permissions()))
def test_finance_roles_do_not_see_the_lockout(client, role):
    user = User.objects.create_user("finance", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    assert not [name for name in settings_section(client) if name.startswith("Access")]
    for url in AXES_PAGES:
        assert client.get(url).status_code == 403, url


def test_even_granted_the_model_permissions_a_staff_user_does_not_see_the_lockout(client):
    user = User.objects.create_user("nosy", password=PASSWORD, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="axes"))
    client.force_login(user)
    for url in AXES_PAGES:
        assert client.get(url).status_code == 403, url


# --- the API's authentication is untouched ----------------------------------------------------------------------


def test_the_api_accepts_the_session_of_a_login_through_the_form(client, staff):
    assert logged_in(attempt(client, "ops", PASSWORD))
    response = client.get("/api/v1/meters")
    assert response.status_code == 200, response.content


def test_a_locked_out_username_does_not_affect_tokens_or_open_sessions(client, staff, read_token):
    assert logged_in(attempt(client, "ops", PASSWORD))
    fail(Client(), settings.AXES_FAILURE_LIMIT, username="ops", ip="10.0.0.1")
    assert client.get("/api/v1/meters").status_code == 200  # the session that was open before
    token_client = Client()
    assert token_client.get("/api/v1/meters", HTTP_AUTHORIZATION=f"Bearer {read_token}").status_code == 200
