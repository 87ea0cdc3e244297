"""The customer admin's "Include usage from" rows (editable until an issued invoice depends on them, errors as
form errors with nothing saved, changes in the admin log) and the back-dated subscription review."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from customers.models import Customer, SubjectAttribution, Subscription
from customers.selectors import subscription_review
from customers.services.customers import attribution_add, customer_create
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice
from invoicing.services.close import close_cycles
from tests import builders
from tests.builders import ingest, iso, llm_event, token_plan, utc

pytestmark = pytest.mark.django_db

NOV, NOV20, DEC = utc(2026, 11, 1), utc(2026, 11, 20), utc(2026, 12, 1)


def split(value: dt.datetime | None) -> tuple[str, str]:
    return (f"{value:%Y-%m-%d}", f"{value:%H:%M:%S}") if value else ("", "")


def change_form(customer: Customer, rows: dict[int, tuple[Any, ...]] | None = None,
                new: Sequence[tuple[Any, ...]] = ()) -> dict[str, Any]:
    """The POST of the customer change page: ``rows`` maps an existing mapping's pk to its (start, end),
    ``new`` lists (subject, start, end) rows to add."""
    existing = list(customer.attributions.order_by("id"))
    data: dict[str, Any] = {
        "name": customer.name, "email": customer.email, "currency": customer.currency,
        "collection_method": customer.collection_method, "days_until_due": "", "metadata": "{}",
        "stripe_customer_id": "", "address_line1": "", "address_line2": "", "city": "", "state": "",
        "postal_code": "", "country": "", "tax_id": "",
        "attributions-TOTAL_FORMS": str(len(existing) + len(new)), "attributions-INITIAL_FORMS": str(len(existing)),
    }
    for i, attribution in enumerate(existing):
        start, end = (rows or {}).get(attribution.pk, (attribution.start, attribution.end))
        data.update({f"attributions-{i}-id": attribution.pk, f"attributions-{i}-customer": customer.pk})
        data[f"attributions-{i}-start_0"], data[f"attributions-{i}-start_1"] = split(start)
        data[f"attributions-{i}-end_0"], data[f"attributions-{i}-end_1"] = split(end)
    for n, (subject, start, end) in enumerate(new, start=len(existing)):
        data[f"attributions-{n}-subject"] = subject
        data[f"attributions-{n}-start_0"], data[f"attributions-{n}-start_1"] = split(start)
        data[f"attributions-{n}-end_0"], data[f"attributions-{n}-end_1"] = split(end)
    subscriptions = list(customer.subscriptions.order_by("-start", "-id"))
    data.update({"subscriptions-TOTAL_FORMS": str(len(subscriptions)),
                 "subscriptions-INITIAL_FORMS": str(len(subscriptions))})
    for i, subscription in enumerate(subscriptions):
        data.update({f"subscriptions-{i}-id": subscription.pk, f"subscriptions-{i}-customer": customer.pk})
    return data


def post(admin_client, customer, **kwargs):
    return admin_client.post(f"/admin/customers/customer/{customer.pk}/change/", change_form(customer, **kwargs))


def inline_errors(response) -> list[str]:
    formset = next(f.formset for f in response.context["inline_admin_formsets"]
                   if f.formset.model is SubjectAttribution)
    return [message for form in formset.forms for messages in form.errors.values() for message in messages]


def success_messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request) if m.level_tag == "success"]


@pytest.fixture
def kong_air():
    return builders.kong_air(since=NOV20)


def test_the_start_of_a_mapping_is_editable_and_the_change_is_logged(admin_client, kong_air):
    mapping = kong_air.attributions.get()
    response = post(admin_client, kong_air, rows={mapping.pk: (None, None)})
    assert response.status_code == 302, inline_errors(response)
    mapping.refresh_from_db()
    assert mapping.start is None  # from the beginning now
    entry = LogEntry.objects.get(object_id=str(kong_air.pk))
    assert "Start" in entry.get_change_message() and "kong-air → kong-air" in entry.get_change_message()


def test_adding_a_subject_is_logged(admin_client, kong_air):
    response = post(admin_client, kong_air, new=[("kong-air-mobile", None, None)])
    assert response.status_code == 302, inline_errors(response)
    added = SubjectAttribution.objects.get(subject="kong-air-mobile")
    assert (added.start, added.end) == (None, None)
    message = LogEntry.objects.get(object_id=str(kong_air.pk)).get_change_message()
    assert "Added subject attribution “kong-air-mobile → kong-air”" in message


def test_an_edit_an_issued_invoice_depends_on_is_a_form_error_and_saves_nothing(admin_client, kong_air):
    mapping = kong_air.attributions.get()
    subscription_create(customer=kong_air, plan=token_plan(), start=NOV)
    ingest([llm_event(tokens=100_000, time=iso(utc(2026, 11, 25)))])
    close_cycles(now=DEC + dt.timedelta(hours=2))
    invoice = Invoice.objects.get(cycle=1)
    assert invoice.status == "issued"

    response = post(admin_client, kong_air, rows={mapping.pk: (None, None)}, new=[("other-gw", None, None)])
    assert response.status_code == 200
    errors = inline_errors(response)
    assert any(f"invoice {invoice.number} (issued) billed usage of 2026-11-01 – 2026-12-01" in e for e in errors)
    assert success_messages(response) == [] and "changed successfully" not in response.content.decode()
    mapping.refresh_from_db()
    assert mapping.start == NOV20
    assert not SubjectAttribution.objects.filter(subject="other-gw").exists()  # the whole save was refused
    assert LogEntry.objects.count() == 0

    later = post(admin_client, kong_air, rows={mapping.pk: (NOV20, utc(2027, 1, 1))})  # after the invoice: fine
    assert later.status_code == 302, inline_errors(later)


def test_an_overlapping_back_dated_row_is_a_form_error_only(admin_client, kong_air):
    other = customer_create(key="other", name="Other", currency="USD")
    response = post(admin_client, other, new=[("kong-air", NOV, utc(2026, 11, 25))])
    assert response.status_code == 200
    assert inline_errors(response) == [
        "kong-air would overlap its mapping to Kong Air (kong-air) from 2026-11-20; a subject belongs to one "
        "customer at a time"]
    assert success_messages(response) == [] and "changed successfully" not in response.content.decode()
    assert SubjectAttribution.objects.count() == 1

    fine = post(admin_client, other, new=[("kong-air", NOV, NOV20)])  # up to where Kong Air's starts
    assert fine.status_code == 302, inline_errors(fine)
    assert SubjectAttribution.objects.get(customer=other).end == NOV20


def test_a_subject_of_another_customer_without_dates_says_whose_it_is(admin_client, kong_air):
    other = customer_create(key="other", name="Other", currency="USD")
    response = post(admin_client, other, new=[("kong-air", None, None)])
    assert inline_errors(response) == [
        "kong-air belongs to Kong Air (kong-air) from 2026-11-20; end it there first to move it (usage before the "
        "move stays with them)"]


def test_one_save_can_end_a_mapping_and_add_its_successor(admin_client):
    air = customer_create(key="kong-air", name="Kong Air", currency="USD")
    mapping = attribution_add(customer=air, subject="gw")
    response = post(admin_client, air, rows={mapping.pk: (None, NOV20)}, new=[("gw", None, None)])
    assert response.status_code == 302, inline_errors(response)
    assert list(air.attributions.order_by("id").values_list("start", "end")) == [(None, NOV20), (NOV20, None)]


def test_bad_dates_and_an_end_before_the_start_are_form_errors(admin_client, kong_air):
    mapping = kong_air.attributions.get()
    response = post(admin_client, kong_air, rows={mapping.pk: (NOV20, NOV)})
    assert response.status_code == 200
    assert inline_errors(response) == ["the end must be after the start, 2026-11-20"]
    data = change_form(kong_air)
    data["attributions-0-start_0"] = "2026-13-45"
    assert admin_client.post(f"/admin/customers/customer/{kong_air.pk}/change/", data).status_code == 200
    data = change_form(kong_air, new=[("bad\x00subject", None, None)])
    response = admin_client.post(f"/admin/customers/customer/{kong_air.pk}/change/", data)
    assert response.status_code == 200 and SubjectAttribution.objects.count() == 1


# ------------------------------------------------------------------------------------ back-dated subscriptions


def test_review_of_a_back_dated_subscription_lists_the_periods_and_their_usage(admin_client):
    now = timezone.now()
    month = now.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    start = (month - dt.timedelta(days=40)).replace(day=1)  # the 1st of two months ago
    air = customer_create(key="kong-air", name="Kong Air", currency="USD")
    attribution_add(customer=air, subject="kong-air")
    plan = token_plan()
    ingest([llm_event(tokens=1234, time=iso(start + dt.timedelta(days=2))),
            llm_event(tokens=7, time=iso(start - dt.timedelta(days=1)))])  # before the start: never
    form = {"customer": air.pk, "plan": plan.pk, "start": f"{start:%Y-%m-%d %H:%M:%S}", "anchor": "calendar"}
    page = admin_client.post("/admin/customers/subscription/add/", form).content.decode()
    ended = 2 if now >= month + dt.timedelta(hours=1) else 1
    assert (f"The start is in the past: {ended} period{'s' if ended > 1 else ''} before today will be billed at the "
            "next close") in page
    assert "Confirm subscription" in page and "ai-token usage so far" in page
    assert f"<td>1</td><td>{start:%Y-%m-%d} 00:00</td>" in page and "<td>1,234</td>" in page
    assert f"<td>3</td><td>{month:%Y-%m-%d} 00:00</td>" in page  # the current period: in-advance fees
    assert "usage and all fees" in page and "usage when the period ends" in page
    assert Subscription.objects.count() == 0

    done = admin_client.post("/admin/customers/subscription/add/", {**form, "confirmed": "yes"})
    subscription = Subscription.objects.get()
    assert done.status_code == 302 and subscription.start == start  # a start in the past is allowed


def test_review_of_a_future_start_lists_the_first_periods_without_a_warning(admin_client):
    air = customer_create(key="kong-air", name="Kong Air", currency="USD")
    plan = token_plan()
    start = timezone.now().astimezone(dt.UTC).replace(microsecond=0) + dt.timedelta(days=10)
    page = admin_client.post("/admin/customers/subscription/add/", {
        "customer": air.pk, "plan": plan.pk, "start": f"{start:%Y-%m-%d %H:%M:%S}", "anchor": "start"}
    ).content.decode()
    assert "Confirm: the first billing periods" in page and "before today" not in page


def test_the_review_reads_usage_in_a_bounded_number_of_queries():
    air = customer_create(key="kong-air", name="Kong Air", currency="USD")
    attribution_add(customer=air, subject="kong-air")
    plan = token_plan(cadence="P1D")
    now = timezone.now()
    counts = {}
    for days in (3, 20):
        start = now - dt.timedelta(days=days)
        with CaptureQueriesContext(connection) as queries:
            review = subscription_review(customer=air, plan=plan, start=start, billing_anchor=None, now=now,
                                         grace=dt.timedelta(hours=1))
        assert len(review.periods) == days + 1  # the ended ones and the current one (starting now)
        assert review.ended == days - 1  # the last one ended less than the grace period ago
        counts[days] = len(queries)
    assert counts[3] == counts[20] <= 6
