"""The seed tutorial, end to end in a real browser, by a Billing admin in the Django admin only.

Meter from the Kong preset → feature ai-token → plan Token (published) → customer Kong Air including
consumer kong-air → subscription (review, confirm) → an ingest token from "Connect a gateway" → Kong-shaped
events posted to the ingest API → Preview invoice → cancel now → close due cycles → issue the draft.

Screenshots of the key pages go to docs/screenshots/ (shown in the README) with UPDATE_SCREENSHOTS=1. Chromium is
Debian's /usr/bin/chromium (CI installs it); the test is skipped without it.

Playwright's sync API keeps an event loop in this thread, where Django refuses ORM calls, so the database is
touched only before the browser starts and after it stops; everything in between goes through the browser
(or, for the gateway's events, through HTTP).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.utils import timezone

from billing_site.roles import role_permissions

if TYPE_CHECKING:
    from playwright.sync_api import ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
# Committed screenshots are refreshed with UPDATE_SCREENSHOTS=1; otherwise none is taken, so a test run never dirties
# the working tree (tokens, dates and ports differ on every run) nor spends the browser's time on them.
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT: ViewportSize = {"width": 1280, "height": 900}
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "tutorial-pw-123456"
# Every page reports what its Content-Security-Policy blocks, as the browser sees it (before any page script runs).
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__cspViolations.push(
  `${e.violatedDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile || location.href}:${e.lineNumber}`));
"""

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (CI installs it)"),
]


def billing_admin() -> User:
    """A staff user in the "Billing admin" group, not a superuser. The group comes from a migration; a
    transactional test before this one may have flushed it, so it is recreated from the same role table."""
    group, _ = Group.objects.get_or_create(name="Billing admin")
    if not group.permissions.exists():
        wanted = role_permissions()["Billing admin"]
        group.permissions.set(
            [Permission.objects.get(content_type__app_label=app, codename=codename) for app, codename in wanted]
        )
    user = User.objects.create_user("finance", email="finance@example.com", password=PASSWORD, is_staff=True)
    user.groups.add(group)
    return user


def post_gateway_events(base_url: str, token: str, events: list[dict]) -> int:
    request = urllib.request.Request(
        base_url + "/api/v3/openmeter/events",
        data=json.dumps(events).encode(),
        method="POST",
        headers={"Content-Type": "application/cloudevents-batch+json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status


LIST_PAGES = [
    "/admin/",  # the dashboard's cards and charts
    "/admin/metering/event/", "/admin/metering/meter/", "/admin/metering/subjectactivity/",
    "/admin/metering/eventtypeactivity/", "/admin/catalog/feature/", "/admin/catalog/plan/",
    "/admin/customers/customer/", "/admin/customers/subscription/", "/admin/invoicing/invoice/",
    "/admin/invoicing/creditnote/", "/admin/customers/unbilledsubject/", "/admin/customers/kongconsumer/",
    "/admin/metering/apitoken/", "/admin/invoicing/stripewebhookevent/", "/admin/common/jobrun/",
    "/admin/invoicing/cycleclose/",
]


def start_a_plan_with_an_ai_token_card(page, expect, visit, plan: tuple[str, str], rate_card: tuple[str, str]) -> str:
    """The plan add page: the plan's key and name, USD, monthly; one rate card added inline with its key and name,
    for feature ai-token. Returns the prefix of the rate card's field ids."""
    visit("/admin/catalog/plan/add/")
    page.fill("#id_key", plan[0])
    page.fill("#id_name", plan[1])
    page.fill("#id_currency", "USD")
    page.select_option("#id_billing_cadence", "P1M")
    page.locator("#rate_cards-group .add-row a").click()
    card = "#id_rate_cards-0-"
    expect(page.locator(f"{card}key")).to_be_visible()
    page.fill(f"{card}key", rate_card[0])
    page.fill(f"{card}name", rate_card[1])
    page.select_option(f"{card}feature", label="ai-token")
    return card


def build_a_graduated_plan(page, expect, visit, saved_ok, shot) -> None:
    """Plan "Tokens, tiered": one graduated rate card for ai-token (first 1,000 tokens at 0.01, then 0.005), its
    tier table filled on the plan page (rows added and one removed), checked again on the rate card's own page
    (a row added and removed there too), then published."""
    card = start_a_plan_with_an_ai_token_card(page, expect, visit, ("token-tiers", "Tokens, tiered"),
                                              ("ai-token-tiers", "AI tokens, tiered"))
    page.select_option(f"{card}price_type", "graduated")
    inline = page.locator("#rate_cards-0")
    # Graduated: a tier table, no amount, no unit amount, no package size, no payment term.
    table = inline.locator(".form-row.field-tiers")
    expect(table).to_be_visible()
    for hidden in ("amount", "unit_amount", "quantity_per_package", "payment_term"):
        expect(inline.locator(f".form-row.field-{hidden}")).to_be_hidden()
    rows = table.locator("tr.key-value-row")
    expect(rows).to_have_count(1)
    table.locator(".key-value-add").click()
    table.locator(".key-value-add").click()
    expect(rows).to_have_count(3)
    rows.nth(2).locator(".key-value-remove").click()  # one row too many: removed
    expect(rows).to_have_count(2)
    rows.nth(0).locator("input[name$=tiers-up_to]").fill("1000")
    rows.nth(0).locator("input[name$=tiers-unit_amount]").fill("0.01")
    rows.nth(1).locator("input[name$=tiers-unit_amount]").fill("0.005")
    preview = inline.locator(".field-price_preview .readonly")
    expect(preview).to_contain_text("graduated: first 1,000 tokens at USD 0.01, then USD 0.005 per token above 1,000")
    # Free quantity and spend limits are folded under "More".
    expect(page.locator(f"{card}free_quantity")).to_be_hidden()
    inline.locator("details summary", has_text="More").click()
    expect(page.locator(f"{card}free_quantity")).to_be_visible()
    page.fill(f"{card}minimum_spend", "5")
    # Entitlement fields only for the chosen type: a metered limit shows its limit, not a JSON config.
    page.select_option(f"{card}entitlement_type", "metered")
    expect(page.locator(f"{card}entitlement_limit")).to_be_visible()
    expect(inline.locator(".form-row.field-entitlement_config")).to_be_hidden()
    page.fill(f"{card}entitlement_limit", "1000000")
    expect(preview).to_contain_text("(minimum USD 5.00 per month)")
    shot("10-rate-card-graduated.png")
    page.click("input[name=_continue]")
    saved_ok()
    expect(page.locator(".field-problems")).to_contain_text("Ready to publish.")
    plan_url = page.url

    # The rate card's own page has the same tiers in its table; a row added there and removed again.
    page.locator("#rate_cards-0 a.inlinechangelink").click()
    tiers = page.locator("#tiers-group")
    expect(tiers).to_be_visible()
    expect(page.locator("#id_tiers-0-up_to")).to_have_value("1000")
    expect(page.locator("#id_tiers-1-unit_amount")).to_have_value("0.005")
    tiers.locator(".add-row a").click()
    expect(tiers.locator("tr.form-row.dynamic-tiers")).to_have_count(3)
    tiers.locator("tr.form-row.dynamic-tiers").nth(2).locator("a.inline-deletelink").click()
    expect(tiers.locator("tr.form-row.dynamic-tiers")).to_have_count(2)
    own_preview = page.locator(".field-price_preview .readonly").first
    expect(own_preview).to_contain_text("graduated: first 1,000 tokens at USD 0.01")
    shot("11-tier-table.png")
    page.click("input[name=_continue]")
    saved_ok()

    page.goto(plan_url)
    page.click("#publish-plan")
    page.click("#confirm-publish")
    saved_ok()
    expect(page.locator(".field-pricing")).to_contain_text("graduated: first 1,000 tokens at USD 0.01")
    expect(page.locator(".field-pricing")).to_contain_text("minimum USD 5.00 per month")


@pytest.mark.django_db(transaction=True)  # the live server thread must see what each request commits
def test_a_billing_admin_runs_the_seed_tutorial_in_the_admin(live_server, settings, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from invoicing.management.commands.simulate_gateway import gateway_events

    settings.VAR_DIR = tmp_path
    settings.INVOICE_GRACE_PERIOD_SECONDS = 0  # a canceled period is due at once
    settings.INVOICE_DRAFT_REVIEW_HOURS = 1  # the close leaves a draft for finance to review and issue
    settings.STRIPE_API_KEY = ""  # sandbox: nothing leaves the machine
    user = billing_admin()
    assert not user.is_superuser
    update_screenshots = bool(os.environ.get("UPDATE_SCREENSHOTS"))
    month_start = timezone.now().astimezone(dt.UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    base = live_server.url
    facts: dict[str, str] = {}

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            context = browser.new_context(viewport=VIEWPORT)
            context.add_init_script(RECORD_CSP_VIOLATIONS)
            page = context.new_page()
            page.set_default_timeout(15_000)
            expect.set_options(timeout=15_000)
            server_errors: list[str] = []
            csp_violations: list[str] = []

            def record_csp_console(message) -> None:
                if "Content Security Policy" in message.text:
                    csp_violations.append(f"{page.url}: {message.text}")

            def collect_csp_violations() -> None:
                """The current page's violations, before it is left (each page starts a fresh list)."""
                try:
                    found = page.evaluate("window.__cspViolations || []")
                except Exception:  # noqa: BLE001 - the page is navigating away; its console still reported them
                    return
                csp_violations.extend(f"{page.url}: {v}" for v in found)

            page.on("console", record_csp_console)

            def record_server_error(response) -> None:
                if response.status >= 500:
                    server_errors.append(f"{response.request.method} {response.url} → {response.status}")

            page.on("response", record_server_error)

            def visit(url: str) -> None:
                collect_csp_violations()
                response = page.goto(url if url.startswith("http") else base + url)
                answered = response.status if response is not None else "nothing"
                assert response is not None and response.status < 400, f"GET {url} answered {answered}"

            def no_server_error() -> None:
                assert not server_errors, f"the server failed: {server_errors}"

            def shot(name: str, *, full_page: bool = True) -> None:
                """A screenshot for the docs, taken when they are refreshed (UPDATE_SCREENSHOTS=1): it checks
                nothing, and a full-page PNG of each key page costs the browser more than the rest of a step."""
                if update_screenshots:
                    page.screenshot(path=str(DOCS_SCREENSHOTS / name), full_page=full_page)

            def readonly(field: str):
                """The read-only value of a field, alone on its line or beside others (.fieldBox)."""
                return page.locator(f".field-{field}").last.locator(".readonly")

            def saved_ok() -> None:
                no_server_error()
                expect(page.locator("ul.messagelist li.success")).to_be_visible()

            # Log in through the admin login page; the dashboard is the home page.
            visit("/admin/")
            page.fill("#id_username", "finance")
            page.fill("#id_password", PASSWORD)
            page.click("input[type=submit]")
            expect(page.locator("#dashboard")).to_be_visible()
            expect(page.locator("#content h1")).to_have_text("Dashboard")

            # 1. Meter llm_tokens from the Kong preset: one click on the meter list.
            visit("/admin/metering/meter/")
            expect(page.locator("#kong-presets")).to_be_visible()
            shot("02-meter-presets.png")
            page.click("input[name=add-preset-llm_tokens]")
            saved_ok()
            expect(page.locator("ul.messagelist")).to_contain_text("Meter llm_tokens added from the Kong preset")

            # 2. Feature ai-token: the meter (picked by its name) filtered to provider=openai, type=request, typed
            #    into key/value rows (a row added with "Add a row", an extra one removed again).
            visit("/admin/catalog/feature/add/")
            page.fill("#id_key", "ai-token")
            page.fill("#id_name", "ai-token")
            page.select_option("#id_meter", label="AI Gateway Tokens (llm_tokens)")
            filter_keys = page.locator("input[name=meter_group_by_filters-key]")
            filter_values = page.locator("input[name=meter_group_by_filters-value]")
            expect(filter_keys).to_have_count(1)
            filter_keys.nth(0).fill("provider")
            filter_values.nth(0).fill("openai")
            page.click(".field-meter_group_by_filters .key-value-add")
            page.click(".field-meter_group_by_filters .key-value-add")
            expect(filter_keys).to_have_count(3)
            page.locator(".field-meter_group_by_filters .key-value-remove").nth(2).click()
            expect(filter_keys).to_have_count(2)
            filter_keys.nth(1).fill("type")
            filter_values.nth(1).fill("request")
            shot("09-feature-filters.png")
            page.click("input[name=_save]")
            saved_ok()
            filters = page.locator("#result_list tr", has_text="ai-token").locator("td.field-filters")
            expect(filters).to_contain_text("provider = openai")  # key order differs: jsonb sorts keys
            expect(filters).to_contain_text("type = request")

            # 3. Plan Token (USD, monthly): a usage-based rate card for ai-token at 1 per token with a boolean
            #    entitlement, then Publish with its confirmation page.
            card = start_a_plan_with_an_ai_token_card(page, expect, visit, ("token", "Token"), ("ai-token", "ai-token"))
            page.select_option(f"{card}price_type", "unit")
            # The form fits the price: a unit price shows its unit amount, not a flat amount or a tier table.
            expect(page.locator("#rate_cards-0 .form-row.field-unit_amount")).to_be_visible()
            expect(page.locator("#rate_cards-0 .form-row.field-amount")).to_be_hidden()
            expect(page.locator("#rate_cards-0 .form-row.field-payment_term")).to_be_hidden()
            expect(page.locator("#rate_cards-0 .form-row.field-entitlement_config")).to_be_hidden()
            # Decimals are text boxes: a decimal comma is shown as a mistake at once (live preview), never saved
            # as another number; the preview reads the price as a sentence.
            expect(page.locator(f"{card}unit_amount")).to_have_attribute("type", "text")
            preview = page.locator("#rate_cards-0 .field-price_preview .readonly")
            page.fill(f"{card}unit_amount", "0,00002")
            expect(preview).to_contain_text("Use a dot as the decimal separator (0.00002)")
            page.fill(f"{card}unit_amount", "1")
            expect(preview).to_have_text("USD 1.00 per token")
            page.select_option(f"{card}entitlement_type", "boolean")
            page.click("input[name=_continue]")
            saved_ok()
            expect(page.locator(".field-problems")).to_contain_text("Ready to publish.")
            page.click("#publish-plan")
            expect(page.locator("#content h1").first).to_contain_text("Publish Token v1 (draft)?")
            page.click("#confirm-publish")
            saved_ok()
            expect(readonly("status")).to_have_text("Published")
            expect(page.locator(".field-pricing")).to_contain_text("ai-token")
            expect(page.locator(".field-pricing")).to_contain_text("USD 1.00 per token")
            shot("03-plan.png")

            # The published rate card's "What would this cost?" box computes without saving (no 403).
            plan_url = page.url
            page.locator(".field-pricing a", has_text="ai-token").click()
            page.fill("#id_quantity", "1500")
            page.click("#cost-calculate")
            no_server_error()
            expect(page.locator("#cost-total")).to_have_text("1500.00")
            assert "quantity=1500" in page.url
            visit(plan_url)

            # 4. Customer Kong Air, including the usage of Kong consumer kong-air ("Include usage from").
            visit("/admin/customers/customer/add/")
            page.fill("#id_key", "kong-air")
            page.fill("#id_name", "Kong Air")
            page.fill("#id_email", "billing@kong-air.example")
            page.fill("#id_currency", "USD")
            page.fill("#id_attributions-0-subject", "kong-air")
            page.click("input[name=_continue]")
            saved_ok()
            customer_url = page.url
            expect(page.locator("#id_attributions-0-subject")).to_have_value("kong-air")

            # 5. Subscription to Token from the 1st of this month, calendar anchor: form → Review → Confirm.
            page.get_by_role("link", name="Add subscription").click()
            expect(page.locator("#id_customer option:checked")).to_have_text("Kong Air (kong-air)")
            page.select_option("#id_plan", label="Token v1 (published)")
            # The admin's own date and time pickers (a calendar and a clock beside each box).
            expect(page.locator(".field-start .datetimeshortcuts").first).to_be_visible()
            page.fill("#id_start_0", month_start.strftime("%Y-%m-%d"))
            page.fill("#id_start_1", "00:00:00")
            page.check("input[name=anchor][value=calendar]")
            page.click("#review-subscription")
            expect(page.locator("#confirm-subscription")).to_be_visible()
            first_period = page.locator("#subscription-form table tr").nth(1)
            expect(first_period).to_contain_text(month_start.strftime("%Y-%m-%d 00:00"))
            shot("05-subscription-review.png")
            page.click("#confirm-subscription")
            saved_ok()
            expect(page.locator("ul.messagelist")).to_contain_text("Subscribed: kong-air on token v1")
            subscription_url = page.url

            # 6. An ingest token from "Connect a gateway" (shown once, on the page), then the gateway's events:
            #    3 AI calls = 3 × (api_request + llm input 24 tokens + llm output 9 tokens), subject kong-air.
            visit("/admin/metering/apitoken/connect/")
            page.fill("#id_name", "kong-gateway")
            page.click("#connect-gateway")
            token = page.locator("#api-token").input_value()
            assert len(token) > 20
            expect(page.locator("#deck-config")).to_contain_text("/api/v3/openmeter/events")
            shot("08-connect-gateway.png")
            events = gateway_events("kong-air", 3)
            assert len(events) == 9
            assert post_gateway_events(base, token, events) == 202

            # 7. Preview invoice on the customer page: ai-token, 72 input tokens × 1 USD = 72.00.
            visit(customer_url)
            page.click("#preview-invoice")
            expect(page.locator("#preview-lines")).to_be_visible()
            expect(page.locator("tr.line-ai-token td.quantity")).to_have_text("72")
            expect(page.locator("tr.line-ai-token td.amount")).to_have_text("72.00")
            expect(page.locator("#preview-total")).to_have_text("72.00")
            shot("06-preview-invoice.png")
            visit(customer_url)
            expect(page.locator("#customer-preview")).to_contain_text("72.00")
            expect(page.locator("svg[aria-label='usage chart']").first).to_be_visible()  # under the CSP too
            shot("04-customer.png")

            # 8. A month cannot pass in a test: cancel the subscription now (subscription → Cancel → Now).
            visit(subscription_url)
            page.locator(".object-tools").get_by_role("link", name="Cancel", exact=True).click()
            page.check("input[name=when][value=now]")
            page.click("#confirm-cancel")
            saved_ok()
            expect(page.locator("ul.messagelist")).to_contain_text("canceled (now)")

            # Invoices → Close due cycles now → confirm: the job runs (eagerly) and its page shows the result.
            visit("/admin/invoicing/invoice/")
            page.get_by_role("link", name="Close due cycles now").click()
            page.click("#confirm-close")
            expect(readonly("status")).to_have_text("Succeeded")
            expect(readonly("message")).to_contain_text("1 held for review")

            # The draft held for review: the ai-token usage line of 72 tokens; Issue → confirm.
            visit("/admin/invoicing/invoice/?status__exact=draft")
            rows = page.locator("#result_list tbody tr")
            expect(rows).to_have_count(1)
            expect(rows.first).to_contain_text("Kong Air")
            rows.first.locator("th a, td a").first.click()
            line = page.locator("#lines-group tbody tr", has_text="ai-token")
            expect(line.locator("td.field-quantity_shown")).to_have_text("72")
            expect(line.locator("td.field-amount_shown")).to_have_text("$72.00")
            page.click("#invoice-issue")
            page.click("#confirm-issue")
            saved_ok()
            expect(readonly("status")).to_have_text("Issued")
            number = readonly("number").inner_text().strip()
            assert re.fullmatch(r"INV-\d{4}-\d{6}", number), number
            expect(page.locator("ul.messagelist")).to_contain_text(f"Issue: {number} — done.")
            shot("07-invoice-issued.png")
            facts["number"] = number

            # Meters → Rebuild usage (a confirmed job, run eagerly here as beat's aggregator would): the daily
            # rollups behind the dashboard's usage chart.
            visit("/admin/metering/meter/")
            page.locator("#result_list tr", has_text="llm_tokens").locator("input.action-select").check()
            page.select_option("select[name=action]", "rebuild_usage")
            page.click("button[name=index], input[name=index]")
            page.click("#confirm-rebuild")
            no_server_error()

            # Back on the dashboard: this month's billing.
            visit("/admin/")
            expect(page.locator("#card-billed-this-month")).to_contain_text("$72.00")
            expect(page.locator("#card-invoices")).to_contain_text("Issued: 1")
            expect(page.locator("#chart-billed-usd svg")).to_be_visible()
            expect(page.locator("#card-top-customers")).to_contain_text("Kong Air")
            expect(page.locator("#card-top-customers")).to_contain_text("$72.00")
            expect(page.locator(".usage-chart svg").first).to_be_visible()
            expect(page.locator(".usage-chart").first).to_contain_text("AI Gateway Tokens: tokens per day")
            shot("01-dashboard.png")
            # The menu of a Billing admin: no scheduler internals (those are under Operations, for superusers).
            expect(page.locator("#content-related, #nav-sidebar, #content").first).not_to_contain_text("Crontabs")

            # A second plan from scratch: graduated tiers through the new forms.
            build_a_graduated_plan(page, expect, visit, saved_ok, shot)

            # No list overflows at 1280 px: ids and numbers stay on one line, long text is cut.
            for url in LIST_PAGES:
                visit(url)
                width = page.evaluate("document.scrollingElement.scrollWidth")
                assert width <= VIEWPORT["width"], f"{url} is {width} px wide at {VIEWPORT['width']} px"
            no_server_error()

            # The API docs (Swagger UI) for a staff session: the schema loads and the operations are listed.
            visit("/api/docs/")
            expect(page.locator("#swagger-ui .info .title")).to_contain_text("Billing back office API")
            expect(page.locator("#swagger-ui .opblock-summary-path", has_text="/api/v1/meters").first).to_be_visible()
            collect_csp_violations()
            no_server_error()
            assert not csp_violations, "Content-Security-Policy violations:\n" + "\n".join(csp_violations)
        finally:
            browser.close()

    # The browser is gone: check the stored result too.
    from invoicing.models import CycleClose, Invoice
    from invoicing.services.close import issue_reviewed_drafts

    invoice = Invoice.objects.get(number=facts["number"])
    assert invoice.status == Invoice.Status.ISSUED
    assert invoice.customer.key == "kong-air"
    assert invoice.total == 7200  # minor units: 72.00 USD
    assert [(line.rate_card_key, line.quantity) for line in invoice.lines.all()] == [("ai-token", 72)]
    # The opening cycle (0) had nothing to bill (no in-advance fee), so it made no invoice and took no number:
    # the usage invoice is the first of its year.
    assert Invoice.objects.count() == 1
    assert invoice.issued_at is not None
    assert invoice.number == f"INV-{invoice.issued_at.year}-000001"
    # Issued by hand during its review time, the cycle's close row moves to "issued" at once; the beat job that
    # issues reviewed drafts later has nothing left to do (no second number).
    assert dict(CycleClose.objects.values_list("cycle", "state")) == {0: "empty", 1: "issued"}
    assert issue_reviewed_drafts(now=timezone.now() + dt.timedelta(hours=2)) == 0
    assert dict(CycleClose.objects.values_list("cycle", "state")) == {0: "empty", 1: "issued"}
    invoice.refresh_from_db()
    assert (invoice.number, invoice.status) == (facts["number"], Invoice.Status.ISSUED)
