"""Usage attribution: subjects included without dates count all their usage; moves; the one rule (covers / clip);
edits guarded by issued invoices; the event explorer's explanation; back-dated subscriptions."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from customers.models import SubjectAttribution, window_clip, window_covers
from customers.selectors import entitlement_check, entitlement_value, feature_usage, subject_periods
from customers.services.attributions import AttributionError, attribution_update
from customers.services.customers import attribution_add, attribution_end
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice
from invoicing.services.close import close_cycles
from invoicing.services.lifecycle import invoice_void
from tests.builders import ai_token_feature, bearer, customer, ingest, iso, llm_event, quota, token_plan, utc

pytestmark = pytest.mark.django_db

NOV, NOV10, NOV20, DEC = utc(2026, 11, 1), utc(2026, 11, 10), utc(2026, 11, 20), utc(2026, 12, 1)
AFTER_NOV = DEC + dt.timedelta(hours=2)


def events(api, token) -> list[dict]:
    return api.get("/api/v1/events", {"from": "2000-01-01T00:00:00Z"}, **bearer(token)).json()


def usage(subscription, start=NOV, end=DEC):
    return feature_usage(subscription=subscription, feature=ai_token_feature(), start=start, end=end)


@contextlib.contextmanager
def on(day: dt.datetime, monkeypatch):
    """Run the calls inside as if it were ``day`` (the services' default "now")."""
    with monkeypatch.context() as patch:
        patch.setattr(timezone, "now", lambda: day)
        yield


# ------------------------------------------------------------------------------------------------ the one rule


ATTR_START, ATTR_END = utc(2026, 11, 10), utc(2026, 11, 20)


@pytest.mark.parametrize("start, end, instant, expected", [
    (None, None, utc(1990, 1, 1), True),
    (None, ATTR_END, ATTR_END - dt.timedelta(microseconds=1), True),
    (None, ATTR_END, ATTR_END, False),  # the end is excluded
    (ATTR_START, None, ATTR_START, True),  # the start is included
    (ATTR_START, None, ATTR_START - dt.timedelta(microseconds=1), False),
    (ATTR_START, ATTR_END, utc(2026, 11, 15), True),
    (ATTR_START, ATTR_END, ATTR_END, False),
    (ATTR_START, None, utc(2999, 1, 1), True),
])
def test_covers_is_half_open_with_unbounded_sides(start, end, instant, expected):
    assert window_covers(start, end, instant) is expected
    assert SubjectAttribution(subject="s", start=start, end=end).covers(instant) is expected


@pytest.mark.parametrize("start, end, a, b, expected", [
    (None, None, NOV, DEC, (NOV, DEC)),
    (None, ATTR_END, NOV, DEC, (NOV, ATTR_END)),
    (ATTR_START, None, NOV, DEC, (ATTR_START, DEC)),
    (ATTR_START, ATTR_END, NOV, DEC, (ATTR_START, ATTR_END)),
    (ATTR_START, ATTR_END, utc(2026, 11, 12), utc(2026, 11, 14), (utc(2026, 11, 12), utc(2026, 11, 14))),
    (ATTR_START, ATTR_END, ATTR_END, DEC, None),  # touching at the end: nothing
    (ATTR_START, ATTR_END, NOV, ATTR_START, None),  # touching at the start: nothing
    (None, ATTR_START, ATTR_START, DEC, None),
    (DEC, None, NOV, DEC, None),
])
def test_clip_is_the_part_of_the_range_inside_the_window(start, end, a, b, expected):
    assert window_clip(start, end, a, b) == expected
    assert SubjectAttribution(subject="s", start=start, end=end).clip(a, b) == expected


# --------------------------------------------------------------------------- a subject included without dates


def test_back_dated_subscription_counts_usage_before_the_subject_was_added(monkeypatch, api, read_token):
    """Subscribed from Nov 1, set up on Nov 20, subject added on Nov 20 without dates: Nov 1–19 counts in the
    usage, the entitlement check and the invoice."""
    plan = token_plan(extra=[quota(limit="1000")])
    ingest([llm_event(tokens=300, time=iso(utc(2026, 11, 5))), llm_event(tokens=200, time=iso(utc(2026, 11, 19))),
            llm_event(tokens=40, time=iso(utc(2026, 11, 21))),
            llm_event(tokens=9_999, time=iso(utc(2026, 10, 31, 23, 59)))])  # before the subscription: never
    with on(NOV20, monkeypatch):
        air = customer()
        attribution = attribution_add(customer=air, subject="kong-air")
        subscription = subscription_create(customer=air, plan=plan, start=NOV)
    assert attribution.start is None and attribution.end is None

    assert usage(subscription) == 540
    value = entitlement_check(id_or_key="kong-air", feature=ai_token_feature(), at=utc(2026, 11, 25))
    assert value is not None
    assert (value.usage, value.balance, value.has_access) == (540, 460, True)
    assert entitlement_value(customer=air, feature=ai_token_feature(), at=utc(2026, 11, 25)).usage == 540

    close_cycles(now=AFTER_NOV)
    invoice = Invoice.objects.get(subscription=subscription, cycle=1)
    line = invoice.lines.get(kind="usage", rate_card_key="ai-token")
    assert line.quantity == 540 and line.amount == 1  # 540 × 0.00002 = 0.0108 → 0.01


def test_a_move_keeps_usage_before_it_with_the_old_customer(monkeypatch):
    first, second = customer("first", "First"), customer("second", "Second")
    plan = token_plan()
    subs = {c.key: subscription_create(customer=c, plan=plan, start=NOV) for c in (first, second)}
    attribution_add(customer=first, subject="gw")  # no dates: from the beginning
    with pytest.raises(AttributionError, match="already belongs to First"):
        attribution_add(customer=second, subject="gw")
    with on(NOV10, monkeypatch):
        moved = attribution_add(customer=second, subject="gw", reassign=True)  # the move: now
    old = SubjectAttribution.objects.get(customer=first)
    assert (old.start, old.end) == (None, NOV10) and (moved.start, moved.end) == (NOV10, None)
    ingest([llm_event(subject="gw", tokens=3, time=iso(utc(2026, 11, 9, 23, 59))),
            llm_event(subject="gw", tokens=4, time=iso(NOV10)), llm_event(subject="gw", tokens=5, time=iso(NOV20))])
    assert usage(subs["first"]) == 3
    assert usage(subs["second"]) == 9
    assert subject_periods(first, NOV, DEC) == [("gw", NOV, NOV10)]
    assert subject_periods(second, NOV, DEC) == [("gw", NOV10, DEC)]


def test_without_dates_a_subject_starts_where_its_previous_mapping_ended():
    first, second = customer("first", "First"), customer("second", "Second")
    mapping = attribution_add(customer=first, subject="gw")
    attribution_end(attribution=mapping, end=NOV10)
    later = attribution_add(customer=second, subject="gw")
    assert (later.start, later.end) == (NOV10, None)  # usage before stays with first
    assert attribution_add(customer=second, subject="gw") == later  # already included: unchanged


def test_back_dated_rows_must_not_overlap():
    first, second = customer("first", "First"), customer("second", "Second")
    attribution_add(customer=first, subject="gw", start=NOV10, end=NOV20)
    with pytest.raises(AttributionError, match=r"would overlap its mapping to First \(first\) from 2026-11-10 until "
                                               "2026-11-20"):
        attribution_add(customer=second, subject="gw", start=NOV, end=utc(2026, 11, 15))
    before = attribution_add(customer=second, subject="gw", start=NOV, end=NOV10)  # touching is fine
    assert (before.start, before.end) == (NOV, NOV10)
    after = attribution_add(customer=second, subject="gw")  # open, from where the last mapping ends
    assert after.start == NOV20
    with pytest.raises(AttributionError, match="the end must be after the start"):
        attribution_add(customer=customer("third", "Third"), subject="other", start=NOV20, end=NOV10)


@pytest.mark.parametrize("subject", ["", "   ", "a\x00b", "line\nbreak", "x" * 256, 42, None])
def test_bad_subjects_are_refused(subject):
    with pytest.raises(AttributionError, match="subject"):
        attribution_add(customer=customer(), subject=subject)
    assert SubjectAttribution.objects.count() == 0


def test_database_constraints_one_open_and_one_unbounded_start_per_subject():
    air, other = customer(), customer("other", "Other")
    SubjectAttribution.objects.create(customer=air, subject="x", start=None, end=NOV)
    with pytest.raises(IntegrityError), transaction.atomic():
        SubjectAttribution.objects.create(customer=other, subject="x", start=None, end=NOV10)
    with pytest.raises(IntegrityError), transaction.atomic():
        SubjectAttribution.objects.create(customer=other, subject="y", start=NOV10, end=NOV)  # end before start
    SubjectAttribution.objects.create(customer=other, subject="x", start=NOV, end=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        SubjectAttribution.objects.create(customer=air, subject="x", start=DEC, end=None)


# ---------------------------------------------------------------------------------------- editing and its guard


def invoiced_november():
    """Kong Air, subject without dates, subscribed from Nov 1, November closed and issued."""
    air = customer()
    mapping = attribution_add(customer=air, subject="kong-air")
    subscription_create(customer=air, plan=token_plan(), start=NOV)
    ingest([llm_event(tokens=100_000, time=iso(utc(2026, 11, 5)))])
    close_cycles(now=AFTER_NOV)
    invoice = Invoice.objects.get(cycle=1)
    assert invoice.status == "issued" and invoice.lines.filter(kind="usage").exists()
    return air, mapping, invoice


def test_editing_a_start_that_an_issued_invoice_depends_on_is_refused():
    air, mapping, invoice = invoiced_november()
    with pytest.raises(AttributionError) as refused:
        attribution_update(attribution=mapping, start=utc(2026, 11, 15), end=None)
    assert f"invoice {invoice.number} (issued) billed usage of 2026-11-01 – 2026-12-01" in str(refused.value)
    mapping.refresh_from_db()
    assert mapping.start is None
    with pytest.raises(AttributionError, match=invoice.number):
        attribution_update(attribution=mapping, start=None, end=utc(2026, 11, 30))  # ending inside it: refused too
    ended = attribution_update(attribution=mapping, start=None, end=utc(2026, 12, 15))  # after it: fine
    assert ended.end == utc(2026, 12, 15)
    invoice_void(invoice=invoice, reason="test")
    moved = attribution_update(attribution=mapping, start=utc(2026, 11, 15), end=None)  # nothing depends now
    assert (moved.start, moved.end) == (utc(2026, 11, 15), None)


def test_editing_a_start_with_no_invoice_depending_on_it_works():
    air = customer()
    mapping = attribution_add(customer=air, subject="kong-air", start=NOV20)
    subscription = subscription_create(customer=air, plan=token_plan(), start=NOV)
    ingest([llm_event(tokens=7, time=iso(utc(2026, 11, 5)))])
    assert usage(subscription) == 0
    attribution_update(attribution=mapping, start=None, end=None)
    assert usage(subscription) == 7


def test_a_draft_or_another_customers_invoice_does_not_block():
    air, mapping, invoice = invoiced_november()
    other = customer("other", "Other")
    gw = attribution_add(customer=other, subject="gw")
    assert attribution_update(attribution=gw, start=NOV10, end=None).start == NOV10
    Invoice.objects.filter(pk=invoice.pk).update(status="draft")
    assert attribution_update(attribution=mapping, start=NOV10, end=None).start == NOV10


# --------------------------------------------------------------------------------- events list and explorer


@pytest.mark.parametrize("start, end, expected", [
    (NOV20, None, "subject kong-air is included by Kong Air from 2026-11-20"),
    (None, NOV, "subject kong-air is included by Kong Air until 2026-11-01"),
    (utc(2026, 11, 12, 14, 30), NOV20, "subject kong-air is included by Kong Air from 2026-11-12 14:30 UTC until "
                                       "2026-11-20"),
])
def test_events_outside_the_mapping_say_when_the_subject_is_included(api, read_token, admin_client, start, end,
                                                                     expected):
    token_plan()
    air = customer()
    attribution_add(customer=air, subject="kong-air", start=start, end=end)
    ingest([llm_event(event_id="outside", time=iso(utc(2026, 11, 10))),
            llm_event(event_id="stranger", subject="stranger", time=iso(utc(2026, 11, 10)))])
    items = {i["event"]["id"]: i for i in events(api, read_token)}
    assert items["outside"]["validationError"] == expected
    assert "customerId" not in items["outside"] or items["outside"]["customerId"] is None
    assert items["stranger"]["validationError"] == "no customer found for event subject: stranger"
    page = admin_client.get("/admin/metering/event/").content.decode()
    assert expected in page


def test_events_inside_a_mapping_without_dates_name_the_customer(api, read_token):
    token_plan()
    attribution_add(customer=customer(), subject="kong-air")
    ingest([llm_event(event_id="old", time=iso(utc(2020, 1, 1)))])
    item = events(api, read_token)[0]
    assert item["customerId"] == "kong-air" and item["validationError"] is None


def test_the_nearest_mapping_explains_the_event(api, read_token):
    token_plan()
    first, second = customer("first", "First"), customer("second", "Second")
    attribution_add(customer=first, subject="gw", start=utc(2026, 1, 1), end=utc(2026, 2, 1))
    attribution_add(customer=second, subject="gw", start=utc(2026, 10, 1))
    ingest([llm_event(event_id="sep", subject="gw", time=iso(utc(2026, 9, 20)))])
    item = events(api, read_token)[0]
    assert item["validationError"] == "subject gw is included by Second from 2026-10-01"


# ---------------------------------------------------------------------------------------------- concurrency


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_back_dated_adds_of_a_new_subject_cannot_overlap():
    """No row exists to lock yet: the per-subject lock still lets only one of two overlapping adds in."""
    first, second = customer("first", "First"), customer("second", "Second")
    barrier, outcomes = threading.Barrier(2), []

    def add(who, start, end):
        try:
            barrier.wait()
            attribution_add(customer=who, subject="fresh", start=start, end=end)
            outcomes.append("ok")
        except AttributionError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=add, args=(first, NOV, NOV20)),
               threading.Thread(target=add, args=(second, NOV10, DEC))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o == "ok" for o in outcomes) == [False, True], outcomes
    assert SubjectAttribution.objects.filter(subject="fresh").count() == 1


def test_usage_of_several_subjects_is_exact_with_unbounded_windows():
    air = customer()
    attribution_add(customer=air, subject="a")
    attribution_add(customer=air, subject="b", start=NOV10)
    subscription = subscription_create(customer=air, plan=token_plan(), start=NOV)
    ingest([llm_event(subject="a", tokens=1, time=iso(utc(2026, 11, 2))),
            llm_event(subject="b", tokens=10, time=iso(utc(2026, 11, 2))),
            llm_event(subject="b", tokens=100, time=iso(utc(2026, 11, 12)))])
    assert usage(subscription) == Decimal(101)
