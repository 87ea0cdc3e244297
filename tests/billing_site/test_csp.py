"""The Content-Security-Policy: on every response, strict for scripts, and every admin page lives within it.

The browser test (tests/e2e/test_seed_tutorial.py) checks that a real browser reports no violation; these tests
check the policy itself and walk the admin's pages for what the policy would refuse (inline scripts, event
handler attributes, ``javascript:`` links, ``<style>`` elements without the response's nonce).
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client

from common.models import JobRun
from invoicing.models import Invoice
from tests.billing_site import test_workplace

pytestmark = pytest.mark.django_db
world = test_workplace.world  # a plan, a customer with usage, a subscription, an issued invoice
login_as = test_workplace.login_as


def directives(response) -> dict[str, str]:
    policy = response["Content-Security-Policy"]
    return dict(part.strip().split(" ", 1) for part in policy.split(";"))


class InlineCode(HTMLParser):
    """What a strict policy refuses in a page: inline scripts, handler attributes, un-nonced styles."""

    def __init__(self, nonce: str | None) -> None:
        super().__init__()
        self.nonce = nonce
        self.refused: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.refused.append(f"<{tag} {name}=…>")
            if name in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:"):
                self.refused.append(f"<{tag} {name}={value}>")
        if tag == "script" and not values.get("src") and values.get("type") != "application/json":
            self.refused.append(f"inline <script id={values.get('id')}>")
        if tag == "style" and (self.nonce is None or values.get("nonce") != self.nonce):
            self.refused.append("<style> without the response's nonce")
        if tag == "a" and (values.get("href") or "").startswith("/admin/"):
            self.links.append(values["href"] or "")


def check_page(client: Client, url: str) -> tuple[list[str], list[str]]:
    """The page's refusals under its own policy; the admin links it shows (none for a page that is not 200)."""
    response = client.get(url)
    if response.status_code != 200:
        return [], []
    policy = directives(response)
    nonce = None
    if "'nonce-" in policy.get("style-src", ""):
        nonce = policy["style-src"].split("'nonce-")[1].split("'")[0]
    parser = InlineCode(nonce)
    parser.feed(response.content.decode())
    return [f"{url}: {r}" for r in parser.refused], parser.links


@pytest.mark.parametrize("url", ["/admin/login/", "/healthz", "/api/v1/meters", "/no/such/page", "/api/schema/"])
def test_every_response_carries_the_policy(client, url):
    response = client.get(url)
    policy = directives(response)
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval', no other host
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["form-action"] == "'self'"
    assert policy["style-src"].startswith("'self'") and "unsafe-inline" not in policy["style-src"]


def crawl(client: Client, start: str = "/admin/", limit: int = 120) -> list[str]:
    """Every admin page reachable from the dashboard in two clicks (change lists, add forms, the first object of
    each list, custom pages), minus logout and deletions."""
    refused: list[str] = []
    seen: set[str] = set()
    queue = [start]
    while queue and len(seen) < limit:
        url = queue.pop(0)
        path = url.split("#")[0]
        if path in seen or "logout" in path or "/delete/" in path or "?" in path or not path.endswith("/"):
            continue
        seen.add(path)
        page_refused, links = check_page(client, path)
        refused += page_refused
        if path == start or path.count("/") <= 4:  # the dashboard and the change lists: follow their links
            queue += links
    assert len(seen) > 20, seen
    return refused


def test_no_admin_page_needs_what_the_policy_refuses_superuser(client, world):
    client.force_login(User.objects.create_superuser("root", password="pw-123456"))
    assert crawl(client) == []


@pytest.mark.parametrize("role", ["Finance viewer", "Billing admin"])
def test_no_admin_page_needs_what_the_policy_refuses_roles(client, world, role):
    login_as(client, role)
    assert crawl(client) == []


def test_the_changelist_style_without_action_bars_carries_the_nonce(client, world, monkeypatch):
    """Django's change list adds an inline <style> when a model admin shows its actions neither on top nor at the
    bottom; the project's template gives it the nonce."""
    monkeypatch.setattr(admin.site._registry[JobRun], "actions_on_top", False)
    client.force_login(User.objects.create_superuser("root", password="pw-123456"))
    response = client.get("/admin/common/jobrun/")
    assert response.status_code == 200
    nonce = directives(response)["style-src"].split("'nonce-")[1].split("'")[0]
    assert f'<style nonce="{nonce}">' in response.content.decode()


def test_the_printable_invoice_styles_carry_the_nonce(client, world):
    client.force_login(User.objects.create_superuser("root", password="pw-123456"))
    invoice = Invoice.objects.filter(status="issued").first()
    assert invoice is not None
    response = client.get(f"/admin/invoicing/invoice/{invoice.pk}/print/")
    assert response.status_code == 200
    nonce = directives(response)["style-src"].split("'nonce-")[1].split("'")[0]
    parser = InlineCode(nonce)
    parser.feed(response.content.decode())
    assert parser.refused == []
    assert f'<style nonce="{nonce}">' in response.content.decode()


def test_the_token_page_uses_a_script_file_not_handlers(client):
    client.force_login(User.objects.create_superuser("root", password="pw-123456"))
    response = client.post("/admin/metering/apitoken/add/", {"name": "kong", "scopes": ["ingest"]})
    page = response.content.decode()
    assert "billing/token.js" in page
    assert 'data-copy-from="api-token"' in page
    parser = InlineCode(None)
    parser.feed(page)
    assert [r for r in parser.refused if "style" not in r] == []
