"""The admin in one shape: one confirmation page for every dangerous action, refusals as form errors (never a 500,
never beside a success), read-only pages for records nobody edits, each model registered once by its own app with
higher apps' additions through the extension registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import RequestFactory

from catalog.models import Feature
from catalog.services.plans import plan_create
from common.admin.confirm import ConfirmActionMixin
from common.models import JobRun
from customers.models import Customer, KongConsumer, SubjectAttribution
from customers.services.customers import attribution_add, customer_create
from invoicing.models import CreditNote, CycleClose, Invoice
from invoicing.services.lifecycle import invoice_mark_paid
from metering.models import Event, Meter
from tests.billing_site import test_workplace
from tests.builders import ingest, llm_event, tokens_meter

pytestmark = pytest.mark.django_db
world = test_workplace.world  # the workplace's plan, customer, subscription and two issued invoices
login_as = test_workplace.login_as  # a staff user in one of the roles
TEMPLATES = Path(__file__).resolve().parents[2] / "templates" / "admin"
CONFIRM_TEMPLATE = "admin/confirm_action.html"


def shown(response) -> list[tuple[str, str]]:
    return [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def invoices(world):
    """The world's two issued invoices (its opening cycle and cycle 1), in cycle order."""
    found = list(Invoice.objects.order_by("cycle"))
    assert [i.status for i in found] == ["issued", "issued"]
    return found


# --- one confirmation page ----------------------------------------------------------------------------------


def test_the_only_confirmation_template_is_confirm_action():
    confirmations = sorted(str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*.html")
                           if "confirm" in p.name or p.name in ("cancel.html", "change_plan.html", "import.html",
                                                                "credit_note.html", "include_subjects.html"))
    assert confirmations == ["confirm_action.html"]


def test_every_confirmation_page_is_the_one_template(admin_client, world, invoices):
    invoice, subscription, customer = invoices[1], world["subscription"], world["customer"]
    draft = plan_create(key="draft", name="Draft", currency="USD")  # no rate card: cannot be published
    token = admin_client.post("/admin/metering/apitoken/add/", {"name": "t", "scopes": ["ingest"]})
    assert token.status_code == 200
    pages = {
        f"/admin/invoicing/invoice/{invoice.pk}/do/mark_paid/": 'id="confirm-mark_paid"',
        f"/admin/invoicing/invoice/{invoice.pk}/credit-note/": 'id="confirm-credit-note"',
        "/admin/invoicing/invoice/close/": 'id="confirm-close"',
        f"/admin/catalog/plan/{draft.pk}/lifecycle/publish/": "This draft cannot be published yet:",
        f"/admin/catalog/plan/{world['plan'].pk}/lifecycle/new_version/": 'id="confirm-new_version"',
        f"/admin/customers/subscription/{subscription.pk}/cancel/": 'id="confirm-cancel"',
        f"/admin/customers/subscription/{subscription.pk}/change-plan/": 'id="review-change"',
        f"/admin/customers/subscription/add/?customer={customer.pk}": 'id="review-subscription"',
        "/admin/customers/kongconsumer/import/": 'id="confirm-import"',
    }
    for url, marker in pages.items():
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert [t.name for t in response.templates][0] == CONFIRM_TEMPLATE, url
        assert marker in response.content.decode(), url
    meter = Meter.objects.get(slug="llm_tokens")
    bulk = {
        "/admin/invoicing/invoice/": ("void_invoices", invoice.pk, "Void 1 invoice(s)?"),
        "/admin/catalog/plan/": ("archive_plans", world["plan"].pk, "Archive plans?"),
        "/admin/metering/meter/": ("rebuild_usage", meter.pk, "Rebuild usage from raw events?"),
        "/admin/metering/apitoken/": ("revoke_tokens", token.context["token"].pk, "Revoke these API tokens?"),
    }
    for url, (action, pk, title) in bulk.items():
        response = admin_client.post(url, {"action": action, "_selected_action": [pk]})
        assert [t.name for t in response.templates][0] == CONFIRM_TEMPLATE, url
        page = response.content.decode()
        assert title in page and f'name="action" value="{action}"' in page and 'name="confirmed" value="yes"' in page


# --- refusals -----------------------------------------------------------------------------------------------


def test_a_refused_action_is_a_form_error_on_its_page_and_nothing_else(admin_client, invoices):
    invoice = invoices[1]
    invoice_mark_paid(invoice=invoice)
    url = f"/admin/invoicing/invoice/{invoice.pk}/do/mark_uncollectible/"
    response = admin_client.post(url)
    assert response.status_code == 200
    assert response.templates[0].name == CONFIRM_TEMPLATE
    assert response.context["form"].non_field_errors()
    assert shown(response) == []  # neither a success nor a second copy of the error
    invoice.refresh_from_db()
    assert invoice.status == "paid"


def test_a_bulk_action_with_refused_rows_reports_each_and_no_success(admin_client, invoices):
    first, second = invoices
    invoice_mark_paid(invoice=first)
    response = admin_client.post("/admin/invoicing/invoice/", {
        "action": "mark_paid", "_selected_action": [first.pk, second.pk], "confirmed": "yes"}, follow=True)
    assert response.status_code == 200
    messages = shown(response)
    assert [level for level, _ in messages] == ["error", "warning"]
    assert messages[0][1].startswith(f"{first}: ")
    assert messages[1][1] == "Mark paid: 1 invoice(s). 1 refused (above)."
    second.refresh_from_db()
    assert second.status == "paid"


def test_hostile_input_on_confirmation_pages(admin_client, world, invoices):
    invoice, subscription = invoices[1], world["subscription"]
    assert admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/do/explode/").status_code == 404
    assert admin_client.post(f"/admin/invoicing/invoice/{invoice.pk}/do/credit-note/").status_code == 404
    assert admin_client.get("/admin/invoicing/invoice/999999/do/void/").status_code == 404
    url = f"/admin/invoicing/invoice/{invoice.pk}/credit-note/"
    for data in ({"amount": "1\x00", "reason": "x"}, {"amount": "1.00", "reason": "bad\x00reason"},
                 {"amount": "1e3", "reason": "x"}, {"amount": "9" * 40, "reason": "x"}):
        response = admin_client.post(url, data)
        assert response.status_code == 200 and response.context["form"].errors, data
    assert not CreditNote.objects.filter(invoice=invoice).exists()
    response = admin_client.post(f"/admin/customers/subscription/{subscription.pk}/cancel/",
                                 {"when": "someday", "confirmed": "yes"})
    assert response.status_code == 200 and "when" in response.context["form"].errors
    subscription.refresh_from_db()
    assert subscription.cancel_at is None
    consumer = KongConsumer.objects.create(kong_id="k1", username="u1")
    for customer in ("x\x00", "999999", ""):
        response = admin_client.post("/admin/customers/kongconsumer/", {
            "action": "include_in_customer", "_selected_action": [consumer.pk], "customer": customer})
        assert response.status_code == 200 and "customer" in response.context["form"].errors
    assert not SubjectAttribution.objects.filter(kong_consumer=consumer).exists()


def test_a_customer_refused_at_save_is_a_form_error(admin_client, monkeypatch):
    from customers import forms

    monkeypatch.setattr(forms, "customer_problems", lambda values: {})  # the form's check, skipped: a race
    response = admin_client.post("/admin/customers/customer/add/", {
        "key": "x", "name": "X", "currency": "XYZ", "collection_method": "charge_automatically", "metadata": "{}",
        "attributions-TOTAL_FORMS": "0", "attributions-INITIAL_FORMS": "0",
        "subscriptions-TOTAL_FORMS": "0", "subscriptions-INITIAL_FORMS": "0"})
    assert response.status_code == 200
    assert "currency" in response.context["adminform"].form.errors
    assert shown(response) == []
    assert not Customer.objects.exists() and not LogEntry.objects.exists()


def test_subjects_refused_at_save_are_a_form_error_and_nothing_is_saved(admin_client, monkeypatch):
    from customers import forms

    air = customer_create(key="kong-air", name="Kong Air", currency="USD")
    attribution_add(customer=air, subject="kong-air")
    other = customer_create(key="other", name="Other", currency="USD")
    monkeypatch.setattr(forms, "attribution_changes_problems", lambda *, customer, changes, lock: [{} for _ in changes])
    response = admin_client.post(f"/admin/customers/customer/{other.pk}/change/", {
        "name": "Renamed", "email": "", "currency": "USD", "collection_method": "charge_automatically",
        "metadata": "{}", "days_until_due": "", "attributions-TOTAL_FORMS": "1", "attributions-INITIAL_FORMS": "0",
        "attributions-0-subject": "kong-air", "subscriptions-TOTAL_FORMS": "0", "subscriptions-INITIAL_FORMS": "0"})
    assert response.status_code == 200
    assert "belongs to Kong Air" in str(response.context["adminform"].form.non_field_errors())
    assert shown(response) == []
    other.refresh_from_db()
    assert other.name == "Other"  # the customer's own fields were rolled back with the refused subjects
    assert list(SubjectAttribution.objects.values_list("customer__key", flat=True)) == ["kong-air"]
    assert not LogEntry.objects.exists()


def test_a_feature_refused_at_save_is_a_form_error(admin_client, monkeypatch):
    from catalog import forms

    meter = tokens_meter()
    monkeypatch.setattr(forms, "feature_filter_problems", lambda filters, group_by: [])
    response = admin_client.post("/admin/catalog/feature/add/", {
        "key": "ai-token", "name": "ai-token", "meter": meter.pk, "meter_group_by_filters": '{"colour": "red"}'})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert shown(response) == [] and not Feature.objects.exists()


# --- view-only pages ------------------------------------------------------------------------------------------


def test_records_nobody_edits_are_read_only_pages(admin_client, world, invoices):
    invoice, subscription = invoices[1], world["subscription"]
    token = admin_client.post("/admin/metering/apitoken/add/", {"name": "t", "scopes": ["ingest"]}).context["token"]
    ingest([llm_event(event_id="e1", time=None)])
    pages = [f"/admin/invoicing/invoice/{invoice.pk}/change/",
             f"/admin/customers/subscription/{subscription.pk}/change/",
             f"/admin/metering/event/{Event.objects.get(event_id='e1').pk}/change/",
             f"/admin/invoicing/cycleclose/{CycleClose.objects.filter(invoice=invoice).get().pk}/change/",
             f"/admin/common/jobrun/{JobRun.objects.create(kind='heartbeat').pk}/change/"]
    for url in pages:
        page = admin_client.get(url)
        assert page.status_code == 200, url
        assert 'name="_save"' not in page.content.decode(), url
        assert admin_client.post(url, {}).status_code == 403, url
    # A token's only editable field is its ingest rate limit; its name, scopes and secret never change.
    token_page = admin_client.get(f"/admin/metering/apitoken/{token.pk}/change/").content.decode()
    assert 'name="ingest_rate_limit"' in token_page
    assert not any(f'name="{field}"' in token_page for field in ("name", "scopes", "prefix"))


# --- each model once, with the extensions of the apps above -------------------------------------------------


def test_each_model_is_registered_once_by_its_own_app():
    ours = ("common", "metering", "catalog", "customers", "invoicing")
    for model, model_admin in admin.site._registry.items():
        app = model._meta.app_label
        if app in ours:
            assert type(model_admin).__module__.startswith(f"{app}.admin."), (model, type(model_admin))


def test_higher_apps_extend_the_event_explorer_and_the_customer_page(client, world, invoices):
    event_admin = admin.site._registry[Event]
    request = RequestFactory().get("/admin/metering/event/")
    request.user = User.objects.create_superuser("root", password="pw-123456")
    names = [c if isinstance(c, str) else c.__name__ for c in event_admin.get_list_display(request)]
    assert names[:5] == ["time", "type", "subject", "customer", "billed_on"]
    customer = world["customer"]
    login_as(client, "Finance viewer")
    page = client.get(f"/admin/customers/customer/{customer.pk}/change/").content.decode()
    assert "past invoices" in page.lower() and "preview of this period" not in page  # the preview needs its right
    client.logout()
    login_as(client, "Billing operator")
    page = client.get(f"/admin/customers/customer/{customer.pk}/change/").content.decode()
    assert 'id="customer-preview"' in page and 'id="preview-invoice"' in page


def test_actions_are_offered_only_to_whom_may_run_them(client, world, invoices):
    invoice = invoices[1]
    login_as(client, "Finance viewer")
    assert client.get("/admin/customers/kongconsumer/import/").status_code == 403
    assert client.get(f"/admin/customers/subscription/{world['subscription'].pk}/change-plan/").status_code == 403
    client.logout()
    login_as(client, "Billing operator")
    page = client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").content.decode()
    assert 'id="invoice-void"' not in page and 'id="invoice-credit-note"' not in page
    listing = client.get("/admin/invoicing/invoice/").content.decode()
    assert 'value="void_invoices"' not in listing and 'value="export_csv"' in listing
    response = client.post("/admin/invoicing/invoice/", {"action": "void_invoices", "_selected_action": [invoice.pk],
                                                         "confirmed": "yes"}, follow=True)
    assert shown(response) == [("warning", "No action selected.")]  # not an action of this role
    invoice.refresh_from_db()
    assert invoice.status == "issued"


def test_confirm_admins_declare_their_actions():
    for model_admin in admin.site._registry.values():
        if isinstance(model_admin, ConfirmActionMixin):
            names = [action.name for action in model_admin.confirm_actions]
            assert names and len(names) == len(set(names)), type(model_admin)
