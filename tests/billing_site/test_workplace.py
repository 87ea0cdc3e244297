"""The admin as a workplace: roles, navigation, dashboard figures, gateway connection, bounded list queries."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User

from billing_site.roles import role_permissions
from common.models import JobRun
from customers.models import Subscription
from customers.services.customers import customer_create
from customers.services.subscriptions import subscription_create
from invoicing.models import Invoice
from invoicing.services.close import close_cycles
from invoicing.services.lifecycle import invoice_mark_paid
from invoicing.services.snapshots import record_unbilled_snapshot
from metering.models import ApiToken, Meter
from tests.builders import built_once, ingest, iso, kong_air, llm_event, platform_fee, roll_up, token_plan, utc

pytestmark = pytest.mark.django_db
ROLES = ("Finance viewer", "Billing operator", "Billing admin")


def login_as(client, role: str):
    user = User.objects.create_user(role.lower().replace(" ", "-"), password="pw-123456", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    client.force_login(user)
    return user


@pytest.fixture
def world():
    plan = token_plan(extra=[platform_fee()])
    air = kong_air()
    subscription = subscription_create(customer=air, plan=plan, start=utc(2026, 10, 1))
    ingest([llm_event(tokens=1000, time=iso(utc(2026, 10, 5)))])
    close_cycles(now=utc(2026, 11, 1, 2))
    return {"plan": plan, "customer": air, "subscription": subscription, "invoice": Invoice.objects.get(cycle=1)}


def test_the_roles_exist_with_exactly_their_permissions():
    for role, wanted in role_permissions().items():
        group = Group.objects.get(name=role)
        have = {(p.content_type.app_label, p.codename) for p in group.permissions.select_related("content_type")}
        assert have == set(wanted)
    viewer, operator, admin = (set(role_permissions()[r]) for r in ROLES)
    assert viewer < operator < admin
    assert all(codename.startswith("view_") for _, codename in viewer)
    assert ("invoicing", "preview_invoice") in operator and ("invoicing", "issue_invoice") not in operator
    assert {("invoicing", "issue_invoice"), ("metering", "add_apitoken")} <= admin
    assert not any(app == "django_celery_beat" for app, _ in admin)  # the scheduler: superusers only


@pytest.mark.parametrize("role, expected", [
    ("Finance viewer", {"view_invoice": 200, "preview": 403, "plan_publish": 302, "issue": 302, "tokens": 403,
                        "connect": 302, "subscription_add": 403, "cancel": 403, "schedules": 403, "usage": 200}),
    ("Billing operator", {"view_invoice": 200, "preview": 200, "plan_publish": 200, "issue": 302, "tokens": 403,
                          "connect": 302, "subscription_add": 200, "cancel": 200, "schedules": 403, "usage": 200}),
    ("Billing admin", {"view_invoice": 200, "preview": 200, "plan_publish": 200, "issue": 200, "tokens": 200,
                       "connect": 200, "subscription_add": 200, "cancel": 200, "schedules": 403, "usage": 200}),
])
def test_each_role_reaches_only_its_actions(client, world, role, expected):
    login_as(client, role)
    invoice, plan = world["invoice"], world["plan"]
    from catalog.services.plans import plan_new_version

    draft = plan_new_version(plan=plan)
    urls = {
        "view_invoice": f"/admin/invoicing/invoice/{invoice.pk}/change/",
        "preview": f"/admin/invoicing/invoice/preview/customer/{world['customer'].pk}/",
        "plan_publish": f"/admin/catalog/plan/{draft.pk}/lifecycle/publish/",
        "issue": f"/admin/invoicing/invoice/{invoice.pk}/do/mark_paid/",
        "tokens": "/admin/metering/apitoken/",
        "connect": "/admin/metering/apitoken/connect/",
        "subscription_add": "/admin/customers/subscription/add/",
        "cancel": f"/admin/customers/subscription/{world['subscription'].pk}/cancel/",
        "schedules": "/admin/django_celery_beat/periodictask/",
        "usage": "/admin/metering/meter/usage/",
    }
    got = {name: client.get(url).status_code for name, url in urls.items()}
    assert got == expected


def test_invoice_actions_shown_per_role(client, world):
    invoice = world["invoice"]
    for role, visible in (("Finance viewer", False), ("Billing operator", False), ("Billing admin", True)):
        client.logout()
        login_as(client, role)
        page = client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").content.decode()
        assert ('id="invoice-mark_paid"' in page) is visible
        listing = client.get("/admin/invoicing/invoice/").content.decode()
        assert ('value="void_invoices"' in listing) is visible
        assert ("Close due cycles now" in listing) is visible
        customer_page = client.get(f"/admin/customers/customer/{world['customer'].pk}/change/").content.decode()
        assert ('id="preview-invoice"' in customer_page) is (role != "Finance viewer")
        posted = client.post(f"/admin/invoicing/invoice/{invoice.pk}/do/mark_paid/")
        invoice.refresh_from_db()
        assert (invoice.status == "paid") is visible and posted.status_code == 302


def test_viewer_cannot_change_anything(client, world):
    login_as(client, "Finance viewer")
    customer = world["customer"]
    response = client.post(f"/admin/customers/customer/{customer.pk}/change/", {"name": "Hacked"})
    assert response.status_code == 403
    assert client.post("/admin/metering/meter/presets/llm_tokens/").status_code == 302
    assert Meter.objects.filter(slug="llm_tokens").count() == 1  # made by the fixture, not the viewer


def test_navigation_follows_the_seed_flow(admin_client):
    page = admin_client.get("/admin/").content.decode()
    sections = ["Metering", "Product catalog", "Billing", "Settings"]
    positions = [page.index(f">{name}<") for name in sections]
    assert positions == sorted(positions)
    order = ["Events", "Meters", "Usage explorer", "Features", "Plans", "Customers", "Subscriptions", "Invoices",
             "API tokens", "Connect a gateway", "Stripe webhook events", "Periodic tasks"]
    found = [page.index(f">{name}<") for name in order]
    assert found == sorted(found)


@pytest.mark.django_db(transaction=True)
def test_dashboard_figures_against_known_data(admin_client, world):
    invoice_mark_paid(invoice=world["invoice"])
    Invoice.objects.filter(pk=world["invoice"].pk).update(sync_status="failed", sync_error="boom")
    ingest([llm_event(subject="stranger", time=None), {"specversion": "1.0", "id": "x1", "source": "s",
                                                       "type": "custom.unmetered", "subject": "kong-air"}])

    roll_up()
    record_unbilled_snapshot()
    JobRun.objects.create(kind="heartbeat", status="succeeded")
    from django.utils import timezone

    now = timezone.now()
    Invoice.objects.update(issued_at=now)  # the close ran "in November 2026"; make them this month's
    page = admin_client.get("/admin/").content.decode()
    this_month = page[page.index('id="card-billed-this-month"'):page.index('id="card-billed-last-month"')]
    # opening invoice 49.00 + cycle 1: 1000 tokens × 0.00002 = 0.02 and the next fee 49.00
    assert "$98.02" in this_month and "2 invoice(s)" in this_month
    last_month = page[page.index('id="card-billed-last-month"'):page.index('id="card-unbilled"')]
    assert ">$0.00</a>" in last_month and "0 invoice(s)" in last_month  # the zero of the currency in use
    assert 'href="/admin/invoicing/invoice/?status__exact=paid">Paid: 1</a>' in page
    assert 'href="/admin/invoicing/invoice/?sync_status__exact=failed"' in page
    failures = page[page.index('id="card-sync-failures"'):page.index('id="card-sync-failures"') + 400]
    assert '<div class="figure alert">1</div>' in failures
    unattributed = page[page.index('id="card-unattributed"'):page.index('id="card-unattributed"') + 400]
    assert '<div class="figure alert">1</div>' in unattributed  # "stranger"
    unmetered = page[page.index('id="card-unmetered"'):page.index('id="card-unmetered"') + 400]
    assert '<div class="figure alert">1</div>' in unmetered
    unbilled = page[page.index('id="card-unbilled"'):page.index('id="card-unbilled"') + 400]
    assert "$" in unbilled
    assert "heartbeat</a>: succeeded" in page


@pytest.fixture(scope="class")
def thirty_customers(django_db_setup, django_db_blocker):
    """30 customers on one plan with usage, closed: 60 invoices. Built once for the class; the tests only read."""
    with built_once(django_db_blocker):
        plan = token_plan(extra=[platform_fee()])
        for n in range(30):
            customer = customer_create(key=f"c{n}", name=f"C{n}", currency="USD", subjects=[f"s{n}"])
            subscription_create(customer=customer, plan=plan, start=utc(2026, 10, 1))
            ingest([llm_event(subject=f"s{n}", tokens=n + 1, time=iso(utc(2026, 10, 3)))])
        close_cycles(now=utc(2026, 11, 1, 2))
        yield


@pytest.mark.usefixtures("thirty_customers")
class TestListPagesWithThirtyCustomers:
    @pytest.mark.parametrize("url", [
        "/admin/metering/event/", "/admin/metering/meter/", "/admin/catalog/plan/", "/admin/catalog/feature/",
        "/admin/customers/customer/", "/admin/customers/subscription/", "/admin/invoicing/invoice/",
        "/admin/customers/unbilledsubject/", "/admin/common/jobrun/", "/admin/",
        "/admin/metering/eventtypeactivity/", "/admin/metering/subjectactivity/", "/admin/customers/kongconsumer/",
        "/admin/metering/apitoken/", "/admin/invoicing/stripewebhookevent/",
    ])
    def test_list_pages_run_a_bounded_number_of_queries(self, admin_client, url, django_assert_max_num_queries):
        assert Invoice.objects.count() == 60 and Subscription.objects.count() == 30
        with django_assert_max_num_queries(25):
            assert admin_client.get(url).status_code == 200


def test_connect_a_gateway_creates_a_token_and_shows_the_plugin_configuration(admin_client):
    form = admin_client.get("/admin/metering/apitoken/connect/").content.decode()
    assert 'id="connect-gateway"' in form
    page = admin_client.post("/admin/metering/apitoken/connect/", {
        "name": "kong-prod", "public_url": "https://billing.example.com", "meter_ai_token_usage": "on",
        "meter_api_requests": "on"}).content.decode()
    token = ApiToken.objects.get(name="kong-prod")
    assert token.scopes == ["ingest"]
    assert ("<code>llm_tokens</code> comes with <code>llm_cache_read_tokens</code>, "
            "<code>llm_cache_write_tokens</code>, <code>llm_reasoning_tokens</code>") in page
    for expected in ("name: metering-and-billing", "ingest_endpoint: https://billing.example.com/api/v3/openmeter/events",
                     "meter_ai_token_usage: true", "meter_api_requests: true", "look_up_value_in: consumer",
                     "curl -i -X POST http://localhost:8001/plugins/", token.prefix):
        assert expected in page
    assert set(Meter.objects.values_list("slug", flat=True)) == {  # llm_tokens comes with its companion meters
        "llm_tokens", "llm_cache_read_tokens", "llm_cache_write_tokens", "llm_reasoning_tokens", "api_requests"}
    bad = admin_client.post("/admin/metering/apitoken/connect/", {"name": "", "public_url": "not a url"})
    assert {"name", "public_url"} <= set(bad.context["form"].errors)


def test_stripe_settings_page_says_sandbox(admin_client):
    page = admin_client.get("/admin/invoicing/stripewebhookevent/").content.decode()
    assert "Sandbox mode" in page and "/stripe/webhooks" in page
