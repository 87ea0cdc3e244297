"""credits.low: announced (an outbox row in the transaction of the change) when a customer's available credits fall
below its low-credit alert's threshold — once per crossing, again after re-arming (available back at or above the
threshold); a rolled-back change announces nothing; evaluated after a close, by the auto top-up beat job and after
grant changes, for that customer only."""

from __future__ import annotations

import datetime as dt

import jsonschema  # type: ignore[import-untyped]  # drf-spectacular's dependency
import pytest
from django.db import transaction

from credits.models import LowBalanceAlert
from credits.services.grants import grant_adjust, grant_void, grants_expire
from credits.services.low_balance import credits_low_check
from customers.services.subscriptions import subscription_create
from invoicing.services.close import close_cycles
from invoicing.services.top_ups import auto_top_ups
from notifications.event_types import EVENT_TYPES
from notifications.models import OutboxEvent
from tests.builders import cent_plan, customer, grant, ingest, kong_air, tokens, utc

pytestmark = pytest.mark.django_db
NOV, DEC = utc(2026, 11, 1), utc(2026, 12, 1)
AFTER_NOV = DEC + dt.timedelta(hours=2)


def lows():
    return list(OutboxEvent.objects.filter(type="credits.low").order_by("pk").values_list("data", flat=True))


def alert(customer_, threshold=1000, **fields):
    return LowBalanceAlert.objects.create(customer=customer_, threshold=threshold, **fields)


def test_fires_once_at_the_crossing_not_again_while_below_and_again_after_re_arming():
    acme = customer("acme")
    alert(acme, threshold=1000)
    credits = grant(acme, 1500, effective_at=NOV)
    at = NOV + dt.timedelta(days=1)
    assert credits_low_check(customer_id=acme.pk, now=at) is False  # 15.00 ≥ 10.00
    grant_adjust(grant=credits, amount=-600, reason="used", now=at)  # 9.00: the crossing
    assert lows() == [{"customer": "acme", "available": "9.00", "threshold": "10.00"}]
    assert LowBalanceAlert.objects.get().low_since == at
    grant_adjust(grant=credits, amount=-100, reason="used", now=at)  # 8.00: still below
    assert credits_low_check(customer_id=acme.pk, now=at) is False
    assert len(lows()) == 1
    grant(acme, 200, effective_at=NOV)  # 10.00: back at the threshold re-arms
    assert LowBalanceAlert.objects.get().low_since is None
    assert len(lows()) == 1
    grant_adjust(grant=credits, amount=-1, reason="used", now=at)  # 9.99: a new crossing
    assert [event["available"] for event in lows()] == ["9.00", "9.99"]
    event = OutboxEvent.objects.filter(type="credits.low").last()
    assert event is not None and event.customer_id == acme.pk and event.customer_key == "acme"


def test_the_payload_matches_the_documented_schema():
    acme = customer("acme", currency="JPY")
    alert(acme, threshold=500)
    grant_void(grant=grant(acme, 600, effective_at=NOV), now=NOV + dt.timedelta(days=1))
    (data,) = lows()
    assert data == {"customer": "acme", "available": "0", "threshold": "500"}  # JPY has no minor unit
    jsonschema.validate(data, EVENT_TYPES["credits.low"][1])


def test_a_rolled_back_change_announces_nothing():
    acme = customer("acme")
    alert(acme, threshold=1000)
    credits = grant(acme, 1500, effective_at=NOV)
    with pytest.raises(RuntimeError), transaction.atomic():
        grant_void(grant=credits, now=NOV + dt.timedelta(days=1))
        assert len(lows()) == 1  # inside the change's transaction
        raise RuntimeError("the change fails")
    assert lows() == []
    assert LowBalanceAlert.objects.get().low_since is None  # still armed


def test_a_disabled_alert_or_none_announces_nothing():
    acme, other = customer("acme"), customer("other")
    alert(acme, threshold=1000, enabled=False)
    grant_void(grant=grant(acme, 1500, effective_at=NOV), now=NOV + dt.timedelta(days=1))
    grant_void(grant=grant(other, 1500, effective_at=NOV), now=NOV + dt.timedelta(days=1))
    assert lows() == []


def test_the_close_that_burns_the_credits_announces_it():
    air = kong_air()
    subscription_create(customer=air, plan=cent_plan(), start=NOV)
    ingest([tokens(600, utc(2026, 11, 5))])
    grant(air, 1200, effective_at=NOV)
    alert(air, threshold=1000)
    close_cycles(now=AFTER_NOV)
    assert lows() == [{"customer": "kong-air", "available": "6.00", "threshold": "10.00"}]
    close_cycles(now=AFTER_NOV + dt.timedelta(hours=1))  # nothing new: not again
    assert len(lows()) == 1


def test_usage_at_the_gateway_between_cycles_is_caught_by_the_beat_job():
    air = kong_air()
    subscription_create(customer=air, plan=cent_plan(), start=NOV)
    grant(air, 1200, effective_at=NOV)
    alert(air, threshold=1000)
    assert auto_top_ups(now=utc(2026, 11, 3)) == 0
    assert lows() == []
    ingest([tokens(300, utc(2026, 11, 5))])  # pending usage 3.00: available 9.00
    auto_top_ups(now=utc(2026, 11, 6))
    assert lows() == [{"customer": "kong-air", "available": "9.00", "threshold": "10.00"}]
    auto_top_ups(now=utc(2026, 11, 7))
    assert len(lows()) == 1


def test_an_expiry_crosses_the_threshold():
    acme = customer("acme")
    alert(acme, threshold=1000)
    grant(acme, 1500, effective_at=NOV, expires_at=NOV + dt.timedelta(days=5))
    assert grants_expire(now=NOV + dt.timedelta(days=10)) == 1
    assert lows() == [{"customer": "acme", "available": "0.00", "threshold": "10.00"}]


def test_the_customer_page_shows_the_alert_and_the_admin_edits_it(admin_client):
    acme = customer("acme")
    page = admin_client.get(f"/admin/customers/customer/{acme.pk}/change/").content.decode()
    assert "credits.low is not announced" in page and f"/admin/credits/lowbalancealert/add/?customer={acme.pk}" in page
    response = admin_client.post("/admin/credits/lowbalancealert/add/",
                                 {"customer": acme.pk, "enabled": "on", "threshold": "25.00"})
    assert response.status_code == 302
    assert LowBalanceAlert.objects.get(customer=acme).threshold == 2500
    page = admin_client.get(f"/admin/customers/customer/{acme.pk}/change/").content.decode()
    assert "credits.low below 25.00 USD" in page and "armed" in page


def test_the_threshold_is_typed_and_shown_in_the_customers_currency(admin_client):
    yen = customer("yen-co", currency="JPY")
    response = admin_client.post("/admin/credits/lowbalancealert/add/",
                                 {"customer": yen.pk, "enabled": "on", "threshold": "500"})
    assert response.status_code == 302
    alert_row = LowBalanceAlert.objects.get(customer=yen)
    assert alert_row.threshold == 500  # JPY has no minor unit
    listing = admin_client.get("/admin/credits/lowbalancealert/").content.decode()
    assert "500 JPY" in listing
    form = admin_client.get(f"/admin/credits/lowbalancealert/{alert_row.pk}/change/").context["adminform"].form
    assert str(form.initial["threshold"]) == "500"


@pytest.mark.parametrize("threshold", ["-1", "ten", "1.555", "99999999999999999999999", "1\x00", "NaN", "1e400"])
def test_a_bad_threshold_is_a_form_error(admin_client, threshold):
    acme = customer("acme")
    response = admin_client.post("/admin/credits/lowbalancealert/add/",
                                 {"customer": acme.pk, "enabled": "on", "threshold": threshold})
    assert response.status_code == 200
    assert "threshold" in response.context["adminform"].form.errors
    assert not LowBalanceAlert.objects.exists()
