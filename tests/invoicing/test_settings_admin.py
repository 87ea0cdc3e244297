"""Settings → Company and Settings → Stripe in the admin: validated forms, singletons, encrypted keys (environment
wins), Test connection against the fake Stripe server, permissions and CSRF; and simulate_gateway's default URL."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client

from billing_site.roles import role_permissions
from invoicing.models import LOGO_MAX_BYTES, CompanyProfile, StripeSettings
from invoicing.selectors.settings import stored_stripe_keys, stripe_status
from invoicing.services.settings import stripe_keys_update
from invoicing.stripe_gateway import StripeConfig, is_sandbox, key_mode
from tests.builders.settings import ACME, tiny_jpeg, tiny_png

COMPANY_URL = "/admin/invoicing/companyprofile/1/change/"
STRIPE_URL = "/admin/invoicing/stripesettings/1/change/"
TEST_URL = "/admin/invoicing/stripesettings/test-connection/"
KEY = "sk_test_" + "a1b2c3d4e5f6g7h8i9j0" + "WXYZ"
SECRET = "whsec_" + "q" * 24 + "S3CR"


def company_post(client: Client, **changes):
    data = {**ACME, **changes}
    return client.post(COMPANY_URL, {k: v for k, v in data.items() if v is not None})


def form_errors(response) -> dict:
    form = response.context["adminform"].form
    return form.errors


@pytest.fixture
def role_client(db):
    def make(role: str) -> Client:
        from django.contrib.auth.models import Permission

        group, _ = Group.objects.get_or_create(name=role)
        group.permissions.set([Permission.objects.get(content_type__app_label=app, codename=codename)
                               for app, codename in role_permissions()[role]])
        user = User.objects.create_user(role.lower().replace(" ", "-"), password="pw-123456", is_staff=True)
        user.groups.add(group)
        client = Client()
        client.force_login(user)
        return client
    return make


# --- Settings → Company ----------------------------------------------------------------------------------------

def test_company_list_opens_the_one_page_and_saves(admin_client):
    assert admin_client.get("/admin/invoicing/companyprofile/").url == COMPANY_URL
    assert admin_client.get(COMPANY_URL).status_code == 200  # before anything is stored
    response = company_post(admin_client, logo_upload=SimpleUploadedFile("logo.png", tiny_png(), "image/png"),
                            locale="de-DE", country="us")
    assert response.status_code == 302, form_errors(response)
    company = CompanyProfile.objects.get()
    assert (company.pk, company.legal_name, company.locale, company.country) == (1, "Acme Billing Inc.", "de_DE", "US")
    assert company.logo is not None and bytes(company.logo).startswith(b"\x89PNG")
    assert company.logo_content_type == "image/png"
    page = admin_client.get(COMPANY_URL).content.decode()
    assert 'src="data:image/png;base64,' in page
    # Saving again without a file keeps the logo; a JPEG replaces it; "remove" removes it.
    assert company_post(admin_client).status_code == 302
    assert CompanyProfile.objects.get().logo_content_type == "image/png"
    company_post(admin_client, logo_upload=SimpleUploadedFile("x.jpg", tiny_jpeg(), "image/jpeg"))
    assert CompanyProfile.objects.get().logo_content_type == "image/jpeg"
    company_post(admin_client, remove_logo="on")
    assert CompanyProfile.objects.get().logo is None
    assert admin_client.get("/admin/invoicing/companyprofile/add/").status_code == 403
    assert admin_client.post("/admin/invoicing/companyprofile/1/delete/").status_code == 403
    assert CompanyProfile.objects.count() == 1
    assert admin_client.get("/admin/invoicing/companyprofile/2/change/").status_code == 302  # no such row


@pytest.mark.parametrize(("field", "value"), [
    ("locale", "xx_YY"),
    ("locale", "../../etc/passwd"),
    ("locale", ""),
    ("country", "XX"),
    ("country", "USA"),
    ("country", "Ü1"),
    ("legal_name", "Acme\x00Inc"),
    ("payment_instructions", "IBAN\x00"),
    ("legal_name", "x" * 201),
    ("email", "not an email"),
    ("logo_upload", SimpleUploadedFile("logo.png", b"GIF89a not a png", "image/png")),
    ("logo_upload", SimpleUploadedFile("logo.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, "image/png")),
    ("logo_upload", SimpleUploadedFile("logo.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml")),
    ("logo_upload", SimpleUploadedFile("big.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * LOGO_MAX_BYTES, "image/png")),
    ("logo_upload", SimpleUploadedFile("huge.png", tiny_png((5000, 10)), "image/png")),
    ("logo_upload", SimpleUploadedFile("png.jpg", tiny_png()[:8] + tiny_jpeg()[8:], "image/jpeg")),
])
def test_company_form_refuses_bad_values_and_stores_nothing(admin_client, field, value):
    response = company_post(admin_client, **{field: value})
    assert response.status_code == 200
    assert field in form_errors(response)
    assert not CompanyProfile.objects.exists()


def test_company_page_is_for_billing_admins(role_client):
    for role in ("Finance viewer", "Billing operator"):
        client = role_client(role)
        assert client.get(COMPANY_URL).status_code == 403
        assert company_post(client).status_code == 403
    assert not CompanyProfile.objects.exists()
    assert company_post(role_client("Billing admin")).status_code == 302


# --- Settings → Stripe -----------------------------------------------------------------------------------------

def test_stripe_page_in_sandbox_says_what_to_do(admin_client, settings):
    settings.STRIPE_API_KEY = settings.STRIPE_WEBHOOK_SECRET = ""
    assert admin_client.get("/admin/invoicing/stripesettings/").url == STRIPE_URL
    page = admin_client.get(STRIPE_URL).content.decode()
    assert "Sandbox" in page and "http://testserver/stripe/webhooks" in page and "invoice.paid" in page
    assert "webhooks are refused until you add one" in page and "none received yet" in page
    events = admin_client.get("/admin/invoicing/stripewebhookevent/").content.decode()
    assert "every webhook is refused" not in events and STRIPE_URL in events and "whsec_" in events


def test_keys_entered_are_stored_encrypted_and_never_shown(admin_client, settings):
    settings.STRIPE_API_KEY = settings.STRIPE_WEBHOOK_SECRET = ""
    response = admin_client.post(STRIPE_URL, {"api_key": KEY, "webhook_secret": SECRET})
    assert response.status_code == 302
    row = StripeSettings.objects.get()
    assert KEY not in row.api_key_encrypted and SECRET not in row.webhook_secret_encrypted
    assert (row.api_key_last4, row.webhook_secret_last4, row.updated_by) == ("WXYZ", "S3CR", "admin")
    page = admin_client.get(STRIPE_URL).content.decode()
    assert KEY not in page and SECRET not in page and "a1b2c3" not in page
    assert "…WXYZ" in page and "…S3CR" in page and "Test</strong>" in page
    assert StripeConfig.from_settings().api_key == KEY and not is_sandbox()
    assert StripeConfig.from_settings().webhook_secret == SECRET
    # Leaving the fields empty keeps them; "remove" removes them.
    admin_client.post(STRIPE_URL, {"api_key": "", "webhook_secret": ""})
    assert stored_stripe_keys() == (KEY, SECRET)
    admin_client.post(STRIPE_URL, {"clear_api_key": "on", "clear_webhook_secret": "on"})
    assert stored_stripe_keys() == ("", "") and is_sandbox()


def test_environment_wins_over_stored_keys(settings, db):
    stripe_keys_update(api_key=KEY, webhook_secret=SECRET)
    settings.STRIPE_API_KEY = "sk_live_" + "e" * 20 + "LIVE"
    settings.STRIPE_WEBHOOK_SECRET = ""
    config = StripeConfig.from_settings()
    assert config.api_key == settings.STRIPE_API_KEY and config.webhook_secret == SECRET
    status = stripe_status()
    assert (status.mode, status.api_key.source, status.api_key.last4) == ("live", "environment", "LIVE")
    assert status.webhook_secret.source == "stored"


def test_stored_keys_unreadable_after_a_key_change(settings, admin_client):
    settings.STRIPE_API_KEY = settings.STRIPE_WEBHOOK_SECRET = ""
    settings.FIELD_ENCRYPTION_KEY = "first key"
    stripe_keys_update(api_key=KEY)
    settings.FIELD_ENCRYPTION_KEY = "second key"
    stripe_keys_update()  # forgets the cached keys
    assert stored_stripe_keys() == ("", "") and is_sandbox()
    page = admin_client.get(STRIPE_URL).content.decode()
    assert "cannot be decrypted" in page and "Sandbox" in page


@pytest.mark.parametrize(("data", "field"), [
    ({"api_key": "pk_test_abcdefghijklmnop"}, "api_key"),
    ({"api_key": "sk_test_short"}, "api_key"),
    ({"api_key": "sk_test_abcdefgh\x00ijkl"}, "api_key"),
    ({"api_key": "sk_test_abc defghijklmnop"}, "api_key"),
    ({"api_key": "sk_test_" + "a" * 300}, "api_key"),
    ({"webhook_secret": "secret"}, "webhook_secret"),
    ({"webhook_secret": "whsec_\x00abcdefghij"}, "webhook_secret"),
])
def test_stripe_form_refuses_bad_keys(admin_client, settings, data, field):
    settings.STRIPE_API_KEY = settings.STRIPE_WEBHOOK_SECRET = ""
    response = admin_client.post(STRIPE_URL, data)
    assert response.status_code == 200 and field in response.context["form"].errors
    assert not StripeSettings.objects.exists()


def test_key_modes():
    assert [key_mode(k) for k in ("", " ", "sk_test_x", "rk_test_x", "sk_live_x", "rk_live_x")] == [
        "sandbox", "sandbox", "test", "test", "live", "live"]


def test_test_connection_against_the_fake_stripe(admin_client, settings, fake_stripe):
    settings.STRIPE_API_KEY = settings.STRIPE_WEBHOOK_SECRET = ""
    settings.STRIPE_API_BASE = fake_stripe.url
    admin_client.post(STRIPE_URL, {"api_key": fake_stripe.api_key})
    response = admin_client.post(TEST_URL, follow=True)
    page = response.content.decode()
    assert f"Connected to Fake Stripe account ({fake_stripe.account_id}, US)" in page
    assert StripeSettings.objects.get().test_result.startswith("OK: Connected")
    assert fake_stripe.requests_to("GET", r"^/v1/account$")
    # A key Stripe refuses: the verdict says so.
    admin_client.post(STRIPE_URL, {"api_key": "sk_test_" + "z" * 24})
    page = admin_client.post(TEST_URL, follow=True).content.decode()
    assert "Stripe refused: Invalid API Key" in page
    assert StripeSettings.objects.get().test_result.startswith("Failed: Stripe refused")


def test_test_connection_in_sandbox_and_by_get(admin_client, settings):
    settings.STRIPE_API_KEY = ""
    assert admin_client.get(TEST_URL).status_code == 405
    page = admin_client.post(TEST_URL, follow=True).content.decode()
    assert "sandbox mode, nothing to test" in page


def test_stripe_settings_need_csrf_and_the_billing_admin_role(role_client, settings):
    settings.STRIPE_API_KEY = ""
    for role in ("Finance viewer", "Billing operator"):
        client = role_client(role)
        assert client.get(STRIPE_URL).status_code == 403
        assert client.post(STRIPE_URL, {"api_key": KEY}).status_code == 403
        assert client.post(TEST_URL).status_code == 403
    assert not StripeSettings.objects.exists()
    admin = role_client("Billing admin")
    assert admin.get(STRIPE_URL).status_code == 200
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(User.objects.get(username="billing-admin"))
    assert strict.post(STRIPE_URL, {"api_key": KEY}).status_code == 403
    assert strict.post(TEST_URL).status_code == 403
    assert not StripeSettings.objects.exists()


def test_last_webhook_and_its_verdict_are_shown(admin_client):
    from invoicing.models import StripeWebhookEvent

    StripeWebhookEvent.objects.create(event_id="evt_1", type="invoice.paid", payload={}, outcome="no matching invoice")
    page = admin_client.get(STRIPE_URL).content.decode()
    assert "invoice.paid" in page and "no matching invoice" in page


# --- simulate_gateway -----------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_simulate_gateway_posts_to_the_port_make_run_uses(live_server, monkeypatch, ingest_token):
    port = live_server.url.rsplit(":", 1)[1]
    monkeypatch.setenv("PORT", port)
    out = io.StringIO()
    call_command("simulate_gateway", "--consumer", "kong-air", "--token", ingest_token, stdout=out)
    assert f"to http://127.0.0.1:{port}: HTTP 202" in out.getvalue()
