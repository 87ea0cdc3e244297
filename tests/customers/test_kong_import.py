"""Importing Kong consumers from the Admin API: command, service, Celery task and admin, against a fake Kong."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command

from common.models import JobRun
from customers import kong_admin as kong_admin_client
from customers.kong_admin import KongAdminError, fetch_consumers
from customers.models import KongConsumer, SubjectAttribution
from customers.services.customers import customer_create
from customers.services.kong import ImportResult, kong_consumers_import
from customers.tasks import import_kong_consumers
from tests.fakes.kong_admin import INVALID_CREDENTIALS, KONNECT_PREFIX, FakeKongAdmin, closed_port_url, make_consumers

pytestmark = [pytest.mark.django_db, pytest.mark.slow]  # thousands of consumers through a fake Kong


@pytest.fixture
def kong_admin() -> Iterator[FakeKongAdmin]:
    """A started fake Kong Admin API (no token, no prefix, no consumers until the test sets them)."""
    with FakeKongAdmin() as fake:
        yield fake


def run_import(url: str, token: str | None = None) -> str:
    out = io.StringIO()
    args = ["import_kong_consumers", "--admin-url", url]
    if token is not None:
        args += ["--token", token]
    call_command(*args, stdout=out)
    return out.getvalue()


def stored() -> dict[str, tuple]:
    return {c.kong_id: (c.username, c.custom_id, c.tags) for c in KongConsumer.objects.all()}


# --------------------------------------------------------------------------------------------------
# Pages


def test_command_follows_next_over_every_page_asking_for_1000(kong_admin):
    kong_admin.consumers = make_consumers(2500)

    out = run_import(kong_admin.url)

    assert "Imported 2500 consumers" in out
    assert "2500 new, 0 updated, 0 unchanged" in out
    assert KongConsumer.objects.count() == 2500
    requests = kong_admin.requests_to("/consumers")
    assert [r.page for r in requests] == [1, 2, 3]
    assert all(r.status == 200 for r in requests)
    assert all(r.query["size"] == ["1000"] for r in requests)
    assert "offset" not in requests[0].query
    assert all(r.query["offset"] for r in requests[1:])
    one = make_consumers(1, start=1234)[0]
    row = KongConsumer.objects.get(kong_id=one["id"])
    assert (row.username, row.custom_id, row.tags, row.admin_url) == (
        "user-1234", "cust-1234", one["tags"], kong_admin.url
    )


def test_exactly_one_full_page_needs_no_second_request(kong_admin):
    kong_admin.consumers = make_consumers(1000)

    run_import(kong_admin.url)

    assert [r.page for r in kong_admin.requests_to("/consumers")] == [1]
    assert KongConsumer.objects.count() == 1000


def test_no_consumers_imports_nothing(kong_admin):
    out = run_import(kong_admin.url)

    assert "Imported 0 consumers" in out
    assert KongConsumer.objects.count() == 0


def test_konnect_style_base_path():
    with FakeKongAdmin(consumers=make_consumers(1500), prefix=KONNECT_PREFIX) as konnect:
        out = run_import(konnect.url + "/")  # a trailing slash, as people paste it

        assert "Imported 1500 consumers" in out
        requests = konnect.requests_to("/consumers")
        assert [r.page for r in requests] == [1, 2]
        assert all(r.path == KONNECT_PREFIX + "/consumers" for r in requests)
        assert KongConsumer.objects.count() == 1500
        assert set(KongConsumer.objects.values_list("admin_url", flat=True)) == {konnect.url + "/"}


def test_absolute_next_url():
    with FakeKongAdmin(consumers=make_consumers(2100), prefix="/admin-api", next_style="absolute") as fake:
        run_import(fake.url)

        assert [r.page for r in fake.requests_to("/consumers")] == [1, 2, 3]
        assert KongConsumer.objects.count() == 2100


def test_server_that_serves_smaller_pages_than_asked():
    with FakeKongAdmin(consumers=make_consumers(450), max_page_size=200, oversize="clamp") as fake:
        out = run_import(fake.url)

        assert "Imported 450 consumers" in out
        assert [r.page for r in fake.requests_to("/consumers")] == [1, 2, 3]


def test_next_given_as_a_full_path_under_a_prefix():
    with FakeKongAdmin(consumers=make_consumers(2500), prefix=KONNECT_PREFIX, next_style="full_path") as fake:
        run_import(fake.url)

        requests = fake.requests_to("/consumers")
        assert [(r.path, r.page, r.query["size"]) for r in requests] == [
            (KONNECT_PREFIX + "/consumers", page, ["1000"]) for page in (1, 2, 3)
        ]
        assert KongConsumer.objects.count() == 2500


def test_next_that_is_not_a_string(kong_admin):
    kong_admin.fail_page(1, 200, {"data": make_consumers(1), "next": {"offset": "x"}})

    with pytest.raises(CommandError, match="unexpected 'next' in the answer of"):
        run_import(kong_admin.url)
    assert KongConsumer.objects.count() == 0


def test_client_returns_the_consumers_in_order(kong_admin):
    kong_admin.consumers = make_consumers(3, username=None, custom_id=None, tags=[])
    kong_admin.consumers[1]["tags"] = None  # Kong answers null for unset tags

    consumers = fetch_consumers(kong_admin.url)

    assert [c.id for c in consumers] == sorted(c["id"] for c in kong_admin.consumers)
    assert all(c.username is None and c.custom_id is None and c.tags == [] for c in consumers)


# --------------------------------------------------------------------------------------------------
# Idempotence and updates


def test_import_again_is_idempotent_and_updates_what_changed(kong_admin):
    kong_admin.consumers = make_consumers(2500)
    run_import(kong_admin.url)
    first = stored()
    pks = dict(KongConsumer.objects.values_list("kong_id", "pk"))

    out = run_import(kong_admin.url)

    assert "Imported 2500 consumers" in out and "0 new, 0 updated, 2500 unchanged" in out
    assert stored() == first

    kong_admin.consumers[0]["username"] = "renamed"
    kong_admin.consumers[1]["custom_id"] = "other-custom"
    kong_admin.consumers[2]["tags"] = ["plan:pro"]
    kong_admin.consumers += make_consumers(2, start=10_000)

    result = kong_consumers_import(admin_url=kong_admin.url)

    assert result == ImportResult(created=2, updated=3, unchanged=2497)
    assert result.total == 2502
    assert KongConsumer.objects.get(kong_id=kong_admin.consumers[0]["id"]).username == "renamed"
    assert KongConsumer.objects.get(kong_id=kong_admin.consumers[1]["id"]).custom_id == "other-custom"
    assert KongConsumer.objects.get(kong_id=kong_admin.consumers[2]["id"]).tags == ["plan:pro"]
    assert KongConsumer.objects.count() == 2502
    # rows are updated in place: ids (and attributions pointing at them) survive
    assert {k: v for k, v in KongConsumer.objects.values_list("kong_id", "pk") if k in pks} == pks


def test_username_moved_to_another_consumer(kong_admin):
    a, b = make_consumers(2)
    kong_admin.consumers = [a, b]
    run_import(kong_admin.url)
    # Kong: a was deleted and b renamed to a's old name; then a new consumer took b's old name
    c = make_consumers(1, start=2)[0]
    kong_admin.consumers = [dict(b, username=a["username"]), dict(c, username=b["username"])]

    result = kong_consumers_import(admin_url=kong_admin.url)

    assert (result.created, result.updated, result.unchanged) == (1, 1, 0)
    assert KongConsumer.objects.get(kong_id=b["id"]).username == a["username"]
    assert KongConsumer.objects.get(kong_id=c["id"]).username == b["username"]
    assert KongConsumer.objects.get(kong_id=a["id"]).username is None  # gone from Kong, kept without the name


def test_usernames_swapped_between_two_consumers(kong_admin):
    a, b = make_consumers(2)
    kong_admin.consumers = [a, b]
    run_import(kong_admin.url)
    kong_admin.consumers = [dict(a, username=b["username"]), dict(b, username=a["username"])]

    result = kong_consumers_import(admin_url=kong_admin.url)

    assert (result.created, result.updated, result.unchanged) == (0, 2, 0)
    assert KongConsumer.objects.get(kong_id=a["id"]).username == b["username"]
    assert KongConsumer.objects.get(kong_id=b["id"]).username == a["username"]


def test_one_username_on_two_consumers_of_one_import_stays_with_the_last(kong_admin):
    a, b, c = make_consumers(3)
    kong_admin.consumers = [a, b]
    run_import(kong_admin.url)
    kong_admin.consumers = [dict(a, username="shared"), b, dict(c, username="shared")]

    result = kong_consumers_import(admin_url=kong_admin.url)

    assert (result.created, result.updated, result.unchanged) == (1, 1, 1)
    assert KongConsumer.objects.get(kong_id=c["id"]).username == "shared"
    assert KongConsumer.objects.get(kong_id=a["id"]).username is None


def test_the_last_consumer_listed_keeps_a_username_also_when_a_new_one_named_it_first(kong_admin):
    first, last = sorted(make_consumers(2), key=lambda c: c["id"])  # Kong lists consumers by id
    kong_admin.consumers = [last]
    run_import(kong_admin.url)
    kong_admin.consumers = [dict(first, username="shared"), dict(last, username="shared")]

    kong_consumers_import(admin_url=kong_admin.url)

    assert KongConsumer.objects.get(kong_id=last["id"]).username == "shared"  # changed, listed last
    assert KongConsumer.objects.get(kong_id=first["id"]).username is None  # new, listed first


def test_thousands_of_consumers_are_written_in_a_few_statements(kong_admin, django_assert_max_num_queries):
    kong_admin.consumers = make_consumers(2500)
    run_import(kong_admin.url)
    kong_admin.consumers = [dict(c, username=f"renamed-{n}") if n % 2 else c
                            for n, c in enumerate(make_consumers(2600))]
    with django_assert_max_num_queries(20):  # (SQLite: smaller batches of the bulk update)
        result = kong_consumers_import(admin_url=kong_admin.url)
    assert (result.created, result.updated, result.unchanged) == (100, 1250, 1250)
    assert KongConsumer.objects.get(kong_id=make_consumers(2, start=1)[0]["id"]).username == "renamed-1"


def test_consumers_without_username(kong_admin):
    kong_admin.consumers = make_consumers(3, username=None, custom_id=None) + make_consumers(1, start=3)

    out = run_import(kong_admin.url)

    assert "Imported 4 consumers" in out
    without = KongConsumer.objects.filter(username__isnull=True)
    assert without.count() == 3
    assert set(without.values_list("custom_id", flat=True)) == {""}
    row = without.first()
    assert row is not None
    assert str(row) == row.kong_id
    assert row.subjects == [f"consumer:{row.kong_id}"]
    assert "0 new, 0 updated, 4 unchanged" in run_import(kong_admin.url)


# --------------------------------------------------------------------------------------------------
# Errors: a clear message, and nothing stored


@pytest.mark.parametrize("token", [None, "wrong-token"], ids=["without token", "wrong token"])
def test_refused_token_is_a_command_error_and_nothing_is_stored(token):
    with FakeKongAdmin(consumers=make_consumers(5), admin_token="s3cret") as fake:
        with pytest.raises(CommandError) as caught:
            run_import(fake.url, token)

        message = str(caught.value)
        assert message.startswith("Nothing imported:")
        assert "refused access (401)" in message and "token" in message
        assert fake.url in message
        assert "s3cret" not in message and (token is None or token not in message)
        (request,) = fake.requests
        assert request.status == 401
        assert request.header("Kong-Admin-Token") == token
    assert KongConsumer.objects.count() == 0


def test_token_is_sent_on_every_page():
    with FakeKongAdmin(consumers=make_consumers(2500), admin_token="s3cret") as fake:
        out = run_import(fake.url, "s3cret")

        assert "Imported 2500 consumers" in out
        assert [r.header("Kong-Admin-Token") for r in fake.requests] == ["s3cret"] * 3


def test_fake_answers_kong_401_body():
    import json
    import urllib.error
    import urllib.request

    with FakeKongAdmin(admin_token="s3cret") as fake:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(fake.url + "/consumers", timeout=5)
        assert caught.value.code == 401
        assert json.loads(caught.value.read()) == {"message": INVALID_CREDENTIALS}


def test_bad_json_on_page_2_stores_nothing(kong_admin):
    kong_admin.consumers = make_consumers(2500)
    kong_admin.bad_json_page(2)

    with pytest.raises(CommandError, match=r"^Nothing imported: the Kong Admin API at http://.* did not return JSON"):
        run_import(kong_admin.url)

    assert [r.page for r in kong_admin.requests] == [1, 2]
    assert KongConsumer.objects.count() == 0


def test_failure_on_a_later_page_leaves_earlier_imports_untouched(kong_admin):
    kong_admin.consumers = make_consumers(2500)
    run_import(kong_admin.url)
    before = stored()
    for consumer in kong_admin.consumers:
        consumer["username"] = "x-" + consumer["username"]
    kong_admin.fail_page(3, 500)

    with pytest.raises(CommandError, match=r"^Nothing imported: the Kong Admin API answered 500 for http://"):
        run_import(kong_admin.url)

    assert stored() == before


def test_500_on_first_page(kong_admin):
    kong_admin.consumers = make_consumers(10)
    kong_admin.fail_page(1, 500)

    with pytest.raises(KongAdminError, match="answered 500"):
        kong_consumers_import(admin_url=kong_admin.url)
    assert KongConsumer.objects.count() == 0


def test_answer_that_is_not_a_consumer_list(kong_admin):
    kong_admin.fail_page(1, 200, {"message": "Welcome to kong", "version": "3.9.0"})

    with pytest.raises(CommandError, match=r'unexpected answer from .*: expected \{"data": \[\.\.\.\], "next"'):
        run_import(kong_admin.url)


def test_consumer_without_id_is_refused(kong_admin):
    kong_admin.consumers = make_consumers(3)
    kong_admin.fail_page(1, 200, {"data": [{"username": "nobody"}], "next": None})

    with pytest.raises(CommandError, match="a consumer without an id"):
        run_import(kong_admin.url)
    assert KongConsumer.objects.count() == 0


def test_wrong_path_is_a_404():
    fake = FakeKongAdmin(consumers=make_consumers(3), prefix=KONNECT_PREFIX)
    missing_prefix = pytest.raises(CommandError, match=r"answered 404 for http://127\.0\.0\.1:\d+/consumers\?size=1000")
    with fake, missing_prefix:
        run_import(fake.root)


def test_unreachable_admin_url():
    url = closed_port_url()

    with pytest.raises(CommandError) as caught:
        run_import(url)

    message = str(caught.value)
    assert message.startswith(f"Nothing imported: cannot reach the Kong Admin API at {url}/consumers?size=1000")
    assert "refused" in message.lower()


def test_slow_page_times_out(kong_admin, monkeypatch):
    monkeypatch.setattr(kong_admin_client, "TIMEOUT_SECONDS", 0.3)
    kong_admin.consumers = make_consumers(1500)
    kong_admin.slow_page(2, 10)

    with pytest.raises(CommandError, match="cannot reach the Kong Admin API at .*timed out"):
        run_import(kong_admin.url)
    assert KongConsumer.objects.count() == 0


@pytest.mark.parametrize("url", ["ftp://x", "not a url", "", "http://", "kong:8001"])
def test_invalid_admin_url(url):
    with pytest.raises(CommandError, match=r"^Nothing imported: .* is not an http\(s\) URL of a Kong Admin API$"):
        run_import(url)


# --------------------------------------------------------------------------------------------------
# Celery task and job run


def test_task_records_a_succeeded_job_run(kong_admin):
    kong_admin.consumers = make_consumers(1200)

    import_kong_consumers.delay(kong_admin.url, None)

    run = JobRun.objects.get(kind="import_kong_consumers")
    assert run.status == JobRun.Status.SUCCEEDED
    assert run.message == "1200 consumers: 1200 new, 0 updated, 0 unchanged"
    assert run.result == {"created": 1200, "updated": 0, "unchanged": 0}
    assert run.params == {"admin_url": kong_admin.url}
    assert run.started_at and run.finished_at
    assert KongConsumer.objects.count() == 1200

    import_kong_consumers.delay(kong_admin.url, None)
    again = JobRun.objects.filter(kind="import_kong_consumers").order_by("-id").first()
    assert again is not None
    assert again.pk != run.pk
    assert again.message == "1200 consumers: 0 new, 0 updated, 1200 unchanged"


def test_task_records_a_failed_job_run_and_stores_nothing(kong_admin):
    kong_admin.consumers = make_consumers(2500)
    kong_admin.bad_json_page(2)

    assert import_kong_consumers.delay(kong_admin.url, None).get() == 0

    run = JobRun.objects.get(kind="import_kong_consumers")
    assert run.status == JobRun.Status.FAILED
    assert run.message.startswith("Nothing imported: the Kong Admin API at ")
    assert run.message.endswith("did not return JSON")
    assert run.finished_at is not None
    assert KongConsumer.objects.count() == 0


def test_task_with_a_refused_token():
    with FakeKongAdmin(consumers=make_consumers(3), admin_token="s3cret") as fake:
        import_kong_consumers.delay(fake.url, "nope")

    run = JobRun.objects.get(kind="import_kong_consumers")
    assert run.status == JobRun.Status.FAILED
    assert run.message.startswith("Nothing imported: the Kong Admin API refused access (401)")
    assert "nope" not in run.message
    assert "nope" not in str(run.params)


def test_task_continues_a_queued_job_run(kong_admin):
    from common.jobs import job_run_create

    kong_admin.consumers = make_consumers(4)
    queued = job_run_create(kind="import_kong_consumers", trigger=JobRun.Trigger.ADMIN,
                            params={"admin_url": kong_admin.url})

    assert import_kong_consumers.delay(kong_admin.url, None, queued.pk).get() == 4

    queued.refresh_from_db()
    assert queued.status == JobRun.Status.SUCCEEDED
    assert queued.trigger == JobRun.Trigger.ADMIN
    assert JobRun.objects.filter(kind="import_kong_consumers").count() == 1


def test_task_with_an_unreachable_url():
    import_kong_consumers.delay(closed_port_url(), None)

    run = JobRun.objects.get(kind="import_kong_consumers")
    assert run.status == JobRun.Status.FAILED
    assert run.message.startswith("Nothing imported: cannot reach the Kong Admin API at http://127.0.0.1:")


# --------------------------------------------------------------------------------------------------
# Admin: import, then include a consumer in a customer

IMPORT_URL = "/admin/customers/kongconsumer/import/"
CHANGELIST_URL = "/admin/customers/kongconsumer/"


def test_admin_import_then_include_a_consumer(admin_client, admin_user, django_capture_on_commit_callbacks):
    with FakeKongAdmin(consumers=make_consumers(1500), admin_token="s3cret") as fake:
        page = admin_client.get(IMPORT_URL)
        assert page.status_code == 200
        assert b'name="admin_url"' in page.content and b'name="token"' in page.content
        assert IMPORT_URL.encode() in admin_client.get(CHANGELIST_URL).content  # the "Import" button

        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            response = admin_client.post(IMPORT_URL, {"admin_url": fake.url, "token": "s3cret"})

        assert len(callbacks) == 1
        run = JobRun.objects.get(kind="import_kong_consumers")
        assert response.status_code == 302
        assert response["Location"] == f"/admin/common/jobrun/{run.pk}/change/"
        assert run.status == JobRun.Status.SUCCEEDED
        assert run.trigger == JobRun.Trigger.ADMIN
        assert run.requested_by == admin_user
        assert run.params == {"admin_url": fake.url}
        assert run.message == "1500 consumers: 1500 new, 0 updated, 0 unchanged"
        assert [r.header("Kong-Admin-Token") for r in fake.requests] == ["s3cret"] * 2
    job_page = admin_client.get(response["Location"])
    assert job_page.status_code == 200
    assert b"1500 consumers: 1500 new" in job_page.content
    assert b"s3cret" not in job_page.content
    assert KongConsumer.objects.count() == 1500

    customer = customer_create(key="acme", name="Acme", currency="USD")
    consumer = KongConsumer.objects.get(username="user-7")
    listing = admin_client.get(CHANGELIST_URL, {"q": "user-7"})
    assert listing.status_code == 200 and b"user-7" in listing.content

    # the action first asks which customer
    ask = admin_client.post(CHANGELIST_URL, {"action": "include_in_customer", "_selected_action": [consumer.pk]})
    assert ask.status_code == 200
    assert b"Include usage in which customer?" in ask.content and b"Acme (acme)" in ask.content

    done = admin_client.post(
        CHANGELIST_URL,
        {"action": "include_in_customer", "_selected_action": [consumer.pk], "customer": customer.pk},
        follow=True,
    )
    assert done.status_code == 200
    assert "Acme (acme) now includes the usage of 1 more." in [str(m) for m in done.context["messages"]]
    rows = SubjectAttribution.objects.filter(customer=customer, end__isnull=True)
    assert sorted(rows.values_list("subject", flat=True)) == sorted([f"consumer:{consumer.kong_id}", "user-7"])
    assert set(rows.values_list("kong_consumer", flat=True)) == {consumer.pk}
    assert re.search(rb"Acme \(acme\)", admin_client.get(CHANGELIST_URL, {"q": "user-7"}).content)


def test_admin_include_consumer_without_username(admin_client, kong_admin):
    kong_admin.consumers = make_consumers(1, username=None)
    run_import(kong_admin.url)
    consumer = KongConsumer.objects.get()
    customer = customer_create(key="solo", name="Solo", currency="USD")

    admin_client.post(
        CHANGELIST_URL, {"action": "include_in_customer", "_selected_action": [consumer.pk], "customer": customer.pk}
    )

    assert list(SubjectAttribution.objects.values_list("subject", flat=True)) == [f"consumer:{consumer.kong_id}"]


def test_admin_include_consumer_already_in_another_customer(admin_client, kong_admin):
    kong_admin.consumers = make_consumers(1)
    run_import(kong_admin.url)
    consumer = KongConsumer.objects.get()
    first = customer_create(key="first", name="First", currency="USD")
    second = customer_create(key="second", name="Second", currency="USD")
    data = {"action": "include_in_customer", "_selected_action": [consumer.pk]}
    admin_client.post(CHANGELIST_URL, {**data, "customer": first.pk})

    response = admin_client.post(CHANGELIST_URL, {**data, "customer": second.pk}, follow=True)

    messages = [str(m) for m in response.context["messages"]]
    assert any("already belongs to First (first)" in m for m in messages)
    assert set(SubjectAttribution.objects.values_list("customer__key", flat=True)) == {"first"}


def test_admin_import_with_a_refused_token_fails_the_job(admin_client, django_capture_on_commit_callbacks):
    fake = FakeKongAdmin(consumers=make_consumers(3), admin_token="s3cret")
    with fake, django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(IMPORT_URL, {"admin_url": fake.url, "token": "wrong"})

    run = JobRun.objects.get(kind="import_kong_consumers")
    assert response["Location"] == f"/admin/common/jobrun/{run.pk}/change/"
    assert run.status == JobRun.Status.FAILED
    assert run.message.startswith("Nothing imported: the Kong Admin API refused access (401)")
    assert b"Nothing imported" in admin_client.get(response["Location"]).content
    assert KongConsumer.objects.count() == 0


@pytest.mark.parametrize("url", ["not a url", "ftp://kong.example.com", "kong:8001", "http://"])
def test_admin_import_form_refuses_what_is_not_an_http_url(admin_client, url):
    response = admin_client.post(IMPORT_URL, {"admin_url": url})

    assert response.status_code == 200
    assert b"Enter an http:// or https:// URL" in response.content
    assert not JobRun.objects.exists()


def test_admin_import_form_accepts_a_service_name_host(admin_client):
    # Docker/Kubernetes service names have no dot: the form's own example (no job runs: on_commit not executed)
    response = admin_client.post(IMPORT_URL, {"admin_url": " http://kong:8001 "})

    run = JobRun.objects.get(kind="import_kong_consumers")
    assert response.status_code == 302
    assert run.params == {"admin_url": "http://kong:8001"}


def test_admin_import_needs_the_permission_to_add_consumers(client, django_user_model):
    staff = django_user_model.objects.create_user("viewer", password="pw-for-tests", is_staff=True)
    client.force_login(staff)

    assert client.get(IMPORT_URL).status_code == 403
    assert client.post(IMPORT_URL, {"admin_url": "http://kong:8001"}).status_code == 403
    assert not JobRun.objects.exists()
