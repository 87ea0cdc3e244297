"""The invoice and credit note a customer receives: HTML page and PDF, the same document; the PDF's text is compared
with a checked-in reference (``tests/invoicing/references/``; regenerate with ``UPDATE_REFERENCES=1``)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from django.test import Client
from pypdf import PdfReader

from invoicing.models import CreditNote, Invoice
from invoicing.selectors.documents import credit_note_document, document_pdf, invoice_document
from invoicing.services.close import close_cycles
from invoicing.services.settings import company_profile_update
from tests.builders import cancelled_in_december
from tests.builders.api import bearer
from tests.builders.invoicing import AFTER_NOV, subscribe_with_november_usage, the_invoice
from tests.builders.settings import ACME, tiny_png

REFERENCES = Path(__file__).resolve().parent / "references"
PROBLEM = "application/problem+json"


def pdf_text(content: bytes) -> str:
    """The PDF's text, one line per text line, no-break spaces as spaces, no trailing blanks."""
    assert content.startswith(b"%PDF-"), content[:20]
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)
    return "\n".join(line.rstrip() for line in text.replace("\u00a0", " ").splitlines()).strip() + "\n"


def matches_reference(text: str, name: str) -> None:
    path = REFERENCES / name
    if os.environ.get("UPDATE_REFERENCES"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} differs:\n{text}"


@pytest.fixture
def company(db):
    return company_profile_update(values=ACME, logo=(tiny_png(), "image/png"))


@pytest.fixture
def invoice(company) -> Invoice:
    subscribe_with_november_usage()
    close_cycles(now=AFTER_NOV)
    return the_invoice(1)


@pytest.fixture
def credit_note(company) -> CreditNote:
    return cancelled_in_december()


def test_invoice_pdf_text_is_the_reference(invoice):
    text = pdf_text(document_pdf(invoice_document(invoice)))
    matches_reference(text, "invoice_INV-2026-000002.txt")
    # The points of the issue, spelled out (the reference holds them too):
    for expected in ("1,234,567 tokens × $0.00002", "$24.69", "Nov 1 – Nov 30, 2026", "San Francisco, CA 94105",
                     "10115 Berlin", "Tax ID US 12-3456789", "IBAN: DE89 3704 0044 0532 0130 00", "Due Dec 31, 2026",
                     "Total due $73.69", "Thank you for your business."):
        assert expected in text.replace("DUE Dec", "Due Dec").replace("TOTAL DUE", "Total due"), expected


def test_credit_note_pdf_text_is_the_reference(credit_note):
    text = pdf_text(document_pdf(credit_note_document(credit_note)))
    matches_reference(text, "credit_note_CN-2026-000001.txt")
    assert "Credit to" in text or "CREDIT TO" in text
    assert "$15.48" in text and credit_note.invoice.number in text


def test_locale_changes_every_number_and_date(invoice):
    company_profile_update(values={"locale": "de_DE"})
    text = pdf_text(document_pdf(invoice_document(invoice)))
    assert "1.234.567 tokens × 0,00002 $" in text and "24,69 $" in text and "1. Nov. – 30. Nov. 2026" in text
    assert "Vereinigte Staaten" in text and "Deutschland" in text


def test_blank_company_still_makes_a_document(db):
    subscribe_with_november_usage()
    close_cycles(now=AFTER_NOV)
    text = pdf_text(document_pdf(invoice_document(the_invoice(1))))
    assert "Your company (Settings → Company)" in text and "$73.69" in text


def test_hostile_text_is_printed_not_interpreted(invoice):
    company_profile_update(values={"legal_name": '<img src="http://example.invalid/x.png">Evil & Co </style>',
                                   "invoice_footer": "<script>alert(1)</script>"})
    text = " ".join(pdf_text(document_pdf(invoice_document(invoice))).split())
    assert '<img src="http://example.invalid/x.png">Evil & Co </style>' in text
    assert "<script>alert(1)</script>" in text


# --- the admin -------------------------------------------------------------------------------------------------

def test_admin_invoice_page_offers_the_pdf_and_the_printable_page_matches(admin_client, invoice):
    page = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/change/").content.decode()
    assert f'href="/admin/invoicing/invoice/{invoice.pk}/pdf/"' in page and "Download PDF" in page
    assert "$73.69" in page  # the admin's totals use the same formatting
    response = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/pdf/")
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == 'attachment; filename="invoice-INV-2026-000002.pdf"'
    printable = admin_client.get(f"/admin/invoicing/invoice/{invoice.pk}/print/").content.decode()
    for expected in ("Acme Billing Inc.", "San Francisco, CA 94105", "1,234,567 tokens × $0.00002", "$73.69",
                     "Nov 1 – Nov 30, 2026", 'src="data:image/png;base64,'):
        assert expected in printable, expected
    assert pdf_text(response.content) == pdf_text(document_pdf(invoice_document(invoice)))


def test_admin_credit_note_pdf(admin_client, credit_note):
    page = admin_client.get(f"/admin/invoicing/creditnote/{credit_note.pk}/change/").content.decode()
    assert f'href="/admin/invoicing/creditnote/{credit_note.pk}/pdf/"' in page
    response = admin_client.get(f"/admin/invoicing/creditnote/{credit_note.pk}/pdf/")
    assert response.status_code == 200 and response.content.startswith(b"%PDF-")


def test_admin_pdf_of_an_unknown_invoice_is_404(admin_client, db):
    assert admin_client.get("/admin/invoicing/invoice/999999/pdf/").status_code == 404
    assert admin_client.get("/admin/invoicing/creditnote/999999/pdf/").status_code == 404


def test_admin_pdf_needs_view_permission(invoice, django_user_model):
    user = django_user_model.objects.create_user("nobody", password="pw-123456", is_staff=True)
    client = Client()
    client.force_login(user)
    assert client.get(f"/admin/invoicing/invoice/{invoice.pk}/pdf/").status_code == 403


# --- the API ---------------------------------------------------------------------------------------------------

def test_api_invoice_pdf_by_number_and_id(invoice, read_token):
    client = Client()
    for ref in (invoice.number, str(invoice.pk)):
        response = client.get(f"/api/v1/invoices/{ref}/pdf", **bearer(read_token))
        assert response.status_code == 200, response.content[:300]
        assert response["Content-Type"] == "application/pdf"
        assert "1,234,567 tokens × $0.00002" in pdf_text(response.content)
    accepted = client.get(f"/api/v1/invoices/{invoice.number}/pdf", HTTP_ACCEPT="application/pdf",
                          **bearer(read_token))
    assert accepted.status_code == 200


def test_api_credit_note_pdf(credit_note, read_token):
    response = Client().get(f"/api/v1/credit-notes/{credit_note.number}/pdf", **bearer(read_token))
    assert response.status_code == 200 and "$15.48" in pdf_text(response.content)


@pytest.mark.parametrize("path", ["/api/v1/invoices/INV-1999-000001/pdf", "/api/v1/invoices/999999/pdf",
                                  "/api/v1/credit-notes/CN-1999-000001/pdf", "/api/v1/invoices/%20/pdf"])
def test_api_unknown_document_is_404_problem(db, read_token, path):
    response = Client().get(path, **bearer(read_token))
    assert response.status_code == 404 and response["Content-Type"] == PROBLEM
    assert response.json()["status"] == 404


@pytest.mark.parametrize("path", ["/api/v1/invoices/INV%00/pdf", "/api/v1/credit-notes/%00/pdf"])
def test_api_nul_in_the_path_is_a_4xx_problem(db, read_token, path):
    response = Client().get(path, **bearer(read_token))
    assert 400 <= response.status_code < 500 and response["Content-Type"] == PROBLEM


def test_api_pdf_refuses_ingest_tokens_and_anonymous(invoice, ingest_token):
    client = Client()
    refused = client.get(f"/api/v1/invoices/{invoice.number}/pdf", **bearer(ingest_token))
    assert refused.status_code == 403 and refused["Content-Type"] == PROBLEM
    anonymous = client.get(f"/api/v1/invoices/{invoice.number}/pdf")
    assert anonymous.status_code == 401 and anonymous["Content-Type"] == PROBLEM
    wrong = client.get(f"/api/v1/invoices/{invoice.number}/pdf", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401


def test_api_pdf_for_a_staff_session_needs_view_invoice(invoice, django_user_model):
    from django.contrib.auth.models import Permission

    user = django_user_model.objects.create_user("clerk", password="pw-123456", is_staff=True)
    client = Client()
    client.force_login(user)
    refused = client.get(f"/api/v1/invoices/{invoice.number}/pdf")
    assert refused.status_code == 403 and "invoicing.view_invoice" in refused.json()["detail"]
    user.user_permissions.add(Permission.objects.get(codename="view_invoice"))
    client.force_login(django_user_model.objects.get(pk=user.pk))
    assert client.get(f"/api/v1/invoices/{invoice.number}/pdf").status_code == 200


def test_api_pdf_other_methods(db, read_token):
    client = Client()
    for method in ("post", "put", "delete", "patch"):
        response = getattr(client, method)("/api/v1/invoices/1/pdf", **bearer(read_token))
        assert response.status_code == 405 and response["Content-Type"] == PROBLEM
    options = client.options("/api/v1/credit-notes/1/pdf", **bearer(read_token))
    assert options.status_code == 200 and options["Content-Type"] == "application/json"
    assert options.json()["renders"] == ["application/pdf"]


def test_api_pdf_asked_as_json_is_406_problem(invoice, read_token):
    response = Client().get(f"/api/v1/invoices/{invoice.number}/pdf", HTTP_ACCEPT="application/json",
                            **bearer(read_token))
    assert response.status_code == 406 and response["Content-Type"] == PROBLEM


def test_api_pdf_without_pango_is_503_problem(invoice, read_token, monkeypatch):
    from invoicing.selectors import documents

    def unavailable(document):
        raise documents.DocumentUnavailable("PDF rendering needs pango")

    monkeypatch.setattr("invoicing.api.invoices.document_pdf", unavailable)
    response = Client().get(f"/api/v1/invoices/{invoice.number}/pdf", **bearer(read_token))
    assert response.status_code == 503 and response["Content-Type"] == PROBLEM


def test_schema_declares_the_pdf_endpoints(admin_client, db):
    schema = admin_client.get("/api/schema/?format=json").json()
    for path, operation in (("/api/v1/invoices/{invoice_id}/pdf", "getInvoicePdf"),
                            ("/api/v1/credit-notes/{credit_note_id}/pdf", "getCreditNotePdf")):
        get = schema["paths"][path]["get"]
        assert get["operationId"] == operation
        assert get["responses"]["200"]["content"] == {
            "application/pdf": {"schema": {"type": "string", "format": "binary"}}}
        for code in ("401", "403", "404"):
            assert list(get["responses"][code]["content"]) == [PROBLEM]


def test_yen_invoice_with_a_graduated_price_shows_its_tiers(company):
    from customers.services.subscriptions import subscription_create
    from tests.builders import graduated_out, ingest, iso, kong_air, llm_event, token_plan, utc

    company_profile_update(values={"locale": "en_US"})
    customer = kong_air(currency="JPY", address_line1="1-1 Chiyoda", city="Chiyoda-ku", state="Tokyo",
                        postal_code="100-0001", country="JP")
    plan = token_plan(currency="JPY", unit_amount="0.5", extra=[graduated_out()])
    subscription_create(customer=customer, plan=plan, start=utc(2026, 11, 1))
    ingest([llm_event(tokens=1_500, time=iso(utc(2026, 11, 5))),
            llm_event(tokens=2_001_000, kind="response", time=iso(utc(2026, 11, 6)))])
    close_cycles(now=AFTER_NOV)
    text = pdf_text(document_pdf(invoice_document(the_invoice(1))))
    flat = " ".join(text.split())
    assert "1,500 tokens × ¥0.5" in flat and "¥750" in flat
    # 2,001,000 output tokens, the first 1,000 free: 1,000,000 in each tier (10 + 8 + the second tier's flat 2)
    assert "2,000,000 tokens tier 1 (up to 1,000,000): 1,000,000 × ¥0.00001" in flat, flat
    assert "tier 2: 1,000,000 × ¥0.000008 + ¥2" in flat, flat
    assert "Nov 1 – Nov 30, 2026 ¥20" in flat and "Total due ¥770" in flat
    assert "1-1 Chiyoda Chiyoda-ku, Tokyo 100-0001 Japan" in flat
