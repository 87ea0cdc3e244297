"""Shared admin helpers: list filters given as a table of conditions (``ConditionFilter``) and the "settings row
of this customer" link of the customer page's panels (``row_and_admin_url``)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import timezone

from common.admin.extensions import row_and_admin_url
from credits.models import CreditGrant, LowBalanceAlert
from metering.models import EventTypeActivity, Meter
from tests.builders import customer, grant, make_meter, utc

pytestmark = pytest.mark.django_db


def listed(admin_client, url: str) -> set[str]:
    response = admin_client.get(url)
    assert response.status_code == 200
    return {str(row) for row in response.context["cl"].result_list}


def test_grant_status_filter_keeps_the_rows_of_each_condition(admin_client):
    acme = customer("acme")
    open_grant = grant(acme, 1000, effective_at=utc(2026, 11, 1))
    expiring = grant(acme, 2000, effective_at=utc(2026, 11, 1), expires_at=utc(2027, 1, 1))
    voided = grant(acme, 3000, effective_at=utc(2026, 11, 1))
    CreditGrant.objects.filter(pk=voided.pk).update(voided_at=timezone.now())
    url = reverse("admin:credits_creditgrant_changelist")

    assert listed(admin_client, url + "?state=void") == {str(voided)}
    assert listed(admin_client, url + "?state=expiring") == {str(expiring)}
    assert listed(admin_client, url + "?state=open") == {str(open_grant), str(expiring)}
    assert listed(admin_client, url) == {str(open_grant), str(expiring), str(voided)}


def test_rollup_filter_and_metered_filter(admin_client):
    make_meter()
    failing = make_meter(slug="api_requests", name="Requests", event_type="kong.api_request", aggregation="COUNT",
                         value_property="", group_by={})
    Meter.objects.filter(pk=failing.pk).update(rollup_error="boom")
    meters = reverse("admin:metering_meter_changelist")
    assert listed(admin_client, meters + "?rollup=failing") == {str(Meter.objects.get(pk=failing.pk))}
    assert listed(admin_client, meters + "?rollup=ok") == {str(Meter.objects.get(slug="llm_tokens"))}

    for event_type in ("kong.llm_request", "acme.unknown"):
        EventTypeActivity.objects.create(type=event_type, event_count=1, last_seen=timezone.now())
    activity = reverse("admin:metering_eventtypeactivity_changelist")
    assert listed(admin_client, activity + "?metered=yes") == {"kong.llm_request"}
    assert listed(admin_client, activity + "?metered=no") == {"acme.unknown"}


def test_row_and_admin_url_adds_or_changes_the_customers_row():
    acme = customer("acme")
    row, url = row_and_admin_url(LowBalanceAlert, "customer", acme)
    assert row is None
    assert url == reverse("admin:credits_lowbalancealert_add") + f"?customer={acme.pk}"

    alert = LowBalanceAlert.objects.create(customer=acme, threshold=500)
    row, url = row_and_admin_url(LowBalanceAlert, "customer", acme)
    assert row == alert
    assert url == reverse("admin:credits_lowbalancealert_change", args=[alert.pk])


def test_saved_only_shows_a_dash_for_an_unsaved_object_and_renders_a_saved_one():
    from common.admin.utils import saved_only
    from customers.models import Customer

    calls = []

    @saved_only
    def panel(obj: Customer) -> str:
        calls.append(obj.pk)
        return f"customer {obj.pk}"

    assert panel(Customer(key="new")) == "—"
    assert calls == []  # never run on an unsaved object
    saved = customer("acme")
    assert panel(saved) == f"customer {saved.pk}"
    assert panel.__name__ == "panel"  # the column's CSS class


def test_customer_add_page_shows_the_panels_of_other_apps_as_dashes(admin_client):
    response = admin_client.get(reverse("admin:customers_customer_add"))
    assert response.status_code == 200
    page = re.sub(r"\s+", " ", response.content.decode())
    for label in ("Burn-down", "Past invoices", "Alerts that fired", "Emails and spend alert",
                  "Preview of this period&#x27;s invoice", "Low-credit alert", "Grants"):
        assert re.search(rf'>{label}:</label> <div class="readonly">—</div>', page), label
