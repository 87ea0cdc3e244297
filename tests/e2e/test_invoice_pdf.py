"""The documents customers receive, in a real browser, by a Billing admin: Settings → Company filled in through its
form (with a logo), Settings → Stripe looked at, then an issued invoice's printable page and its PDF downloaded
from the invoice page; the PDF's text is checked.

Screenshots of the Company and Stripe settings, the printable invoice and the PDF's first page (rendered with
pypdfium2) go to docs/screenshots/ with UPDATE_SCREENSHOTS=1 (a temporary folder otherwise), as in
test_seed_tutorial.py, whose way of starting the server and the browser this test follows: the database is
touched only before the browser starts and after it stops.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from pypdf import PdfReader

from invoicing.models import CompanyProfile
from invoicing.services.close import close_cycles
from tests.builders.invoicing import AFTER_NOV, subscribe_with_november_usage, the_invoice
from tests.builders.settings import ACME, tiny_png
from tests.e2e.test_seed_tutorial import (
    CHROMIUM,
    DOCS_SCREENSHOTS,
    LAUNCH_ARGS,
    PASSWORD,
    RECORD_CSP_VIOLATIONS,
    VIEWPORT,
    billing_admin,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)"),
]


def render_first_page(pdf: bytes, target: Path) -> None:
    import pypdfium2

    document = pypdfium2.PdfDocument(pdf)
    try:
        document[0].render(scale=1.5).to_pil().save(target)
    finally:
        document.close()


@pytest.mark.django_db(transaction=True)  # the live server thread must see what each request commits
def test_a_billing_admin_sets_up_the_company_and_downloads_an_invoice_pdf(live_server, settings, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    settings.STRIPE_API_KEY = settings.STRIPE_WEBHOOK_SECRET = ""  # sandbox
    billing_admin()
    subscribe_with_november_usage()
    close_cycles(now=AFTER_NOV)
    invoice = the_invoice(1)
    number = invoice.number
    logo = tmp_path / "logo.png"
    logo.write_bytes(tiny_png((120, 40)))
    screenshots = DOCS_SCREENSHOTS if os.environ.get("UPDATE_SCREENSHOTS") else tmp_path / "screenshots"
    screenshots.mkdir(parents=True, exist_ok=True)
    base = live_server.url
    pdf_bytes = b""

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
            context.add_init_script(RECORD_CSP_VIOLATIONS)
            page = context.new_page()
            page.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)
            server_errors: list[str] = []
            page.on("response", lambda r: server_errors.append(f"{r.url} → {r.status}") if r.status >= 500 else None)

            def visit(path: str) -> None:
                response = page.goto(base + path)
                assert response is not None and response.status < 400, f"GET {path}"

            def no_csp_violations() -> None:
                assert page.evaluate("window.__cspViolations || []") == []

            visit("/admin/")
            page.fill("#id_username", "finance")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            expect(page.locator("#content h1")).to_have_text("Dashboard")

            # Settings → Company: the seller on every invoice. A bad locale is a form error first.
            visit("/admin/invoicing/companyprofile/")
            for field, value in ACME.items():
                page.fill(f"#id_{field}", value)
            page.fill("#id_locale", "xx_NOPE")
            page.set_input_files("#id_logo_upload", str(logo))
            page.click("input[name=_save]")
            expect(page.locator(".field-locale .errorlist")).to_contain_text("not a locale Babel knows")
            page.fill("#id_locale", "en_US")
            page.set_input_files("#id_logo_upload", str(logo))
            page.click("input[name=_save]")
            expect(page.locator("ul.messagelist li.success")).to_be_visible()
            visit("/admin/invoicing/companyprofile/1/change/")
            expect(page.locator(".field-logo_preview img")).to_be_visible()
            no_csp_violations()
            page.screenshot(path=str(screenshots / "doc-settings-company.png"), full_page=True)

            # Settings → Stripe: sandbox, the webhook URL to paste and the events to select.
            visit("/admin/invoicing/stripesettings/")
            expect(page.locator("#stripe-mode-value")).to_have_text("Sandbox")
            expect(page.locator("#stripe-webhook-url")).to_have_text(base + "/stripe/webhooks")
            expect(page.locator("#stripe-webhook")).to_contain_text("invoice.paid")
            expect(page.locator("#stripe-test-connection")).to_be_disabled()
            no_csp_violations()
            page.screenshot(path=str(screenshots / "doc-settings-stripe.png"), full_page=True)

            # The invoice: its printable page, then Download PDF.
            visit(f"/admin/invoicing/invoice/{invoice.pk}/change/")
            expect(page.locator("fieldset").first).to_contain_text("$73.69")
            visit(f"/admin/invoicing/invoice/{invoice.pk}/print/")
            expect(page.locator("h1")).to_have_text(f"Invoice {number}")
            expect(page.locator(".seller")).to_contain_text("San Francisco, CA 94105")
            expect(page.locator("table.lines")).to_contain_text("1,234,567 tokens × $0.00002")
            no_csp_violations()
            page.screenshot(path=str(screenshots / "doc-invoice-page.png"), full_page=True)
            visit(f"/admin/invoicing/invoice/{invoice.pk}/change/")
            with page.expect_download() as download_info:
                page.click("#download-pdf")
            download = download_info.value
            assert download.suggested_filename == f"invoice-{number}.pdf"
            pdf_bytes = Path(download.path()).read_bytes()
            assert not server_errors, server_errors
        finally:
            browser.close()

    assert pdf_bytes.startswith(b"%PDF-")
    text = " ".join(" ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf_bytes)).pages).split())
    for expected in (f"Invoice {number}", "Acme Billing Inc.", "San Francisco, CA 94105", "10115 Berlin",
                     "1,234,567 tokens × $0.00002", "$24.69", "Nov 1 – Nov 30, 2026", "Dec 31, 2026", "$73.69",
                     "IBAN: DE89 3704 0044 0532 0130 00", "Thank you for your business."):
        assert expected in text.replace("\u00a0", " "), expected
    render_first_page(pdf_bytes, screenshots / "doc-invoice-pdf.png")
    assert CompanyProfile.objects.get().logo_content_type == "image/png"
