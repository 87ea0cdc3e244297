"""The finance workplace (issue 16): the dashboard's money per currency against hand-computed figures, its charts
and links; event problems counted per event; the menu each role sees; breadcrumbs like the menu; human labels
for cycles and actors; money formatted with Babel."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from common.money import format_money
from common.time import actor_label, period_label
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice
from invoicing.selectors.dashboard import billed_by_month, top_customers
from metering.services.meters import meter_create
from tests.builders import customer, ingest, llm_event, roll_up, token_plan, tokens_meter

pytestmark = pytest.mark.django_db
ROLES = ("Finance viewer", "Billing operator", "Billing admin")
BEAT_MODELS = ("Periodic tasks", "Clocked", "Crontabs", "Intervals", "Solar events")


def login_as(client, role: str) -> User:
    user = User.objects.create_user(role.lower().replace(" ", "-"), password="pw-123456", is_staff=True,
                                    first_name="Fran", last_name="Finance")
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    return user


def _month_start(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@pytest.fixture
def books():
    """Invoices in three currencies, at hand-picked times, in every status."""
    now = timezone.now()
    this_month = _month_start(now)
    last_month = _month_start(this_month - dt.timedelta(days=1))
    thirteen_ago = this_month
    for _ in range(13):
        thirteen_ago = _month_start(thirteen_ago - dt.timedelta(days=1))
    recent = max(this_month, now - dt.timedelta(seconds=5))
    plans = {currency: token_plan(key=f"plan-{currency.lower()}", currency=currency)
             for currency in ("USD", "EUR", "JPY")}
    people = {}
    subscriptions = {}
    for key, currency in (("acme", "USD"), ("bolt", "USD"), ("cirrus", "EUR"), ("jinja", "JPY")):
        people[key] = customer(key, currency=currency)
        subscriptions[key] = subscription_create(customer=people[key], plan=plans[currency],
                                                 start=thirteen_ago - dt.timedelta(days=40))
    cycles = iter(range(1, 100))

    def invoice(who: str, total: int, status: str, issued_at: dt.datetime | None) -> Invoice:
        person = people[who]
        return Invoice.objects.create(customer=person, subscription=subscriptions[who], cycle=next(cycles),
                                      currency=person.currency, period_start=this_month - dt.timedelta(days=30),
                                      period_end=this_month, status=status, total=total, subtotal=total,
                                      issued_at=issued_at)

    invoice("acme", 12345, "issued", recent)
    invoice("bolt", 5000, "paid", recent)
    invoice("acme", 100, "void", recent)  # void: not billed
    invoice("bolt", 999, "draft", None)  # draft: not billed
    invoice("cirrus", 7700, "uncollectible", recent)
    invoice("acme", 2000, "issued", last_month + dt.timedelta(days=2))
    invoice("jinja", 679, "paid", last_month + dt.timedelta(days=3))
    invoice("acme", 99999, "issued", thirteen_ago + dt.timedelta(days=1))  # outside the 12 months
    return {"now": now, "this_month": this_month, "last_month": last_month, "people": people}


def _card(page: str, card_id: str) -> str:
    start = page.index(f'id="{card_id}"')
    return page[start:page.index('<div class="card', start + 10)]


def test_the_dashboard_shows_each_currency_with_hand_computed_figures(admin_client, books):
    page = admin_client.get("/admin/").content.decode()
    this_month = _card(page, "card-billed-this-month")
    assert "$173.45" in this_month and "2 invoice(s)" in this_month  # 123.45 issued + 50.00 paid
    assert "€77.00" in this_month  # uncollectible is billed
    assert "¥0" in this_month and "0 invoice(s)" in this_month  # a currency in use without invoices: its zero
    last_month = _card(page, "card-billed-last-month")
    assert "$20.00" in last_month and "¥679" in last_month and "€0.00" in last_month
    assert "last 12 months: $193.45" in page  # 173.45 + 20.00; 999.99 thirteen months ago is left out
    assert "last 12 months: ¥679" in page and "last 12 months: €77.00" in page
    assert page.count('aria-label="billed per month in') == 3
    top = page[page.index('id="card-top-customers"'):]
    assert top.index("Acme") < top.index("Bolt")  # 123.45 before 50.00
    assert "$123.45" in top and "$50.00" in top and "€77.00" in top


def test_each_money_row_links_to_exactly_its_invoices(admin_client, books):
    figures = admin_client.get("/admin/").context["dashboard"]
    usd = next(row for row in figures["billed_this_month"] if row["currency"] == "USD")
    query = parse_qs(urlparse(usd["url"]).query)
    assert query["currency__exact"] == ["USD"] and query["issued"] == [f"{books['this_month']:%Y-%m}"]
    changelist = admin_client.get(usd["url"])
    assert changelist.status_code == 200
    shown = list(changelist.context["cl"].result_list)
    assert sorted(invoice.total for invoice in shown) == [5000, 12345]
    assert sum(invoice.total for invoice in shown) == usd["minor"] == 17345
    acme = next(row for row in figures["top_customers"] if row["key"] == "acme")
    shown = list(admin_client.get(acme["url"]).context["cl"].result_list)
    assert [invoice.total for invoice in shown] == [12345]


@pytest.mark.django_db(transaction=True)  # the aggregator reads committed events (PostgreSQL)
def test_problem_cards_link_to_their_filtered_lists(admin_client):
    tokens_meter()
    ingest([llm_event(time=None), {"specversion": "1.0", "id": "u1", "source": "s", "type": "custom.unmetered",
                                   "subject": "kong-air"}])
    roll_up()
    figures = admin_client.get("/admin/").context["dashboard"]
    listed = admin_client.get(figures["unmetered_url"]).context["cl"].result_list
    assert [row.type for row in listed] == ["custom.unmetered"]
    assert admin_client.get(figures["held_cycles_url"]).status_code == 200
    assert admin_client.get(figures["invalid_values_url"]).status_code == 200


def test_billed_by_month_has_twelve_months_per_currency(books):
    series = billed_by_month(now=books["now"])
    assert set(series) == {"USD", "EUR", "JPY"}
    assert all(len(points) == 12 for points in series.values())
    assert series["USD"][-1] == (books["this_month"], 17345) and series["USD"][-2] == (books["last_month"], 2000)
    assert sum(total for _, total in series["USD"]) == 19345
    top = top_customers(start=books["this_month"], end=books["now"] + dt.timedelta(seconds=1), limit=1)
    assert sorted((row["key"], row["minor"]) for row in top) == [("acme", 12345), ("cirrus", 7700)]


@pytest.mark.django_db(transaction=True)  # the aggregator reads committed events (PostgreSQL)
def test_an_event_unreadable_for_two_meters_counts_once(admin_client):
    tokens_meter()
    meter_create(slug="tokens_again", name="Tokens again", event_type="kong.llm_request", aggregation="SUM",
                 value_property="$.tokens")
    ingest([llm_event(tokens="many", time=None), llm_event(tokens=5, time=None)])
    roll_up()
    figures = admin_client.get("/admin/").context["dashboard"]
    assert figures["invalid_values"] == 1
    assert figures["invalid_values_url"].startswith("/admin/metering/event/")
    charts = figures["usage_by_day"]
    assert {item["meter"].slug for item in charts} == {"llm_tokens", "tokens_again"}
    assert all(len(item["points"]) >= 30 for item in charts)
    assert sum(value for _, value in charts[0]["points"]) == 5


@pytest.mark.parametrize("role", ROLES)
def test_finance_roles_see_billing_catalog_metering_settings_and_no_scheduler(client, role):
    login_as(client, role)
    page = client.get("/admin/").content.decode()
    for section in ("Metering", "Product catalog", "Billing"):
        assert f">{section}<" in page, section
    assert ">Operations<" not in page
    for name in BEAT_MODELS:
        assert f">{name}<" not in page, name
    assert client.get("/admin/django_celery_beat/crontabschedule/").status_code == 403


def test_superusers_find_the_scheduler_under_operations(admin_client):
    page = admin_client.get("/admin/").content.decode()
    operations = page[page.index(">Operations<"):]
    for name in BEAT_MODELS:
        assert f">{name}<" in operations, name
    settings = page[page.index(">Settings<"):page.index(">Operations<")]
    assert ">Periodic tasks<" not in settings


def test_breadcrumbs_read_like_the_menu(admin_client, books):
    acme = books["people"]["acme"]
    for url, crumb in (("/admin/customers/customer/", "Billing"), (f"/admin/customers/customer/{acme.pk}/change/",
                       "Billing"), ("/admin/invoicing/invoice/", "Billing"), ("/admin/metering/apitoken/", "Settings"),
                       ("/admin/catalog/plan/", "Product catalog"), ("/admin/common/jobrun/", "Settings")):
        page = admin_client.get(url).content.decode()
        crumbs = page[page.index('<div class="breadcrumbs">'):]
        crumbs = crumbs[:crumbs.index("</div>")]
        assert f">{crumb}</a>" in crumbs, (url, crumbs)
        assert "Billing —" not in crumbs


def test_invoices_show_their_cycle_as_a_period_and_the_person_who_acted(client, books):
    user = login_as(client, "Billing admin")
    invoice = Invoice.objects.filter(status="issued").order_by("pk")[0]
    invoice.period_start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    invoice.period_end = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    invoice.save()
    client.post(f"/admin/invoicing/invoice/{invoice.pk}/do/mark_paid/", {"confirmed": "yes"})
    invoice.log.create(action="issued", actor_label="scheduled close")
    page = client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").content.decode()
    assert "Nov 1 – Nov 30, 2026" in page and "Boundary k" not in page
    log = page[page.lower().index("log (who did what, when)"):]
    assert user.get_full_name() == "Fran Finance" and "Fran Finance" in log
    assert "scheduled close" in log


@pytest.mark.parametrize("start, end, text", [
    ((2026, 11, 1), (2026, 12, 1), "Nov 1 – Nov 30, 2026"),
    ((2026, 12, 1), (2027, 1, 1), "Dec 1 – Dec 31, 2026"),
    ((2026, 12, 15), (2027, 1, 15), "Dec 15, 2026 – Jan 14, 2027"),
    ((2026, 2, 1), (2026, 2, 2), "Feb 1, 2026"),
    ((2028, 2, 1), (2028, 3, 1), "Feb 1 – Feb 29, 2028"),
])
def test_period_labels_are_inclusive(start, end, text):
    begin, until = (dt.datetime(y, m, d, tzinfo=dt.UTC) for y, m, d in (start, end))
    assert period_label(begin, until) == text


def test_actor_labels():
    assert actor_label("beat") == "scheduled close"
    assert actor_label("scheduled close") == "scheduled close"
    assert actor_label("fran", full_name="Fran Finance", username="fran") == "Fran Finance"
    assert actor_label("fran", full_name=" ", username="fran") == "fran"
    assert actor_label("stripe") == "stripe"


@pytest.mark.parametrize("minor, currency, locale, text", [
    (7200, "USD", "en_US", "$72.00"), (679, "JPY", "en_US", "¥679"), (6786, "KWD", "en_US", "KWD\u00a06.786"),
    (-5, "EUR", "en_US", "-€0.05"), (123456, "EUR", "de_DE", "1.234,56\u00a0€"), (100, "XYZ", "en_US", "1.00 XYZ"),
    (0, "USD", "not_a_locale", "$0.00"),
])
def test_format_money(minor, currency, locale, text):
    assert format_money(minor, currency, locale) == text


@pytest.mark.parametrize("bad", [1.5, "100", None, True])
def test_format_money_takes_minor_units_only(bad):
    with pytest.raises(TypeError):
        format_money(bad, "USD")
